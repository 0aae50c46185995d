"""PostgreSQL roles: migrations run as an OWNER role, the daemon as a RUNTIME role.

The append-only trigger on `audit_entry` guards against mistakes, not against the role
that owns the table: an owner may `ALTER TABLE ... DISABLE TRIGGER`, edit a row and
re-enable it. So the owner role migrates (and owns the schema, the tables and the
trigger function), then `grant_runtime` gives the runtime role exactly what the daemon
needs:

- USAGE on the schema;
- SELECT, INSERT on the append-only tables (`APPEND_ONLY`), nothing more: every earlier
  grant to the runtime role on them is revoked, column grants included;
- SELECT on `alembic_version` (the daemon reads the schema revision, never writes it);
- SELECT, INSERT, UPDATE, DELETE on every other table;
- USAGE, SELECT on every sequence (nextval; no setval).

Never TRUNCATE, TRIGGER, REFERENCES, CREATE, ownership or membership in the owner role.
`check_runtime` reports, for the daemon to log at start, whatever leaves the connected
role able to rewrite the audit log. SQLite has no roles: there both do nothing.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from daemon.errors import ConfigError

APPEND_ONLY = ("audit_entry", "audit_head")
"""Tables the runtime role may only INSERT into and SELECT from. A table not created
yet (a later migration adds it) is skipped until it exists."""

READ_ONLY = ("alembic_version",)
"""Tables the runtime role may only SELECT: the migration stamp is the owner's."""

_ROLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$.-]{0,62}")
_NOT_A_ROLE = {"public", "none", "current_user", "current_role", "session_user"}


class RuntimeIdentity(NamedTuple):
    """The role a store URL connects as and the schema it works in."""

    role: str
    schema: str


def runtime_identity(url: str) -> RuntimeIdentity:
    """Return the role (the URL's user) and schema of store URL `url`: the first entry of
    `search_path` given in its `options` (`?options=-csearch_path%3Dname`), else `public`.
    `$user` entries are skipped. Raises ConfigError."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError("store.url: cannot use this database URL") from None
    if not parsed.username:
        raise ConfigError("store.url: the URL names no user, so no runtime role to grant to")
    options = parsed.query.get("options", "")
    if isinstance(options, tuple):
        options = " ".join(options)
    return RuntimeIdentity(validate_role(parsed.username), _search_path_schema(options))


def validate_role(role: str) -> str:
    """Return `role` if it is a plain role name segwatch will grant to. Raises ConfigError
    for anything else, such as `public` (a grant to it is a grant to every role)."""
    if not _ROLE_NAME.fullmatch(role) or role.lower() in _NOT_A_ROLE \
            or role.lower().startswith("pg_"):
        raise ConfigError(f"store: {role[:80]!r} is not a role name segwatch grants to "
                          "(letters, digits, _ $ . -; not public or pg_*)")
    return role


def grant_runtime(connection: Connection, runtime_role: str, schema: str | None) -> None:
    """As the owner role, inside the caller's transaction, grant `runtime_role` what the
    daemon needs in `schema` (None: the connection's current schema) and revoke anything
    more (see the module's docstring). Run it after every migration: new tables get no
    grants by themselves. Raises ConfigError when the role is unusable or the connected
    role does not own every table (PostgreSQL would then skip a GRANT with a warning)."""
    if connection.dialect.name != "postgresql":
        return
    schema = schema or _current_schema(connection)
    _refuse_unusable(connection, runtime_role, schema)
    quote = connection.dialect.identifier_preparer.quote_identifier
    relations = connection.execute(text(
        "SELECT c.relname, c.relkind, pg_has_role(current_user, c.relowner, 'USAGE'), "
        "pg_get_userbyid(c.relowner) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :schema AND c.relkind IN ('r', 'p', 'S') ORDER BY c.relname"),
        {"schema": schema}).all()
    not_ours = [f"{name} (owner {owner})" for name, _, ours, owner in relations if not ours]
    if not_ours:
        raise ConfigError(f"store: the owner role does not own {', '.join(not_ours[:5])}; "
                          "hand them over first (REASSIGN OWNED BY old_role TO owner_role)")
    role = quote(runtime_role)
    connection.execute(text(f"GRANT USAGE ON SCHEMA {quote(schema)} TO {role}"))
    for name, kind, _, _ in relations:
        target = f"{quote(schema)}.{quote(name)}"
        if kind == "S":
            connection.execute(text(f"REVOKE ALL ON SEQUENCE {target} FROM {role}"))
            connection.execute(text(f"GRANT USAGE, SELECT ON SEQUENCE {target} TO {role}"))
            continue
        # REVOKE ALL also drops column grants (an UPDATE (actor) would survive otherwise)
        connection.execute(text(f"REVOKE ALL ON TABLE {target} FROM {role}"))
        if name in APPEND_ONLY:
            connection.execute(text(f"REVOKE ALL ON TABLE {target} FROM PUBLIC"))
            privileges = "SELECT, INSERT"
        elif name in READ_ONLY:
            privileges = "SELECT"
        else:
            privileges = "SELECT, INSERT, UPDATE, DELETE"
        connection.execute(text(f"GRANT {privileges} ON TABLE {target} TO {role}"))


def check_runtime(connection: Connection) -> list[str]:
    """Return one warning per way the connected role could rewrite the audit log in its
    current schema: it is a superuser, owns (or may act as the owner of) the schema, a
    table or sequence or function in it, or may UPDATE, DELETE or TRUNCATE an append-only
    table. Empty when confined, and always on SQLite."""
    if connection.dialect.name != "postgresql":
        return []
    role = connection.execute(text("SELECT current_user")).scalar_one()
    schema = connection.execute(text("SELECT current_schema()")).scalar()
    return confinement_warnings(connection, str(role), schema) if schema else []


def confinement_warnings(connection: Connection, role: str, schema: str) -> list[str]:
    """`check_runtime` for any `role` and `schema` (the owner checks the runtime role)."""
    params = {"role": role, "schema": schema}
    superuser = connection.execute(
        text("SELECT rolsuper FROM pg_roles WHERE rolname = :role"), params).scalar()
    if superuser:
        return [f"role {role} is a superuser: it can rewrite the audit log"]
    warnings = []
    if connection.execute(text(
            "SELECT pg_has_role(:role, nspowner, 'MEMBER') FROM pg_namespace "
            "WHERE nspname = :schema"), params).scalar():
        warnings.append(f"role {role} owns schema {schema} (or may act as its owner): "
                        "it can drop and recreate the audit tables")
    owned = connection.execute(text(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :schema AND c.relkind IN ('r', 'p', 'S', 'v', 'm', 'f') "
        "AND pg_has_role(:role, c.relowner, 'MEMBER') "
        "UNION ALL SELECT p.proname || '()' FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = :schema AND pg_has_role(:role, p.proowner, 'MEMBER') "
        "ORDER BY 1"), params).scalars().all()
    if owned:  # the audit tables first: those are the ones that matter
        owned = sorted(owned, key=lambda name: (name not in APPEND_ONLY, name))
        shown = ", ".join(owned[:4]) + (f" and {len(owned) - 4} more" if len(owned) > 4 else "")
        warnings.append(f"role {role} owns (or may act as the owner of) {shown}: "
                        "it can disable the append-only triggers")
    for table in APPEND_ONLY:
        can = connection.execute(text(
            "SELECT has_any_column_privilege(:role, c.oid, 'UPDATE'), "
            "has_table_privilege(:role, c.oid, 'DELETE'), "
            "has_table_privilege(:role, c.oid, 'TRUNCATE') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema AND c.relname = :table AND c.relkind IN ('r', 'p')"),
            {**params, "table": table}).first()
        if can is None:
            continue  # not created yet
        verbs = [verb for verb, yes in zip(("UPDATE", "DELETE", "TRUNCATE"), can, strict=True)
                 if yes]
        if verbs:
            warnings.append(f"role {role} may {'/'.join(verbs)} the append-only table {table}")
    return warnings


def _refuse_unusable(connection: Connection, runtime_role: str, schema: str) -> None:
    """Raise ConfigError unless `runtime_role` exists, is not the connected role, is not a
    superuser and cannot act as the connected role; and `schema` exists."""
    validate_role(runtime_role)
    row = connection.execute(text(
        "SELECT rolsuper, rolname = current_user, pg_has_role(rolname, current_user, 'MEMBER')"
        " FROM pg_roles WHERE rolname = :role"), {"role": runtime_role}).first()
    if row is None:
        raise ConfigError(f"store: the runtime role {runtime_role} does not exist "
                          "(CREATE ROLE ... LOGIN)")
    superuser, same, member = row
    if same:
        raise ConfigError(f"store: refusing: the owner and the runtime role are both "
                          f"{runtime_role}; the daemon could then rewrite the audit log")
    if superuser:
        raise ConfigError(f"store: refusing: the runtime role {runtime_role} is a superuser; "
                          "no grant can confine it")
    if member:
        raise ConfigError(f"store: refusing: the runtime role {runtime_role} is a member of "
                          "the owner role and may act as it (REVOKE the membership)")
    if connection.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :schema"),
                          {"schema": schema}).first() is None:
        raise ConfigError(f"store: schema {schema[:80]!r} does not exist")


def _current_schema(connection: Connection) -> str:
    schema = connection.execute(text("SELECT current_schema()")).scalar()
    if not schema:
        raise ConfigError("store: no schema in the owner connection's search_path exists")
    return str(schema)


def _search_path_schema(options: str) -> str:
    """The first schema named by `search_path` in a libpq `options` string, else public.
    Forms: `-csearch_path=x`, `-c search_path=x`, `--search_path=x`; arguments are split
    at spaces not escaped with a backslash; unquoted names fold to lower case."""
    words = [w.replace("\\ ", " ") for w in re.split(r"(?<!\\)\s+", options.strip()) if w]
    settings = []
    for i, word in enumerate(words):
        if word == "-c" and i + 1 < len(words):
            settings.append(words[i + 1])
        elif word.startswith(("-c", "--")):
            settings.append(word[2:])
    found = "public"
    for setting in settings:  # the last one given wins, as in PostgreSQL
        key, _, value = setting.partition("=")
        if key.strip().lower().replace("-", "_") == "search_path":
            found = _first_schema(value) or "public"
    return found


def _first_schema(value: str) -> str | None:
    for entry in (e.strip() for e in value.split(",")):
        if len(entry) >= 2 and entry.startswith('"') and entry.endswith('"'):
            entry = entry[1:-1].replace('""', '"')
            if entry and entry != "$user":
                return entry
        elif entry and entry.lower() != "$user":
            return entry.lower()
    return None
