"""The adapter factory remembers what each source supports, per chain and source."""

from __future__ import annotations

from typing import Any

from chains.evm.adapter import EvmAdapter
from daemon.bootstrap import Adapters
from daemon.inputs.config import Settings


def _settings(chain_id: int = 1, url: str = "http://127.0.0.1:8545") -> Settings:
    def chain(name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "family": "evm", "chain_id": chain_id,
                "sources": [{"kind": "jsonrpc", "url": url, "name": "primary"}], **extra}

    return Settings(daemon={"firm_owner": "FIRM"}, chains=[chain("ethereum"), chain("other")])


def test_adapters_of_one_source_share_what_was_probed() -> None:
    """Each cycle gets a new adapter, but a source's probed features (pinning, Multicall3,
    trace API) are found once per process: the adapters of one chain's source share them,
    while another chain, another chain id or another URL starts unprobed."""
    factory = Adapters()
    settings = _settings()
    ethereum, other = settings.chains
    first = factory(ethereum, ethereum.sources[0])
    second = factory(ethereum, ethereum.sources[0])
    assert isinstance(first, EvmAdapter) and isinstance(second, EvmAdapter)
    first.features.pinning = "number"
    assert second.features is first.features and second.pinning == "number"
    elsewhere = factory(other, other.sources[0])
    assert isinstance(elsewhere, EvmAdapter) and elsewhere.pinning is None
    for changed in (_settings(chain_id=10), _settings(url="http://127.0.0.1:8546")):
        chain = changed.chains[0]
        adapter = factory(chain, chain.sources[0])
        assert isinstance(adapter, EvmAdapter) and adapter.pinning is None
        adapter.close()
    for adapter in (first, second, elsewhere):
        adapter.close()
