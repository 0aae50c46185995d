"""Family and source kind → adapter. The daemon's composition root calls `make_adapter`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chains.base import ChainAdapter
from chains.errors import SegwatchError
from chains.http import DEFAULT_DEADLINE, DEFAULT_MAX_RESPONSE_BYTES
from chains.types import FeeModel


class UnsupportedSource(SegwatchError):
    """No adapter exists (yet) for this family and source kind."""


def make_adapter(
    family: str,
    kind: str,
    url: str,
    *,
    chain_id: int | None,
    multicall: str | None,
    max_batch: int,
    timeout: float,
    network: str | None = None,
    concurrency: int = 16,
    rate_limit: float | None = None,
    name: str | None = None,
    headers: Mapping[str, str] | None = None,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    deadline: float = DEFAULT_DEADLINE,
    features: Any = None,
    fee_model: FeeModel = "ethereum",
    jovian_time: int | None = None,
) -> ChainAdapter:
    """Return an adapter reading `url`, labelled `name` (default: the URL's host) in every
    message, metric and stored observation; `headers` go with every request,
    `max_response_bytes` and `deadline` bound each response; `features`: what an earlier
    adapter of this source probed (an EVM source's `SourceFeatures`, updated in place);
    `fee_model` and `jovian_time`: how an EVM chain charges fees (`FeeRules`).
    Raises UnsupportedSource."""
    if family == "evm" and kind == "jsonrpc":
        from chains.evm.adapter import EvmAdapter
        from chains.evm.decode import FeeRules

        return EvmAdapter(
            url,
            expected_chain_id=chain_id,
            multicall_address=multicall,
            max_batch=max_batch,
            timeout=timeout,
            name=name,
            headers=headers,
            max_response_bytes=max_response_bytes,
            deadline=deadline,
            features=features,
            fees=FeeRules(fee_model, jovian_time),
        )
    if family == "utxo" and kind == "core-rpc" and network is not None:
        from chains.utxo.core_rpc import CoreRpcAdapter

        return CoreRpcAdapter(url, network=network, timeout=timeout, max_batch=max_batch,
                              name=name, headers=headers,
                              max_response_bytes=max_response_bytes, deadline=deadline)
    if family == "utxo" and kind == "esplora" and network is not None:
        from chains.utxo.esplora import EsploraAdapter

        return EsploraAdapter(url, network=network, timeout=timeout, concurrency=concurrency,
                              rate_limit=rate_limit, name=name, headers=headers,
                              max_response_bytes=max_response_bytes, deadline=deadline)
    raise UnsupportedSource(f"source kind {kind!r} for {family} chains is not supported yet")
