"""Transfer history through a Core node: new blocks read whole, watched outputs tracked.

`getblock <hash> 2` gives every transaction of a block, but an input names only the
outpoint it spends (txid, index), not that output's address or value (Core 23+ adds
them at verbosity 3; Litecoin Core 0.21 does not). So the scanner *tracks* the
watched wallets' outputs: it starts from the ones the caller knows unspent before the
range (`tracked`), adds every output a scanned block pays to a watched address, and
sees a watched wallet spend when an input names a tracked outpoint. Values of the
other inputs of such a transaction (rare: consolidations with foreign coins, payjoin)
are asked from the node with `getrawtransaction`, which only a node with `-txindex`
answers for confirmed transactions; without it the fee stays unknown.

Blocks travel in JSON-RPC batches (`getblockhash` for the whole range, then
`getblock` `block_batch` at a time); amounts are decoded as Decimal and converted to
int satoshis, never through a float. Pure decoders are module-level functions.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from chains.errors import DecodeError
from chains.jsonrpc import JsonRpcClient, RpcError, RpcErrorResponse
from chains.types import (
    Address,
    BlockLink,
    ChainHead,
    FeePayment,
    ScanResult,
    SpentOutput,
    TrackedOutput,
    TransferObservation,
)
from chains.utxo.decode import block_hash, checked_height, checked_time, is_hex
from chains.utxo.flows import TxInput, TxOutput, UtxoTx, resolve_inputs, tx_flows, watched_outputs

HASH_CHUNK = 500
"""`getblockhash` calls per batch."""

Coins = Callable[[Any, str, str], int]
"""Converts a Core amount in coins to satoshis (chains.utxo.core_rpc.coins_to_sats)."""


def decode_block(raw: Any, source: str, coins: Coins) -> tuple[BlockLink, list[UtxoTx]]:
    """Return a `getblock <hash> 2` answer as its link and decoded transactions.

    Raises DecodeError naming the field for anything malformed.
    """
    if not isinstance(raw, dict):
        raise DecodeError(source, "getblock", "not a JSON object")
    height = checked_height(raw.get("height"), source, "block.height")
    parent = raw.get("previousblockhash")
    link = BlockLink(
        height=height, hash=block_hash(raw.get("hash"), source, "block.hash"),
        parent_hash="" if height == 0 and parent is None
        else block_hash(parent, source, "block.previousblockhash"),
        timestamp=checked_time(raw.get("time"), source, "block.time"))
    txs = raw.get("tx")
    if not isinstance(txs, list):
        raise DecodeError(source, f"block {height}.tx", "not a JSON array")
    return link, [decode_tx(tx, source, coins, f"block {height}.tx[{n}]")
                  for n, tx in enumerate(txs)]


def decode_tx(raw: Any, source: str, coins: Coins, field: str = "tx") -> UtxoTx:
    """Return a verbose Core transaction (in a block or from getrawtransaction) as UtxoTx.

    Raises DecodeError naming the field.
    """
    if not isinstance(raw, dict):
        raise DecodeError(source, field, "not a JSON object")
    txid = _txid(raw.get("txid"), source, f"{field}.txid")
    vin, vout = raw.get("vin"), raw.get("vout")
    if not isinstance(vin, list) or not isinstance(vout, list):
        raise DecodeError(source, f"{field}.vin/vout", "not JSON arrays")
    inputs = []
    for n, item in enumerate(vin):
        if not isinstance(item, dict):
            raise DecodeError(source, f"{field}.vin[{n}]", "not a JSON object")
        if "coinbase" in item:
            continue
        inputs.append(TxInput(_txid(item.get("txid"), source, f"{field}.vin[{n}].txid"),
                              checked_height(item.get("vout"), source,
                                             f"{field}.vin[{n}].vout")))
    outputs = [_output(item, n, source, coins, f"{field}.vout[{n}]")
               for n, item in enumerate(vout)]
    return UtxoTx(txid, tuple(inputs), tuple(outputs))


def _output(raw: Any, position: int, source: str, coins: Coins, field: str) -> TxOutput:
    if not isinstance(raw, dict) or not isinstance(raw.get("scriptPubKey"), dict):
        raise DecodeError(source, field, "not an output object with a scriptPubKey")
    index = checked_height(raw.get("n"), source, f"{field}.n")
    if index != position:
        raise DecodeError(source, f"{field}.n", f"{index} at position {position}")
    script = raw["scriptPubKey"]
    hex_script = script.get("hex")
    if not isinstance(hex_script, str) or not is_hex(hex_script):
        raise DecodeError(source, f"{field}.scriptPubKey.hex", "not hex")
    address = script.get("address")  # Core 22+
    if address is None:
        listed = script.get("addresses")  # Core ≤ 21, Litecoin Core 0.21
        address = listed[0] if isinstance(listed, list) and len(listed) == 1 else None
    if address is not None and not isinstance(address, str):
        raise DecodeError(source, f"{field}.scriptPubKey.address", "not a string")
    return TxOutput(index, hex_script.lower(), coins(raw.get("value"), source, f"{field}.value"),
                    Address(address) if address else None)


def _txid(value: Any, source: str, field: str) -> str:
    return block_hash(value, source, field)  # a txid has a block hash's shape


class CoreScanner:
    """Reads blocks start..end through `client` and follows the watched wallets' outputs."""

    def __init__(self, client: JsonRpcClient, coins: Coins, block_batch: int = 10) -> None:
        self._client = client
        self._coins = coins
        self._block_batch = block_batch

    @property
    def source(self) -> str:
        return self._client.source

    def scan(self, watched: Collection[Address], start: int, end: int,
             tracked: Collection[TrackedOutput]) -> ScanResult:
        """Return the transfers, fees, scanned blocks and tracked-output changes of the
        range. Raises SourceUnavailable, DecodeError, RpcErrorResponse."""
        watch = frozenset(watched)
        known = {out.outpoint: out for out in tracked}
        blocks: list[BlockLink] = []
        transfers: list[TransferObservation] = []
        fees: list[FeePayment] = []
        created: list[TrackedOutput] = []
        spent: list[SpentOutput] = []
        hashes = self._hashes(start, end)
        for first in range(0, len(hashes), self._block_batch):
            for raw in self._calls([("getblock", [h, 2])
                                    for h in hashes[first:first + self._block_batch]]):
                link, txs = decode_block(raw, self.source, self._coins)
                expected = start + len(blocks)
                if link.height != expected or link.hash != hashes[expected - start]:
                    raise DecodeError(self.source, "getblock", f"asked for block {expected}")
                blocks.append(link)
                head = ChainHead(link.height, link.hash, link.timestamp)
                for tx in txs:
                    tx = resolve_inputs(tx, known)
                    for i in tx.inputs:
                        if (i.prev_txid, i.prev_vout) in known:
                            del known[(i.prev_txid, i.prev_vout)]
                            spent.append(SpentOutput(i.prev_txid, i.prev_vout, tx.txid,
                                                     link.height))
                    if any(i.address in watch for i in tx.inputs):
                        tx = self._value_foreign_inputs(tx)
                    flows = tx_flows(tx, head, watch, self.source)
                    transfers += flows.transfers
                    fees += [flows.fee] if flows.fee else []
                    for out in watched_outputs(tx, watch, link.height):
                        known[out.outpoint] = out
                        created.append(out)
        return ScanResult(tuple(blocks), tuple(transfers), tuple(fees), "none", 0,
                          created=tuple(created), spent=tuple(spent))

    def _hashes(self, start: int, end: int) -> list[str]:
        hashes: list[str] = []
        for first in range(start, end + 1, HASH_CHUNK):
            last = min(end, first + HASH_CHUNK - 1)
            answers = self._calls([("getblockhash", [h]) for h in range(first, last + 1)])
            hashes += [block_hash(a, self.source, "getblockhash") for a in answers]
        return hashes

    def _value_foreign_inputs(self, tx: UtxoTx) -> UtxoTx:
        """Fill in inputs of untracked prevouts from `getrawtransaction` where the node
        can answer (with -txindex); the others stay unknown."""
        unknown = sorted({i.prev_txid for i in tx.inputs if i.value is None})
        if not unknown:
            return tx
        answers = self._client.batch([("getrawtransaction", [txid, True])
                                      for txid in unknown])
        outputs: dict[tuple[str, int], TxOutput] = {}
        for txid, answer in zip(unknown, answers, strict=True):
            if isinstance(answer, RpcError):
                continue  # no transaction index: the fee stays unknown
            prev = decode_tx(answer, self.source, self._coins, "getrawtransaction")
            if prev.txid != txid:
                raise DecodeError(self.source, "getrawtransaction.txid", f"asked for {txid}")
            outputs.update({(prev.txid, o.index): o for o in prev.outputs})
        inputs = tuple(
            TxInput(i.prev_txid, i.prev_vout, out.address, out.value)
            if i.value is None and (out := outputs.get((i.prev_txid, i.prev_vout))) else i
            for i in tx.inputs)
        return UtxoTx(tx.txid, inputs, tx.outputs)

    def _calls(self, requests: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        results = self._client.batch(requests)
        for result in results:
            if isinstance(result, RpcError):
                raise RpcErrorResponse(self.source, result)
        return results

