"""Engines and migrations. An empty SQLite store is migrated on first use."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Connection, Engine, Table, create_engine, event
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError, OperationalError
from sqlmodel import Session

from daemon.errors import ConfigError

MIGRATIONS = Path(__file__).parent / "migrations"
_SQLITE_WRITES = threading.RLock()


def make_engine(url: str) -> Engine:
    """Return an engine for `url` (SQLite file or PostgreSQL). Raises ConfigError."""
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ConfigError(f"store.url: cannot use this database URL ({type(exc).__name__})") \
            from None
    if engine.dialect.name == "sqlite":
        _create_private(engine.url.database)
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def insert_plain(connection: Connection, table: Table, keys: Sequence[str],
                 rows: Sequence[Sequence[Any]]) -> None:
    """Insert `rows` (tuples in `keys`' order, each value already in the driver's form:
    `driver_form`) into `table` in one executemany, without SQLAlchemy's per-row binding
    (at a million rows, most of an insert's time); on PostgreSQL by COPY, in the
    connection's transaction (the 100,000 observations of a 50,000-wallet shard's first
    cycle: 9.1 s by a pipelined executemany, 3.3 s by COPY, profiled). Python-side column
    defaults are not applied: `keys` names every column the rows fill."""
    if not rows:
        return
    dialect = connection.dialect
    quote = dialect.identifier_preparer.quote
    if dialect.name == "postgresql":
        _copy_rows(connection, f"COPY {quote(table.name)} "
                               f"({', '.join(quote(k) for k in keys)}) FROM STDIN", rows)
        return
    marker = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(dialect.paramstyle)
    if marker is None:
        raise ValueError(f"insert_plain: parameter style {dialect.paramstyle!r} not supported")
    sql = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(k) for k in keys)}) "
           f"VALUES ({', '.join([marker] * len(keys))})")
    connection.exec_driver_sql(sql, list(rows))


def _copy_rows(connection: Connection, statement: str, rows: Sequence[Sequence[Any]]) -> None:
    """Send `rows` by psycopg's COPY FROM STDIN on the connection SQLAlchemy holds (its
    transaction): the driver adapts each value as it would a parameter."""
    cursor = connection.connection.cursor()
    try:
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    finally:
        cursor.close()


@contextmanager
def roomy_page_cache(connection: Connection, kib: int = 65_536) -> Iterator[None]:
    """Within the block, this SQLite connection's page cache may grow to `kib` (the
    default is 2 MiB); its size before is restored after. A million new wallets land at
    random places of the (chain, address) index, and an insert that misses the cache
    reads a page back: 500,000 new wallets took 3.9 s with the default, 2.3 s with 64 MiB.
    Elsewhere the pool's connections keep the default (a daemon holds several). A no-op
    on other databases."""
    if connection.dialect.name != "sqlite":
        yield
        return
    before = connection.exec_driver_sql("PRAGMA cache_size").scalar()
    connection.exec_driver_sql(f"PRAGMA cache_size=-{int(kib)}")
    try:
        yield
    finally:
        connection.exec_driver_sql(f"PRAGMA cache_size={int(before or -2000)}")


BULK_ROWS = 1_000
"""Rows written at once from which a write asks for fresh planner statistics."""


def refresh_statistics(engine: Engine, written: Mapping[str, int]) -> list[str]:
    """On PostgreSQL, `ANALYZE` each table of `written` (table name → rows just written
    to it) that this role may analyze (its owner, or a superuser) when the rows written
    are at least BULK_ROWS and more than a tenth of what its statistics counted (all of
    them when it was never analyzed); return the tables analyzed.

    A bulk write (a ledger import, a first cycle storing a million balances) leaves the
    planner without statistics until autovacuum's next round (a minute by default; never
    with autovacuum off), and meanwhile plans from a guess: at a million wallets a `GROUP
    BY` of 500 wallets' newest balances scanned the whole table (0.7 s against 20 ms
    once analyzed). A role that may not analyze (the confined runtime role of
    daemon.store.roles) leaves it to autovacuum. Elsewhere a no-op (SQLite's plans here
    do not depend on statistics). Best effort, after the write committed: an error here
    leaves the statistics to autovacuum and is not the write's failure."""
    bulk = {name: rows for name, rows in written.items() if rows >= BULK_ROWS}
    if engine.dialect.name != "postgresql" or not bulk:
        return []
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    done: list[str] = []
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            counted = connection.execute(text(
                "SELECT relname, greatest(reltuples, 0) FROM pg_class "
                "WHERE oid = ANY(CAST(:tables AS regclass[])) "
                "AND pg_has_role(relowner, 'USAGE') ORDER BY relname"),
                {"tables": sorted(bulk)}).all()
            quote = connection.dialect.identifier_preparer.quote
            for name, tuples in counted:
                if bulk[name] > tuples / 10:
                    connection.exec_driver_sql(f"ANALYZE {quote(name)}")
                    done.append(name)
    except SQLAlchemyError:
        pass
    return done


def driver_form(connection: Connection, column: Column[Any]) -> Callable[[Any], Any]:
    """What turns a value of `column` into the driver's form on this connection's database
    (the column type's bind processing; the value itself where there is none)."""
    process = column.type.dialect_impl(connection.dialect).bind_processor(connection.dialect)
    return process if process is not None else _unchanged


def _unchanged(value: Any) -> Any:
    return value


def _create_private(database: str | None) -> None:
    """Create a new SQLite file readable by its owner only (0600, its new directory 0700)
    before SQLite does (with the umask's mode); SQLite gives the -wal and -shm files the
    database file's mode. An existing file is left as it is. Raises ConfigError."""
    if database in (None, "", ":memory:") or database.startswith("file:"):
        return
    path = Path(database)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigError(f"store.url: cannot create {path}: {exc.strerror or exc}") from None
    os.close(fd)


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine) -> str:
    """Apply every pending migration; return the revision now current.

    Raises ConfigError when the database cannot be reached.
    """
    config = _alembic_config()
    on_file = engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:")
    migrating = _transactional_sqlite(engine) if on_file else engine  # in memory: nothing
    # survives a crash, and a second engine would open another, empty database
    try:
        with migrating.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            return current_revision(migrating, connection) or ""
    except OperationalError as exc:
        raise ConfigError(f"store: cannot open the database: {_first_line(exc)}") from None
    finally:
        if migrating is not engine:
            migrating.dispose()


def _transactional_sqlite(engine: Engine) -> Engine:
    """An engine on the same SQLite file whose transactions include DDL: pysqlite commits
    before every CREATE/ALTER by itself, so a migration killed midway would leave tables
    without their revision stamp. Here the driver's own transaction handling is off and
    SQLAlchemy emits BEGIN: the whole migration commits, or none of it."""
    migrating = create_engine(engine.url)

    @event.listens_for(migrating, "connect")
    def _connect(dbapi_connection: Any, _record: object) -> None:
        _sqlite_pragmas(dbapi_connection, _record)
        dbapi_connection.isolation_level = None

    @event.listens_for(migrating, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return migrating


def current_revision(engine: Engine, connection: object | None = None) -> str | None:
    """Return the schema revision of the database, or None when unmigrated."""
    if connection is not None:
        return MigrationContext.configure(connection).get_current_revision()  # type: ignore[arg-type]
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    """Return the newest migration shipped with this version."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head() or ""


def ensure_schema(engine: Engine) -> None:
    """Migrate an embedded SQLite store on first use; a server database must be upgraded
    explicitly (`segwatch db upgrade`). Raises ConfigError for an out-of-date server schema.
    """
    try:
        current = current_revision(engine)
    except DatabaseError as exc:  # OperationalError, or "file is not a database"
        raise ConfigError(f"store: cannot open the database: {_first_line(exc)}") from None
    if current == head_revision():
        return
    if engine.dialect.name == "sqlite":
        upgrade(engine)
        return
    raise ConfigError("store: the database schema is not up to date; run `segwatch db upgrade`")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """Yield a session whose work is one transaction: committed on success, else rolled back.

    On SQLite the daemon's threads (one per chain) take turns: SQLite has one writer at
    a time anyway, and a transaction that read before another thread committed would
    otherwise fail to upgrade to a write (SQLITE_BUSY) instead of waiting.
    """
    with _SQLITE_WRITES if engine.dialect.name == "sqlite" else nullcontext(), \
            Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def _first_line(exc: Exception) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


def upgrade_as_owner(owner_url: str, runtime_url: str) -> str:
    """Migrate a PostgreSQL store as the owner role of `owner_url`, then grant the role of
    `runtime_url` (the daemon's store.url) only what the daemon needs (see
    daemon.store.roles); return the revision now current. Refuses, with ConfigError, a
    runtime role that is missing, is the owner, is a superuser or may act as the owner,
    and a runtime URL working in another schema than the owner's. Raises ConfigError."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from daemon.store import roles

    runtime = roles.runtime_identity(runtime_url)
    engine = make_engine(owner_url)
    try:
        if engine.dialect.name != "postgresql":
            raise ConfigError("store: owner and runtime roles exist on PostgreSQL only")
        with engine.begin() as connection:  # refuse before migrating anything
            owner, schema = connection.execute(
                text("SELECT current_user, current_schema()")).one()
            if schema != runtime.schema:
                raise ConfigError(f"store: the owner URL works in schema {schema or '(none)'}"
                                  f" but store.url in {runtime.schema}; give both the same "
                                  "search_path")
            roles.grant_runtime(connection, runtime.role, schema)  # validates the role
        revision = upgrade(engine)
        with engine.begin() as connection:
            roles.grant_runtime(connection, runtime.role, schema)
        with engine.connect() as connection:
            warnings = roles.confinement_warnings(connection, runtime.role, schema)
        if warnings:
            raise ConfigError(f"store: migrated to {revision} as {owner}, but {warnings[0]}")
        return revision
    except DBAPIError as exc:
        raise ConfigError(f"store: upgrade as the owner role failed: {_first_line(exc)}") \
            from None
    finally:
        engine.dispose()
