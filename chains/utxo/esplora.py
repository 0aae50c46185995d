"""A UTXO chain adapter over the Esplora REST API (Blockstream, mempool.space, electrs).

Heads come from `/blocks/tip/hash` or `/block-height/:h`, then `/block/:hash`. A
balance is `chain_stats.funded_txo_sum - chain_stats.spent_txo_sum` of
`/address/:a`: confirmed outputs only; `mempool_stats` (unconfirmed) is ignored, as
the Core-RPC source ignores the mempool too.

Esplora cannot read an address at a chosen block: it always answers at its tip. The
adapter therefore reads the tip hash before and after the address requests and
accepts the balances only when both agree (else it reads them all again, a bounded
number of times), and the observations carry that tip, not the requested block.
Between the two tip reads the server may briefly answer from different indexes
behind a load balancer; nothing in the API can rule that out.

Amounts arrive as JSON integers (satoshis) and stay `int`. Transient failures (429,
5xx, timeouts, refused connections) are retried with exponential backoff that
honours `Retry-After`; messages name only the redacted URL.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from time import time
from typing import Any, TypeAlias
from urllib.parse import quote

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential

from chains.errors import DecodeError, SourceUnavailable
from chains.jsonrpc import RetryPolicy
from chains.types import (
    Address,
    AssetRef,
    BalanceObservation,
    BaseUnits,
    ChainHead,
    ScanResult,
    TrackedOutput,
)
from chains.urls import redact_url, url_secrets
from chains.utxo.address import NETWORKS
from chains.utxo.core_rpc import TOKENS_UNSUPPORTED
from chains.utxo.decode import block_hash, non_negative_int
from chains.utxo.networks import GENESIS_NETWORK

TIP_ATTEMPTS = 3
"""How often balances() reads all addresses again when the tip moved meanwhile."""

RETRY_AFTER_CAP = 30.0
"""The longest `Retry-After` (seconds) honoured; a longer one is waited for this long."""

Outcome: TypeAlias = int | str
"""A native balance read: satoshis, or why the address could not be read."""


class _Transient(SourceUnavailable):
    """A failure worth retrying; `retry_after` is the server's Retry-After in seconds."""

    def __init__(self, source: str, reason: str, retry_after: float | None = None) -> None:
        super().__init__(source, reason)
        self.retry_after = retry_after


class _NotFound(Exception):
    """HTTP 404: the block or address does not exist (yet)."""


class _BadRequest(Exception):
    """HTTP 400: the server rejects the path's argument (e.g. a foreign address)."""


class EsploraAdapter:
    """Reads one Bitcoin or Litecoin chain through an Esplora REST API (a ChainAdapter).

    `url` is the API's base (`https://blockstream.info/api`); user info becomes HTTP
    basic auth and a query string (API key) is sent with every request, but only the
    redacted form (`source`) appears in messages. Up to `concurrency` address requests
    run at once.
    """

    def __init__(
        self,
        url: str,
        *,
        network: str,
        timeout: float = 10.0,
        concurrency: int = 8,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if network not in NETWORKS:
            raise ValueError(f"unknown utxo network {network!r}")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._network = network
        try:
            self._base = httpx.URL(url)
        except httpx.InvalidURL:
            raise ValueError(f"invalid esplora url {redact_url(url)}") from None
        self._source = redact_url(url)
        self._secrets = url_secrets(url)
        self._retry = retry or RetryPolicy()
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._http = httpx.Client(timeout=timeout, transport=transport, limits=limits)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="esplora")
        self._lock = threading.Lock()
        self._requests = 0
        self._headers: dict[str, ChainHead] = {}

    @property
    def source(self) -> str:
        """The source's redacted URL, safe to log."""
        return self._source

    @property
    def requests_made(self) -> int:
        """HTTP requests sent so far (retries included)."""
        return self._requests

    def close(self) -> None:
        """Release connections and the worker threads."""
        self._pool.shutdown(wait=True)
        self._http.close()

    def __enter__(self) -> EsploraAdapter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def chain_id(self) -> str:
        """Return the network the source serves, told by its genesis block hash.

        That is the configured network when the genesis is the configured network's, else
        the network the genesis names. Raises SourceUnavailable for a genesis of no known
        network (segwatch cannot tell what it serves), DecodeError.
        """
        genesis = self._block_hash_at(0)
        known = GENESIS_NETWORK.get(genesis)
        if known is None:
            raise SourceUnavailable(
                self.source, f"genesis block {genesis} belongs to no known network; "
                f"cannot confirm it serves {self._network}")
        return known

    def head(self) -> ChainHead:
        """Return the source's tip. Raises SourceUnavailable, DecodeError."""
        return self._header(self._tip_hash())

    def block_at(self, height: int) -> ChainHead:
        """Return the block at `height`. Raises SourceUnavailable (also when it does not
        exist yet), DecodeError, ValueError for a negative height."""
        if height < 0:
            raise ValueError("height must not be negative")
        return self._header(self._block_hash_at(height))

    def balances(
        self,
        addresses: Sequence[Address],
        assets: Sequence[AssetRef],
        block: ChainHead,
    ) -> list[BalanceObservation]:
        """Return one observation per (address, asset), address-major.

        Native balances are confirmed balances at the source's tip and carry that tip,
        which may differ from `block` (see the module docstring); a token, or an address
        the source rejects (HTTP 400), carries an `error` at `block`. Raises
        SourceUnavailable when the source fails or its tip keeps moving during the
        reads, DecodeError for a malformed answer.
        """
        if not addresses or not assets:
            return []
        unique = list(dict.fromkeys(addresses))
        seen, outcomes = block, dict[Address, Outcome]()
        if any(asset.is_native for asset in assets):
            seen, outcomes = self._consistent_balances(unique)
        observations = []
        for address in addresses:
            for asset in assets:
                outcome = outcomes.get(address, TOKENS_UNSUPPORTED) if asset.is_native \
                    else TOKENS_UNSUPPORTED
                observations.append(self._observation(address, asset, block, seen, outcome))
        return observations

    def scan(self, watched: Collection[Address], start: int, end: int,
             tracked: Collection[TrackedOutput] = ()) -> ScanResult:
        """Not available yet. Raises SourceUnavailable."""
        raise SourceUnavailable(
            self.source, "transfer history is not implemented for esplora sources yet"
        )

    # -- blocks -------------------------------------------------------------------------

    def _tip_hash(self) -> str:
        return block_hash(self._get_text("/blocks/tip/hash"), self.source, "tip hash")

    def _block_hash_at(self, height: int) -> str:
        try:
            text = self._get(f"/block-height/{height}", rejectable=True).text.strip()
        except (_NotFound, _BadRequest):
            raise SourceUnavailable(self.source, f"no block {height} yet") from None
        return block_hash(text, self.source, f"block-height/{height}")

    def _header(self, block_hash: str) -> ChainHead:
        """Return the block `block_hash` (remembered: a hash names one block forever)."""
        known = self._headers.get(block_hash)
        if known is None:
            try:
                response = self._get(f"/block/{block_hash}", rejectable=True)
            except (_NotFound, _BadRequest):
                raise SourceUnavailable(self.source, f"block {block_hash} vanished") from None
            known = decode_block(_json(response, self.source, "block"), self.source)
            if known.hash != block_hash:
                raise DecodeError(self.source, "block.id", f"asked for {block_hash}")
            self._headers[block_hash] = known
        return known

    # -- balances -----------------------------------------------------------------------

    def _consistent_balances(
        self, addresses: list[Address]
    ) -> tuple[ChainHead, dict[Address, Outcome]]:
        """Read every address between two equal tip reads; return that tip and outcomes."""
        before = self._tip_hash()
        for _ in range(TIP_ATTEMPTS):
            outcomes = dict(zip(addresses, self._pool.map(self._address_outcome, addresses),
                                strict=True))
            after = self._tip_hash()
            if after == before:
                return self._header(after), outcomes
            before = after
        raise SourceUnavailable(
            self.source, f"the tip moved during each of {TIP_ATTEMPTS} balance reads")

    def _address_outcome(self, address: Address) -> Outcome:
        try:
            response = self._get(f"/address/{quote(address, safe='')}", rejectable=True)
        except (_BadRequest, _NotFound) as rejected:
            return f"not a valid address on the source's network: {rejected}"
        raw = _json(response, self.source, f"address/{address}")
        return decode_address_balance(raw, self.source, address)

    def _observation(self, address: Address, asset: AssetRef, block: ChainHead,
                     seen: ChainHead, outcome: Outcome) -> BalanceObservation:
        if isinstance(outcome, str):
            return BalanceObservation(address, asset, None, block, self.source, error=outcome)
        return BalanceObservation(address, asset, BaseUnits(outcome), seen, self.source)

    # -- HTTP ---------------------------------------------------------------------------

    def _get_text(self, path: str) -> str:
        return self._get(path).text.strip()

    def _get(self, path: str, *, rejectable: bool = False) -> httpx.Response:
        """GET `path` below the base URL with bounded retries.

        Raises _NotFound (HTTP 404) and _BadRequest (HTTP 400) when `rejectable`, else
        SourceUnavailable for them as for every other failure.
        """
        policy = self._retry
        retrying = Retrying(
            stop=stop_after_attempt(max(1, policy.attempts)),
            wait=_Wait(policy),
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        try:
            return retrying(self._get_once, path)
        except _Transient as exc:
            raise SourceUnavailable(exc.source, exc.reason) from None
        except (_NotFound, _BadRequest) as exc:
            if rejectable:
                raise
            raise SourceUnavailable(self.source, f"{exc.args[0]} for {path}") from None

    def _get_once(self, path: str) -> httpx.Response:
        with self._lock:
            self._requests += 1
        url = self._base.copy_with(path=self._base.path.rstrip("/") + path)
        try:
            response = self._http.get(url)
        except httpx.HTTPError as exc:
            raise _Transient(self.source, self._describe(exc)) from None
        status = response.status_code
        if status == 429 or status >= 500:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            raise _Transient(self.source, f"HTTP {status} for {path}", retry_after)
        if status == 404:
            raise _NotFound(f"HTTP 404: {_short(response.text)}")
        if status == 400:
            raise _BadRequest(f"HTTP 400: {_short(response.text)}")
        if status != 200:
            raise SourceUnavailable(self.source, f"HTTP {status} for {path}")
        return response

    def _describe(self, exc: Exception) -> str:
        """The exception's class and text, unless the text could carry a URL secret."""
        text = str(exc)
        if not text or "://" in text or any(secret in text for secret in self._secrets):
            return type(exc).__name__
        return f"{type(exc).__name__}: {text}"


class _Wait:
    """Exponential backoff, or the server's Retry-After (capped) when it is longer."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._backoff = wait_exponential(multiplier=policy.initial_wait, max=policy.max_wait)

    def __call__(self, state: RetryCallState) -> float:
        backoff = float(self._backoff(state))
        failure = state.outcome.exception() if state.outcome else None
        if isinstance(failure, _Transient) and failure.retry_after is not None:
            return max(backoff, min(failure.retry_after, RETRY_AFTER_CAP))
        return backoff


# -- decoding (pure) ----------------------------------------------------------------------

def decode_block(raw: Any, source: str) -> ChainHead:
    """Return an Esplora `/block/:hash` answer as a ChainHead. Raises DecodeError."""
    if not isinstance(raw, dict):
        raise DecodeError(source, "block", "not a JSON object")
    return ChainHead(
        height=non_negative_int(raw.get("height"), source, "block.height"),
        hash=block_hash(raw.get("id"), source, "block.id"),
        timestamp=non_negative_int(raw.get("timestamp"), source, "block.timestamp"),
    )


def decode_address_balance(raw: Any, source: str, address: str) -> int:
    """Return the confirmed satoshis of an `/address/:a` answer (funded minus spent sums of
    `chain_stats`; `mempool_stats` is ignored). Raises DecodeError, also when the answer
    is for another address or spends more than it funded."""
    field = f"address/{address}"
    if not isinstance(raw, dict) or not isinstance(raw.get("chain_stats"), dict):
        raise DecodeError(source, f"{field}.chain_stats", "missing or not a JSON object")
    if raw.get("address", address) != address:
        raise DecodeError(source, f"{field}.address", f"answers for {raw.get('address')!r}")
    stats = raw["chain_stats"]
    funded = non_negative_int(stats.get("funded_txo_sum"), source,
                              f"{field}.chain_stats.funded_txo_sum")
    spent = non_negative_int(stats.get("spent_txo_sum"), source,
                             f"{field}.chain_stats.spent_txo_sum")
    if spent > funded:
        raise DecodeError(source, f"{field}.chain_stats", f"spent {spent} > funded {funded}")
    return funded - spent


def _json(response: httpx.Response, source: str, field: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise DecodeError(source, field, "response body is not valid JSON") from None


def _retry_after(header: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if
    absent. A wait time, not an amount."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(header).timestamp() - time())
    except (TypeError, ValueError):
        return None


def _short(text: str) -> str:
    return text.strip().splitlines()[0][:120] if text.strip() else "no reason given"

