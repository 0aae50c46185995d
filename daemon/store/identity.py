"""Users, API tokens and web sessions: the only code that reads and writes them. Every
public method is one transaction, and every grant, revocation, sign-in failure and
token use from a new client is an audit entry in that transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from daemon.auth.policy import Principal, decode_roles, encode_roles
from daemon.auth.secrets import (
    check_password,
    digest,
    new_secret,
    new_token,
    parse_token,
    same,
)
from daemon.errors import InputError, Unauthenticated
from daemon.store import models as m
from daemon.store.audit import AuditLog
from daemon.store.db import session_scope

USE_RECORDED_EVERY = timedelta(minutes=1)
"""A token's last use is written at most this often (not on every request)."""
BAD_CREDENTIALS = "invalid credentials"
"""What a failed sign-in says, whatever failed (unknown user, wrong password, locked)."""


@dataclass(frozen=True, slots=True)
class Lockout:
    """Local sign-in: failures before the account locks, and for how long."""

    attempts: int = 5
    minutes: float = 15.0


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A user as listed (never its password hash)."""

    name: str
    roles: tuple[str, ...]
    origin: str
    password: bool
    locked_until: datetime | None
    disabled: bool
    tokens: int

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "roles": list(self.roles), "origin": self.origin,
                "password": self.password, "disabled": self.disabled, "tokens": self.tokens,
                "locked_until": self.locked_until.isoformat() if self.locked_until else None}


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as listed (never its secret or digest)."""

    id: str
    user: str
    roles: tuple[str, ...]
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None
        return {"id": self.id, "user": self.user, "roles": list(self.roles),
                "created_at": iso(self.created_at), "created_by": self.created_by,
                "expires_at": iso(self.expires_at), "revoked_at": iso(self.revoked_at),
                "last_used_at": iso(self.last_used_at)}


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A web session just created: the cookie value and its CSRF token (shown once)."""

    cookie: str
    csrf: str
    principal: Principal
    expires_at: datetime


class Identities:
    """Reads and writes users, tokens and sessions through one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- users --------------------------------------------------------------------------
    def user_count(self) -> int:
        """How many users exist (0 on a fresh store: the first admin may be bootstrapped)."""
        with Session(self.engine) as session:
            return int(session.exec(select(func.count()).select_from(m.AppUser)).one())

    def add_user(self, name: str, roles: Sequence[str], password_hash: str | None,
                 origin: str, actor: str, now: datetime, *, only_if_empty: bool = False
                 ) -> None:
        """Create user `name`. Raises InputError if it exists (or, with `only_if_empty`,
        when any user exists: the bootstrap path)."""
        with session_scope(self.engine) as session:
            audit = AuditLog(session)  # first: serializes concurrent adds on PostgreSQL
            if only_if_empty and session.exec(select(m.AppUser.id)).first() is not None:
                raise InputError("the store already has users: an admin must add users "
                                 "(set SEGWATCH_TOKEN to an admin's token)")
            if _user(session, name) is not None:
                raise InputError(f"user {name!r} already exists")
            session.add(m.AppUser(name=name, roles=encode_roles(roles), origin=origin,
                                  password_hash=password_hash, created_at=now))
            audit.append(now, actor, "user_added", None,
                         {"user": name, "roles": list(roles), "origin": origin,
                          "password": password_hash is not None})

    def set_roles(self, name: str, roles: Sequence[str], actor: str, now: datetime) -> None:
        """Replace the roles of `name` (audited as grants and revocations). Raises
        InputError for an unknown user."""
        with session_scope(self.engine) as session:
            audit = AuditLog(session)
            user = _existing(session, name)
            _change_roles(session, audit, user, roles, actor, now)

    def set_password(self, name: str, password_hash: str, actor: str, now: datetime) -> None:
        """Set the password of `name` and unlock it. Raises InputError for an unknown user."""
        with session_scope(self.engine) as session:
            audit = AuditLog(session)
            user = _existing(session, name)
            user.password_hash, user.failed_logins, user.locked_until = password_hash, 0, None
            session.add(user)
            audit.append(now, actor, "password_set", None, {"user": name})

    def users(self) -> list[UserInfo]:
        """Every user, by name."""
        with Session(self.engine) as session:
            counts: dict[int | None, int] = dict(session.execute(
                sa_select(col(m.ApiToken.user_id), func.count()).where(
                    col(m.ApiToken.revoked_at).is_(None))
                .group_by(col(m.ApiToken.user_id))).all())
            return [UserInfo(u.name, tuple(sorted(decode_roles(u.roles))), u.origin,
                             u.password_hash is not None, u.locked_until, u.disabled,
                             counts.get(u.id, 0))
                    for u in session.exec(select(m.AppUser).order_by(col(m.AppUser.name)))]

    def role_holders(self, role: str) -> set[str]:
        """The names of enabled users holding `role`."""
        with Session(self.engine) as session:
            return {u.name for u in session.exec(select(m.AppUser))
                    if role in decode_roles(u.roles) and not u.disabled}

    def sync(self, declared: Iterable[tuple[str, Sequence[str]]], now: datetime,
             origin: str = "config") -> int:
        """Create the declared users that do not exist and give each exactly its declared
        roles (audited, with `origin` as the actor: `config` for [[users]], `oidc` for a
        sign-in's claims); return the changes."""
        changes = 0
        with session_scope(self.engine) as session:
            audit = AuditLog(session)
            for name, roles in declared:
                user = _user(session, name)
                if user is None:
                    session.add(m.AppUser(name=name, roles=encode_roles(roles),
                                          origin=origin, created_at=now))
                    audit.append(now, origin, "user_added", None,
                                 {"user": name, "roles": list(roles), "origin": origin,
                                  "password": False})
                    changes += 1
                elif decode_roles(user.roles) != frozenset(roles):
                    _change_roles(session, audit, user, roles, origin, now)
                    changes += 1
        return changes

    # --- tokens -------------------------------------------------------------------------
    def create_token(self, name: str, roles: Sequence[str] | None, expires_at: datetime | None,
                     actor: str, now: datetime) -> tuple[str, str]:
        """Create a token for user `name` with `roles` (default: all the user's roles, each
        of which it must hold); return (id, token). The token is never stored. Raises
        InputError."""
        with session_scope(self.engine) as session:
            audit = AuditLog(session)
            user = _existing(session, name)
            held = decode_roles(user.roles)
            wanted = frozenset(roles) if roles else held
            extra = sorted(wanted - held)
            if extra:
                raise InputError(f"user {name!r} does not hold the {extra[0]} role")
            token_id, token, token_digest = new_token()
            session.add(m.ApiToken(id=token_id, user_id=user.id or 0, digest=token_digest,
                                   roles=encode_roles(wanted), created_at=now,
                                   created_by=actor, expires_at=expires_at))
            audit.append(now, actor, "token_created", None,
                         {"token": token_id, "user": name, "roles": sorted(wanted),
                          "expires_at": expires_at.isoformat() if expires_at else None})
            return token_id, token

    def revoke_token(self, token_id: str, actor: str, now: datetime) -> str:
        """Revoke a token at once; return its user. Raises InputError for an unknown id."""
        with session_scope(self.engine) as session:
            audit = AuditLog(session)
            row = session.get(m.ApiToken, token_id)
            if row is None:
                raise InputError(f"no token with id {token_id[:24]!r}")
            owner = session.get(m.AppUser, row.user_id)
            if row.revoked_at is None:
                row.revoked_at, row.revoked_by = now, actor
                session.add(row)
                audit.append(now, actor, "token_revoked", None,
                             {"token": token_id, "user": owner.name if owner else None})
            return owner.name if owner else ""

    def tokens(self, name: str | None = None) -> list[TokenInfo]:
        """Tokens (of `name`), newest first."""
        with Session(self.engine) as session:
            query = select(m.ApiToken, m.AppUser.name).join(
                m.AppUser, col(m.ApiToken.user_id) == m.AppUser.id)
            if name is not None:
                query = query.where(m.AppUser.name == name)
            return [TokenInfo(t.id, user, tuple(sorted(decode_roles(t.roles))), t.created_at,
                              t.created_by, t.expires_at, t.revoked_at, t.last_used_at)
                    for t, user in session.exec(query.order_by(
                        col(m.ApiToken.created_at).desc()))]

    def token_principal(self, token: str, client: str, now: datetime) -> Principal:
        """The principal a bearer token authenticates. Raises Unauthenticated; a failure
        naming a real token (wrong secret, expired, revoked, disabled user) is audited,
        and so is the first use from a new client."""
        token_id = parse_token(token)
        if token_id is None:
            raise Unauthenticated("invalid token (expected swt_…, as `tokens create` "
                                  "printed it)")
        with Session(self.engine) as session:  # the common case reads only
            row = session.get(m.ApiToken, token_id)
            if row is None:
                raise Unauthenticated("invalid token")
            user = session.get(m.AppUser, row.user_id)
        problem = _token_problem(row, user, token, now)
        if problem is not None or user is None:
            self.audit(user.name if user else "unknown", "sign_in_failed",
                       {"via": f"token:{token_id}", "reason": problem,
                        "client": client[:200]}, now)
            raise Unauthenticated(problem or "invalid token")
        client = client[:200]
        if row.last_client != client or row.last_used_at is None or \
                now - row.last_used_at >= USE_RECORDED_EVERY:
            self._record_use(token_id, user.name, client, now)
        return Principal(user.name, decode_roles(row.roles) & decode_roles(user.roles),
                         f"token:{token_id}")

    def _record_use(self, token_id: str, user: str, client: str, now: datetime) -> None:
        """Note a token's use (at most once per USE_RECORDED_EVERY); its first use from a
        new client is an audit entry."""
        with session_scope(self.engine) as session:
            row = session.get(m.ApiToken, token_id)
            if row is None:
                return
            if row.last_client != client:
                AuditLog(session).append(now, user, "token_new_client", None,
                                         {"token": token_id, "client": client,
                                          "previous": row.last_client})
                row.last_client = client
            row.last_used_at = now
            session.add(row)

    # --- passwords and sessions --------------------------------------------------------
    def password_principal(self, name: str, password: str, client: str, now: datetime,
                           lockout: Lockout) -> Principal:
        """Check a local account's password. Raises Unauthenticated (one message for every
        cause); each failure is audited and counts toward the lockout."""
        with session_scope(self.engine) as session:
            audit = AuditLog(session)
            user = _user(session, name)
            locked = user is not None and user.locked_until is not None and \
                user.locked_until > now
            ok = check_password(user.password_hash if user else None, password)
            if user is not None and ok and not locked and not user.disabled:
                user.failed_logins, user.locked_until = 0, None
                session.add(user)
                return Principal(user.name, decode_roles(user.roles), "password")
            reason = "locked" if locked else "disabled" if user and user.disabled and ok \
                else "unknown user" if user is None else "wrong password"
            if user is not None and not locked:
                user.failed_logins += 1
                if user.failed_logins >= lockout.attempts:
                    user.locked_until = now + timedelta(minutes=lockout.minutes)
                    user.failed_logins = 0
                    reason += f"; locked for {lockout.minutes:g} minutes"
                session.add(user)
            audit.append(now, user.name if user else "unknown", "sign_in_failed", None,
                         {"via": "password", "user": name[:128], "reason": reason,
                          "client": client[:200]})
        raise Unauthenticated(BAD_CREDENTIALS)

    def start_session(self, principal: Principal, hours: float, now: datetime) -> SignedIn:
        """Create a web session for `principal`; return its cookie and CSRF token."""
        cookie, csrf = new_secret(), new_secret()
        expires = now + timedelta(hours=hours)
        with session_scope(self.engine) as session:
            user = _existing(session, principal.name)
            session.add(m.WebSession(id=digest(cookie), user_id=user.id or 0,
                                     roles=encode_roles(principal.roles), via=principal.via,
                                     csrf=csrf, created_at=now, expires_at=expires))
            AuditLog(session).append(now, principal.name, "signed_in", None,
                                     {"via": principal.via, "roles": sorted(principal.roles)})
        return SignedIn(cookie, csrf, principal, expires)

    def session_principal(self, cookie: str, now: datetime) -> tuple[Principal, str]:
        """The principal and CSRF token of a session cookie. Raises Unauthenticated."""
        with Session(self.engine) as session:
            row = session.get(m.WebSession, digest(cookie[:100]))
            user = session.get(m.AppUser, row.user_id) if row else None
            if row is None or user is None or row.revoked_at is not None or \
                    row.expires_at <= now or user.disabled:
                raise Unauthenticated("not signed in (the session is unknown or expired)")
            roles = decode_roles(row.roles) & decode_roles(user.roles)
            return Principal(user.name, roles, row.via), row.csrf

    def end_session(self, cookie: str, now: datetime) -> None:
        """Sign out: the session stops working at once."""
        with session_scope(self.engine) as session:
            row = session.get(m.WebSession, digest(cookie[:100]))
            if row is not None and row.revoked_at is None:
                row.revoked_at = now
                session.add(row)
                user = session.get(m.AppUser, row.user_id)
                AuditLog(session).append(now, user.name if user else "unknown", "signed_out",
                                         None, {"via": row.via})

    def audit(self, actor: str, action: str, payload: dict[str, Any], now: datetime,
              discrepancy_id: int | None = None) -> None:
        """Append one audit entry on its own (a refusal)."""
        with session_scope(self.engine) as session:
            audit = AuditLog(session)
            if discrepancy_id is not None and session.get(m.Discrepancy, discrepancy_id) is None:
                discrepancy_id = None
            audit.append(now, actor, action, discrepancy_id, payload)


def _user(session: Session, name: str) -> m.AppUser | None:
    return session.exec(select(m.AppUser).where(m.AppUser.name == name)).first()


def _existing(session: Session, name: str) -> m.AppUser:
    user = _user(session, name)
    if user is None:
        raise InputError(f"no user called {name[:128]!r}")
    return user


def _change_roles(session: Session, audit: AuditLog, user: m.AppUser, roles: Sequence[str],
                  actor: str, now: datetime) -> None:
    before = decode_roles(user.roles)
    after = frozenset(roles)
    user.roles = encode_roles(after)
    session.add(user)
    for role in sorted(after - before):
        audit.append(now, actor, "role_granted", None, {"user": user.name, "role": role})
    for role in sorted(before - after):
        audit.append(now, actor, "role_revoked", None, {"user": user.name, "role": role})


def _token_problem(row: m.ApiToken, user: m.AppUser | None, token: str, now: datetime
                   ) -> str | None:
    if not same(row.digest, digest(token.strip())):
        return "wrong token secret"
    if row.revoked_at is not None:
        return "token revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "token expired"
    if user is None or user.disabled:
        return "user disabled"
    return None
