"""The composition root: settings → store, adapters, service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chains.base import ChainAdapter
from chains.registry import make_adapter
from daemon.errors import InputError
from daemon.inputs.chain_settings import ChainSettings
from daemon.inputs.config import Settings
from daemon.inputs.source_settings import SourceSettings
from daemon.service import Service
from daemon.store.db import ensure_schema, make_engine
from daemon.store.repository import Store

if TYPE_CHECKING:
    from daemon.runtime.alerts import AlertDispatcher


class Adapters:
    """The adapter factory: a new adapter per use, with what each source was found to
    support (pinning, Multicall3, trace API) probed once per process and remembered per
    chain and source (keyed by the chain's identity as well as the source's name and URL,
    so a source reconfigured to another chain or node is probed anew)."""

    def __init__(self) -> None:
        self._features: dict[tuple[str, str, str, str], Any] = {}

    def __call__(self, chain: ChainSettings, source: SourceSettings) -> ChainAdapter:
        features = None
        if chain.family == "evm":
            from chains.evm.adapter import SourceFeatures

            key = (chain.name, str(chain.chain_id), source.name or "", source.url)
            features = self._features.setdefault(key, SourceFeatures())
        return make_adapter(chain.family, source.kind, source.url, chain_id=chain.chain_id,
                            multicall=chain.multicall, max_batch=source.max_batch,
                            timeout=source.timeout_seconds, network=chain.network,
                            concurrency=source.concurrency, rate_limit=source.rate_limit,
                            name=source.name, headers=source.headers,
                            max_response_bytes=source.max_response_bytes,
                            deadline=source.deadline_seconds, features=features,
                            fee_model=chain.fees, jovian_time=chain.jovian)


def adapter_for(chain: ChainSettings, source: SourceSettings) -> ChainAdapter:
    """Return an adapter for one source of `chain` that probes its source anew."""
    return Adapters()(chain, source)


def open_store(url: str, *, create: bool = True) -> Store:
    """Return a store on `url`, migrating an embedded SQLite store on first use. Without
    `create`, a SQLite file that does not exist is not created: InputError (a typo in
    --db or store.url must not become a new, empty store that reports `stale`)."""
    if not create:
        _require_sqlite_file(url)
    engine = make_engine(url)
    ensure_schema(engine)
    return Store(engine)


def _require_sqlite_file(url: str) -> None:
    from pathlib import Path

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # make_engine names the problem
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:") or \
            str(database).startswith("file:"):
        return
    if not Path(str(database)).is_file():
        raise InputError(f"store {database}: no such file (check --db or store.url; "
                         "`segwatch db upgrade`, `run` or an import creates a new store)")


def build_service(settings: Settings, db_url: str | None = None, *,
                  create: bool = True) -> Service:
    """Return the service wired to the configured store and real adapters (`create`: see
    open_store)."""
    service = Service(settings, open_store(db_url or settings.store.url, create=create),
                      Adapters())
    if settings.daemon.audit_key:
        from pathlib import Path

        from daemon.store.heads import HeadSigner

        service.head_signer = HeadSigner.from_file(Path(settings.daemon.audit_key))
    return service


def build_alerts(settings: Settings, store: Store) -> AlertDispatcher | None:
    """The alert dispatcher of the configured sinks, or None without sinks."""
    from daemon.runtime.alerts import AlertDispatcher

    return AlertDispatcher(settings.alerts, store.engine) if settings.alerts else None


def prepare(service: Service) -> None:
    """Before the daemon or the API serves: warn when the store's role could rewrite the
    audit log (PostgreSQL, daemon/store/roles.py), and give the configuration's [[users]]
    their declared roles (audited)."""
    import structlog

    from daemon.store.roles import check_runtime

    log = structlog.get_logger("segwatch")
    with service.store.engine.connect() as connection:
        for warning in check_runtime(connection):
            log.warning("store_role_not_confined", detail=warning)
    changed = service.identity.sync_declared()
    if changed:
        log.info("declared_users_synced", changes=changed)
