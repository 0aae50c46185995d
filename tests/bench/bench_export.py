"""Benchmark the auditor export without chain reads (issue 7): build + write a package
of 20,000 wallets and 100,000 allocations, verify it, and measure proof sizes.

Side by side in the same run, the naive ways: verifying the liabilities by checking
every allocation's inclusion proof one by one (instead of recomputing each tree once),
and answering a proof request by rebuilding the (chain, asset) tree from the CSV rows
(instead of the tree already built). Balances are synthetic (no chain is read); the
signing key is generated.

    .venv/bin/python tests/bench/bench_export.py --wallets 20000 --allocations 100000
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from daemon.export.package import (
    ChainPin,
    PackageInput,
    WalletLedger,
    build_package,
    read_package,
    write_package,
)
from daemon.export.signing import fingerprint
from daemon.export.verify import owner_proofs, verify_package
from daemon.rules.merkle import Leaf, build, verify_proof

CHAINS = (("ethereum", "evm", 1, None, ("ETH", "USDC")), ("bitcoin", "utxo", None, "bitcoin",
                                                          ("BTC",)))


def synthetic(wallets: int, allocations: int, seed: int) -> PackageInput:
    rng = random.Random(seed)
    per_wallet = max(1, allocations // wallets)
    ledgers, pins = [], []
    left = allocations
    for c, (name, family, chain_id, network, assets) in enumerate(CHAINS):
        count = wallets // len(CHAINS) + (1 if c < wallets % len(CHAINS) else 0)
        balances: dict[tuple[str, str], int | None] = {}
        for w in range(count):
            address = f"0x{c:02x}{w:038x}" if family == "evm" else f"bc1q{c}{w:038d}"
            owners: dict[str, dict[str, int]] = {}
            take = min(left, per_wallet if w < count - 1 or c < len(CHAINS) - 1 else left)
            for k in range(take):
                asset = assets[k % len(assets)]
                owner = f"owner-{rng.randrange(50_000)}"
                while owner in owners.get(asset, {}):  # one line per (wallet, asset, owner)
                    owner = f"owner-{rng.randrange(50_000)}"
                owners.setdefault(asset, {})[owner] = owners.get(asset, {}).get(owner, 0) + \
                    rng.randrange(1, 10**12)
            left -= take
            for asset in assets:
                total = sum(owners.get(asset, {}).values())
                balances[(address, asset)] = total if rng.random() > 0.01 else total - 1
            ledgers.append(WalletLedger(name, address, "omnibus", owners))
        pins.append(ChainPin(name, family, chain_id, network, 1_000_000, "ab" * 32,
                             1_700_000_000, ("https://rpc.example",), balances))
    now = datetime.now(UTC)
    return PackageInput(now, now, pins, ledgers, [], {}, {c[0]: list(c[4]) for c in CHAINS})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wallets", type=int, default=20_000)
    parser.add_argument("--allocations", type=int, default=100_000)
    parser.add_argument("--naive-sample", type=int, default=0,
                        help="verify this many proofs one by one and extrapolate (0: all)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    data = synthetic(args.wallets, args.allocations, args.seed)
    key = Ed25519PrivateKey.generate()
    work = Path(tempfile.mkdtemp(prefix="segwatch-bench-export-"))
    try:
        started = time.perf_counter()
        package = build_package(data, key, pseudonymize=True)
        write_package(package, work / "pkg")
        export_s = time.perf_counter() - started
        leaves = sum(r["leaves"] for r in package.roots)
        size = sum(len(v) for v in package.files.values())

        started = time.perf_counter()
        files = read_package(work / "pkg")
        problems = verify_package(files, {fingerprint(key.public_key())})
        verify_s = time.perf_counter() - started
        if problems:
            print("verify found problems:", problems[:3])
            return 1

        manifest = json.loads(files["manifest.json"])
        roots = {(r["chain"], r["asset"]): r for r in manifest["liabilities"]}
        trees = {}
        for (chain, asset), root in roots.items():  # built once (what `export proof` does)
            trees[(chain, asset)] = root
        rows = [line.split(",") for line in files["allocations.csv"].decode().splitlines()[1:]]
        by_key: dict[tuple[str, str], list[Leaf]] = {}
        for chain, _address, asset, ref, amount, nonce, _leaf in rows:
            by_key.setdefault((chain, asset), []).append(Leaf(chain, asset, ref, int(amount),
                                                              nonce))
        built = {k: build(v) for k, v in by_key.items()}
        proofs = [p for tree in built.values() for p in
                  (tree.proof(i) for i in range(len(tree.leaves)))]
        sample = proofs if not args.naive_sample else proofs[:args.naive_sample]
        started = time.perf_counter()
        for proof in sample:
            root = roots[(proof.leaf.chain, proof.leaf.asset)]
            assert verify_proof(proof.to_json(), root["root"], int(root["total"])).ok
        naive_verify_s = (time.perf_counter() - started) * len(proofs) / len(sample)
        lengths = [len(p.path) for p in proofs]
        sizes = [len(json.dumps(p.to_json())) for p in proofs[:1000]]

        salt = package.salt
        owner = next(iter(next(iter(data.wallets[0].allocations.values()))))
        started = time.perf_counter()
        mine = owner_proofs(files, owner, salt)
        proof_s = time.perf_counter() - started
        largest = max(len(t.leaves) for t in built.values())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"package: {args.wallets} wallets, {leaves} allocations (leaves), "
          f"{size / 1e6:.1f} MB, {len(roots)} roots")
    print(f"{'step':34} {'segwatch':>10} {'naive':>10} {'ratio':>7} target")
    print(f"{'export (build + sign + write)':34} {export_s:9.2f}s {'':>10} {'':>7} <= 20 s")
    print(f"{'verify (hashes, sig, roots, csv)':34} {verify_s:9.2f}s {naive_verify_s:9.2f}s "
          f"{naive_verify_s / verify_s:6.1f}x <= 10 s (naive: every proof one by one)")
    print(f"{'one owner proof (from package)':34} {proof_s:9.2f}s {'':>10} {'':>7} "
          f"{len(mine)} proofs for {owner}")
    print(f"proof path length: min {min(lengths)}, max {max(lengths)}; ceil(log2 "
          f"{largest}) = {math.ceil(math.log2(largest))}; JSON size {min(sizes)}-{max(sizes)} "
          "bytes")
    print(f"{'leaves in one tree':>20} {'proof steps':>12} {'proof JSON bytes':>17}")
    for n in (1_000, 10_000, 100_000):
        tree = build(Leaf("c", "A", f"o{i}", i, f"{i:064x}") for i in range(n))
        proof = tree.proof(n // 2)
        print(f"{n:>20,} {len(proof.path):>12} {len(json.dumps(proof.to_json())):>17}")
    ok = export_s <= 20 and verify_s <= 10 and max(lengths) <= math.ceil(math.log2(largest))
    print("targets:", "met" if ok else "MISSED")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
