"""Two real PostgreSQL roles: the owner migrates, the runtime role runs the daemon and
cannot rewrite the audit log (no UPDATE, DELETE, TRUNCATE, no disabling the trigger),
while everything the daemon does still works."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from daemon.errors import ConfigError
from daemon.runtime.leases import Leases
from daemon.store.db import head_revision, make_engine, upgrade_as_owner
from daemon.store.roles import check_runtime, runtime_identity
from tests.integration.test_workflow import USER, ids, make_world
from tests.realdeps import PG_ADMIN_URL, missing

pytestmark = pytest.mark.postgres


@dataclass(frozen=True)
class Roles:
    owner: str
    runtime: str
    schema: str
    owner_url: str
    runtime_url: str
    admin: Engine


def url_for(role: str, schema: str) -> str:
    return f"postgresql+psycopg://{role}@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"


@contextmanager
def two_roles() -> Iterator[Roles]:
    """An owner and a runtime role (LOGIN, trust auth) and a fresh schema the owner owns;
    all dropped after, whatever happened."""
    tag = uuid.uuid4().hex[:10]
    owner, runtime, schema = f"sw_owner_{tag}", f"sw_runtime_{tag}", f"sw_roles_{tag}"
    admin = create_engine(PG_ADMIN_URL)
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any connection failure means the server is unavailable
        admin.dispose()
        missing("PostgreSQL", f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE ROLE "{owner}" LOGIN'))
            conn.execute(text(f'CREATE ROLE "{runtime}" LOGIN'))
            conn.execute(text(f'CREATE SCHEMA "{schema}" AUTHORIZATION "{owner}"'))
        yield Roles(owner, runtime, schema, url_for(owner, schema), url_for(runtime, schema),
                    admin)
    finally:
        with admin.begin() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE usename IN (:a, :b)"), {"a": owner, "b": runtime})
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            for role in (runtime, owner):
                exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"),
                                      {"r": role}).first()
                if exists:
                    conn.execute(text(f'REASSIGN OWNED BY "{role}" TO CURRENT_USER'))
                    conn.execute(text(f'DROP OWNED BY "{role}"'))
                    conn.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()


def refused(engine: Engine, statement: str, why: str) -> None:
    with pytest.raises(DBAPIError, match=why), engine.begin() as db:
        db.execute(text(statement))


def test_the_runtime_role_runs_the_daemon_but_cannot_rewrite_the_audit_log(
        tmp_path: Path) -> None:
    with two_roles() as r:
        assert upgrade_as_owner(r.owner_url, r.runtime_url) == head_revision()
        # the daemon's own work, as the runtime role: ledger import, a cycle (findings,
        # checkpoint, audit entries), maker-checker actions (SELECT ... FOR UPDATE)
        service, _ = make_world(r.runtime_url, tmp_path)
        first, second = ids(service)
        service.act(first, "propose", USER["mia"], reason="false_positive", note="checked")
        service.act(first, "approve", USER["carl"])
        service.act(second, "propose", USER["mia"], reason="false_positive", note="again")
        service.act(second, "reject", USER["carl"], note="not so")
        verified = service.store.verify_audit()
        assert verified.ok and verified.checked == 7
        runtime = service.store.engine
        leases = Leases(runtime, ["ethereum"], 1.5, me="replica-0")  # upserts, deletes
        for _ in range(2):
            leases.tick()
        assert leases.held() == {"ethereum"}
        leases.release_all()
        with runtime.begin() as db:  # a raw append works too
            db.execute(text(
                "INSERT INTO audit_entry (seq, at, actor, action, payload, prev_hash, hash) "
                "VALUES (1000, now(), 'x', 'x', '{}', 'p', 'h')"))
            assert db.execute(text("SELECT count(*) FROM audit_entry")).scalar_one() == 8
            assert check_runtime(db) == []
        for statement in ("UPDATE audit_entry SET actor = 'x'", "DELETE FROM audit_entry",
                          "TRUNCATE audit_entry", "UPDATE alembic_version SET version_num = 'x'",
                          "SELECT setval('audit_entry_seq_seq', 1)"):
            refused(runtime, statement, "permission denied")
        for statement in ("ALTER TABLE audit_entry DISABLE TRIGGER audit_entry_append_only",
                          "ALTER TABLE audit_entry DISABLE TRIGGER USER",
                          "DROP TABLE audit_entry CASCADE"):
            refused(runtime, statement, "must be owner")
        for statement in ("CREATE OR REPLACE FUNCTION segwatch_audit_append_only() "
                          "RETURNS trigger AS $$ BEGIN RETURN NEW; END $$ LANGUAGE plpgsql",
                          "CREATE TABLE sneaky (id int)"):  # no CREATE on the schema
            refused(runtime, statement, "permission denied for schema")
        with runtime.connect() as db:
            assert db.execute(text("SELECT count(*) FROM audit_entry")).scalar_one() == 8
        runtime.dispose()

        owner = make_engine(r.owner_url)
        with owner.connect() as db:
            warnings = check_runtime(db)
        owner.dispose()
        assert any("audit_entry" in w and "disable the append-only triggers" in w
                   for w in warnings)
        assert any(f"owns schema {r.schema}" in w for w in warnings)


def test_earlier_grants_are_revoked_and_later_append_only_tables_are_covered(
        tmp_path: Path) -> None:
    """A runtime role given too much before (table and column grants) is cut back to
    SELECT, INSERT on the audit tables (audit_entry, audit_head) by the next upgrade."""
    with two_roles() as r:
        upgrade_as_owner(r.owner_url, r.runtime_url)
        owner = make_engine(r.owner_url)
        with owner.begin() as db:
            db.execute(text(f'GRANT ALL ON audit_entry TO "{r.runtime}"'))
            db.execute(text(f'GRANT UPDATE (actor) ON audit_entry TO "{r.runtime}"'))
            db.execute(text(f'GRANT ALL ON audit_head TO "{r.runtime}"'))
        runtime = make_engine(r.runtime_url)
        with runtime.connect() as db:
            warnings = check_runtime(db)
        assert any("UPDATE/DELETE/TRUNCATE the append-only table audit_entry" in w
                   for w in warnings)
        assert any("append-only table audit_head" in w for w in warnings)

        assert upgrade_as_owner(r.owner_url, r.runtime_url) == head_revision()
        with runtime.connect() as db:
            assert check_runtime(db) == []
        refused(runtime, "UPDATE audit_entry SET actor = 'x'", "permission denied")
        refused(runtime, "DELETE FROM audit_head", "permission denied")
        with runtime.begin() as db:
            db.execute(text("INSERT INTO audit_head (seq, hash, at, key, signature) VALUES "
                            "(1, 'h', now(), 'k', 's')"))
            assert db.execute(text("SELECT count(*) FROM audit_head")).scalar_one() == 1
        # privileges the owner cannot revoke (held through another role) are refused
        with r.admin.begin() as db:
            db.execute(text(f'GRANT pg_write_all_data TO "{r.runtime}"'))
        with pytest.raises(ConfigError, match=f"but role {r.runtime} may UPDATE/DELETE the "
                                              "append-only table audit_entry"):
            upgrade_as_owner(r.owner_url, r.runtime_url)
        runtime.dispose()
        owner.dispose()


def test_unsafe_role_pairs_are_refused() -> None:
    with two_roles() as r:
        with pytest.raises(ConfigError, match="owner and the runtime role are both"):
            upgrade_as_owner(r.owner_url, r.owner_url)
        with pytest.raises(ConfigError, match="does not exist"):
            upgrade_as_owner(r.owner_url, url_for(f"{r.runtime}_nobody", r.schema))
        with pytest.raises(ConfigError, match="is a superuser"):
            upgrade_as_owner(r.owner_url, f"{PG_ADMIN_URL}?options=-csearch_path%3D{r.schema}")
        with pytest.raises(ConfigError, match=r"but store\.url in public"):
            upgrade_as_owner(r.owner_url, "postgresql+psycopg://x@127.0.0.1:5432/test")
        with pytest.raises(ConfigError, match="not a role name"):
            upgrade_as_owner(r.owner_url, url_for("public", r.schema))
        with r.admin.begin() as db:
            db.execute(text(f'GRANT "{r.owner}" TO "{r.runtime}"'))
        with pytest.raises(ConfigError, match="member of the owner role"):
            upgrade_as_owner(r.owner_url, r.runtime_url)
        with r.admin.begin() as db:
            db.execute(text(f'REVOKE "{r.owner}" FROM "{r.runtime}"'))
        assert upgrade_as_owner(r.owner_url, r.runtime_url) == head_revision()


def test_sqlite_has_no_roles(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PostgreSQL only"):
        upgrade_as_owner(f"sqlite:///{tmp_path / 'a.db'}", "postgresql+psycopg://rt@h/db")


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql+psycopg://rt@h/db", ("rt", "public")),
    ("postgresql+psycopg://rt:pw@h/db?options=-csearch_path%3Dsw_x", ("rt", "sw_x")),
    ("postgresql+psycopg://rt@h/db?options=-c%20search_path%3DMixed,public", ("rt", "mixed")),
    ('postgresql+psycopg://rt@h/db?options=--search_path%3D%22%24user%22,%22My%5C%20S%22',
     ("rt", "My S")),
    ("postgresql+psycopg://rt@h/db?options=-cstatement_timeout%3D5s", ("rt", "public")),
])
def test_runtime_identity_from_the_store_url(url: str, expected: tuple[str, str]) -> None:
    assert runtime_identity(url) == expected


@pytest.mark.parametrize("url", ["postgresql+psycopg://h/db", "postgresql+psycopg://public@h/db",
                                 "postgresql+psycopg://pg_monitor@h/db", "not a url"])
def test_unusable_runtime_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        runtime_identity(url)


def test_segwatch_db_upgrade_sets_up_both_roles_and_the_daemon_warns_when_not_confined(
        tmp_path: Path) -> None:
    """Through the real CLI: `db upgrade` with SEGWATCH_DB_OWNER_URL migrates as the owner
    and confines store.url's role (which then cannot UPDATE the audit log); the owner's
    URL never reaches the output. `run --once` as the runtime role logs no confinement
    warning; as the owner it logs `store_role_not_confined`."""
    from tests.e2e.cli import segwatch

    with two_roles() as r:
        config = tmp_path / "segwatch.toml"
        config.write_text(f'[store]\nurl = "{r.runtime_url}"\n')
        owner_url = r.owner_url.replace(f"{r.owner}@", f"{r.owner}:s3cret-owner-pw@")
        done = segwatch("db", "upgrade", "--json", cwd=tmp_path,
                        env={"SEGWATCH_DB_OWNER_URL": owner_url})
        assert done.code == 0, done.stderr
        assert done.json()["revision"] == head_revision()
        assert "s3cret-owner-pw" not in done.stdout + done.stderr
        refused(make_engine(r.runtime_url), "UPDATE audit_entry SET actor = 'x'",
                "permission denied")
        confined = segwatch("--log-format", "json", "run", "--once", cwd=tmp_path)
        assert confined.code == 0, confined.stderr
        assert "store_role_not_confined" not in confined.stderr
        config.write_text(f'[store]\nurl = "{r.owner_url}"\n')
        owner_run = segwatch("--log-format", "json", "run", "--once", cwd=tmp_path)
        assert "store_role_not_confined" in owner_run.stderr
