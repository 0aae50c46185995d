"""`segwatch users …` and `segwatch tokens …`: thin over daemon/auth/service.py. Each
acts as the holder of SEGWATCH_TOKEN (an admin), except the first admin's bootstrap on
a store without users."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from daemon.cli.common import JsonOpt, VerboseOpt, cli_client, emit, out, setup, typer_app
from daemon.errors import InputError

users_app = typer_app(help="Users and their roles (admin).", no_args_is_help=True)
tokens_app = typer_app(help="API tokens (admin).", no_args_is_help=True)

RolesOpt = Annotated[list[str], typer.Option(
    "--role", help="viewer, auditor, maker, checker, feeder or admin (repeatable).")]
PasswordStdin = Annotated[bool, typer.Option(
    "--password-stdin", help="Read the password from the first line of standard input.")]


def _read_password() -> str:
    line = sys.stdin.readline(2048)
    password = line.rstrip("\r\n")
    if not password:
        raise InputError("--password-stdin: no password on standard input")
    return password


@users_app.command("add")
def users_add(ctx: typer.Context, name: Annotated[str, typer.Argument(help="User name.")],
              roles: RolesOpt, password_stdin: PasswordStdin = False,
              as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Add a user (admin). On a store without users, the first admin needs no token."""
    g = setup(ctx, verbose)
    service = g.service(create=True)
    password = _read_password() if password_stdin else None
    actor = service.identity.add_user(g.principal(service), name, roles, password)
    if as_json:
        emit({"user": name, "roles": sorted(roles), "added_by": actor.name})
    else:
        out.print(f"user {name} added with roles {', '.join(sorted(roles))}"
                  f"{' (first admin)' if actor.via == 'bootstrap' else ''}",
                  markup=False, highlight=False)


@users_app.command("roles")
def users_roles(ctx: typer.Context, name: Annotated[str, typer.Argument(help="User name.")],
                roles: RolesOpt, as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Replace a user's roles (admin); each grant and revocation is audited."""
    g = setup(ctx, verbose)
    service = g.service()
    service.identity.set_roles(g.principal(service), name, roles)
    emit({"user": name, "roles": sorted(roles)}) if as_json else \
        out.print(f"user {name}: roles {', '.join(sorted(roles))}", markup=False)


@users_app.command("password")
def users_password(ctx: typer.Context, name: Annotated[str, typer.Argument(help="User name.")],
                   as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Set a local account's password from standard input (admin); unlocks it."""
    g = setup(ctx, verbose)
    service = g.service()
    actor = g.principal(service)
    service.identity.set_password(actor, name, _read_password())
    if as_json:
        emit({"user": name, "password_set": True})
    else:
        out.print(f"user {name}: password set", markup=False)


@users_app.command("list")
def users_list(ctx: typer.Context, as_json: JsonOpt = False, verbose: VerboseOpt = False
               ) -> None:
    """List users, their roles and active tokens (admin)."""
    g = setup(ctx, verbose)
    service = g.service()
    users = service.identity.users(g.principal(service))
    if as_json:
        emit([u.as_json() for u in users])
        return
    for u in users:
        flags = [u.origin, *(["password"] if u.password else []),
                 *(["locked"] if u.locked_until else []), *(["disabled"] if u.disabled else [])]
        out.print(f"{u.name}: {', '.join(u.roles) or '-'} ({', '.join(flags)}; "
                  f"{u.tokens} tokens)", markup=False, highlight=False)


@tokens_app.command("create")
def tokens_create(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", help="The token's holder.")],
    expires: Annotated[float | None, typer.Option(
        "--expires", help="Days until it expires (default: never).")] = None,
    roles: Annotated[list[str] | None, typer.Option(
        "--role", help="Limit the token to these roles (default: all the user's).")] = None,
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Create a token for yourself: --user's password on "
        "standard input instead of an admin's token.")] = False,
    as_json: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Create an API token (admin, or a user for themselves with their password); it is
    printed once and stored only hashed."""
    g = setup(ctx, verbose)
    service = g.service()
    if password_stdin:
        token_id, token = service.identity.create_own_token(
            user, _read_password(), cli_client(), roles, expires)
    else:
        token_id, token = service.identity.create_token(g.principal(service), user, roles,
                                                        expires)
    if as_json:
        emit({"id": token_id, "user": user, "token": token})
    else:
        sys.stdout.write(f"{token}\n")
        sys.stderr.write(f"token {token_id} for {user}: shown once, store it now\n")


@tokens_app.command("revoke")
def tokens_revoke(ctx: typer.Context, token_id: Annotated[str, typer.Argument(metavar="ID")],
                  as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Revoke a token at once (admin)."""
    g = setup(ctx, verbose)
    service = g.service()
    user = service.identity.revoke_token(g.principal(service), token_id)
    emit({"id": token_id, "user": user, "revoked": True}) if as_json else \
        out.print(f"token {token_id} of {user} revoked", markup=False)


@tokens_app.command("list")
def tokens_list(ctx: typer.Context,
                user: Annotated[str | None, typer.Option("--user")] = None,
                as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """List tokens (admin); never their secrets."""
    g = setup(ctx, verbose)
    service = g.service()
    tokens = service.identity.tokens(g.principal(service), user)
    if as_json:
        emit([t.as_json() for t in tokens])
        return
    for t in tokens:
        state = "revoked" if t.revoked_at else \
            f"expires {t.expires_at:%Y-%m-%d}" if t.expires_at else "no expiry"
        out.print(f"{t.id} {t.user} {','.join(t.roles)} ({state})", markup=False)
