"""A source that answers balances with a 4,000-digit quantity, in front of a real anvil
(SQLite and PostgreSQL): the cycle does not crash; the lie is a source error named by
the source's name, counted, and the cycle fails over to the honest second source and
completes with the right balances."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from chains.errors import SegwatchError
from chains.evm.devnet import AnvilNode, set_balances
from daemon.bootstrap import adapter_for, open_store
from daemon.inputs.config import Settings
from daemon.service import Service
from daemon.store.db import make_engine, upgrade
from tests.httpserve import LoopbackServer, QuietHandler, answer
from tests.principals import FEEDER

pytestmark = pytest.mark.anvil

ETH = 10**18
ALICE = "0x1000000000000000000000000000000000000001"
BOB = "0x2000000000000000000000000000000000000002"
HUGE = "0x" + "f" * 4000
LIED_ABOUT = frozenset({"eth_getBalance", "eth_call"})


class HugeBalances(LoopbackServer):
    """Forwards JSON-RPC to `upstream`, except eth_getBalance and eth_call, which it
    answers with a 4,000-digit quantity."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.lies = 0
        proxy = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                answer(self, 200, json.dumps(proxy.relay(body)).encode(),
                       {"Content-Type": "application/json"})

        super().__init__(Handler, name="huge-balances")

    def relay(self, body: Any) -> Any:
        if isinstance(body, list):
            return [self.relay(item) for item in body]
        if body.get("method") in LIED_ABOUT:
            self.lies += 1
            return {"jsonrpc": "2.0", "id": body.get("id"), "result": HUGE}
        return httpx.post(self.upstream, json=body, timeout=10).json()


class Errors:
    """A SourceObserver that keeps the source errors it is told."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def requests(self, chain: str, source: str, count: int) -> None:
        pass

    def source_error(self, chain: str, source: str, error: SegwatchError) -> None:
        self.seen.append((source, error.user_message))


@pytest.mark.parametrize("multicall", ["", None], ids=["direct", "multicall-default"])
def test_a_4000_digit_balance_fails_over_to_the_honest_source(
        anvil_node: AnvilNode, store_url: str, tmp_path: Path, multicall: str | None) -> None:
    set_balances(anvil_node, {ALICE: 10 * ETH, BOB: 3 * ETH})
    liar = HugeBalances(anvil_node.url).start()
    try:
        chain: dict[str, Any] = {
            "name": "devnet", "family": "evm", "chain_id": 31337, "confirmations": 0,
            "sources": [{"kind": "jsonrpc", "name": "liar", "url": liar.url},
                        {"kind": "jsonrpc", "name": "honest", "url": anvil_node.url}]}
        if multicall is not None:
            chain["multicall"] = multicall
        settings = Settings(store={"url": store_url}, chains=[chain])
        upgrade(make_engine(store_url))
        errors = Errors()
        service = Service(settings, open_store(store_url), adapter_for, observer=errors)
        ledger = tmp_path / "ledger.csv"
        ledger.write_text("chain,address,structure,owner,asset,amount\n"
                          f"devnet,{ALICE},segregated,alice,ETH,10\n"
                          f"devnet,{BOB},segregated,bob,ETH,4\n")
        service.import_ledger(ledger, dry_run=False, actor=FEEDER)

        result = service.run_cycle(settings.chains[0])

        assert result.error is None, result.error
        assert result.read_errors == 0 and result.wallets == 2
        assert result.source == "honest"
        assert liar.lies > 0
        shortfalls = [(f.type, f.address.lower(), f.onchain, f.ledger) for f in result.findings]
        assert shortfalls == [("balance_shortfall", BOB, 3 * ETH, 4 * ETH)]
        assert errors.seen and {source for source, _ in errors.seen} == {"liar"}
        message = errors.seen[0][1]
        assert message.startswith("source liar returned a malformed")
        assert liar.url not in message and "127.0.0.1" not in message and len(message) < 300
    finally:
        liar.stop()
