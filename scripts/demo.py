"""`make demo`: a local anvil devnet, demo wallets and ledger, one reconcile cycle, then
the maker-checker workflow through the HTTP API by two signed-in people.

The ledger allocates 2,500 USDC to client-alice's segregated wallet, but the chain
holds only 2,400: one deliberate `balance_shortfall`. Everything else reconciles.

Identity: on the fresh store the demo bootstraps a local admin (`users add --role admin
--password-stdin`), who adds a maker (mia), a checker (carl) and the books system
(a feeder, with an API token). The books push the ledger; `segwatch serve` runs the API;
mia signs in and proposes a resolution, carl signs in and approves it; `audit verify`
checks the hash chain, the signed heads and every discrepancy's replayed history.

Then an operating-day scene (SPEC §8): the books, cut at a block, correct the USDC; an
approved withdrawal of 0.3 ETH is mined before the books book it: the cycle raises
nothing (a reconciling item explains it; `check` shows it in transit), and once the
books cut after it book it, nothing is in transit any more.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chains.evm.devnet import (  # noqa: E402
    AnvilNode,
    deploy_test_token,
    find_anvil,
    free_port,
    impersonate,
    install_multicall,
    mint_many,
    set_balances,
    start_anvil,
)

CONFIG = REPO / "config" / "demo" / "segwatch.toml"
LEDGER = REPO / "config" / "demo" / "ledger.csv"
STORE_DIR = REPO / "demo"
ETH = 10**18
USDC_UNIT = 10**6
ALICE = "0x1000000000000000000000000000000000000001"
OMNIBUS = "0x1000000000000000000000000000000000000002"
DAVE = "0x1000000000000000000000000000000000000003"
HOUSE = "0x1000000000000000000000000000000000000009"
EXPECTED_CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
PEOPLE = {"mia": "maker", "carl": "checker", "audrey": "auditor"}
CONSOLE = "127.0.0.1:9464"
"""Where `make console` serves the demo store's console (daemon.listen's default)."""
PAYEE = "0x20000000000000000000000000000000000000AA"
WITHDRAWN = 3 * ETH // 10


def segwatch(*args: str, env: dict[str, str], stdin: str | None = None,
             show: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real CLI; show the command and (unless `show` is off: a secret) its output."""
    print(f"\n$ segwatch {' '.join(args)}", flush=True)
    done = subprocess.run([sys.executable, "-m", "daemon.cli", "--config", str(CONFIG), *args],
                          cwd=REPO, env=env, input=stdin, capture_output=True, text=True,
                          check=False)
    if show:
        sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done


def identities(env: dict[str, str]) -> tuple[dict[str, str], str]:
    """Bootstrap the admin, add mia, carl and the books; return passwords and the books'
    token. Passwords are random per run and printed: this is a throwaway local demo."""
    passwords = {name: secrets.token_urlsafe(12) for name in ("admin", *PEOPLE)}
    segwatch("users", "add", "admin", "--role", "admin", "--password-stdin", env=env,
             stdin=passwords["admin"] + "\n")
    admin = segwatch("tokens", "create", "--user", "admin", "--password-stdin", env=env,
                     stdin=passwords["admin"] + "\n", show=False).stdout.strip()
    as_admin = {**env, "SEGWATCH_TOKEN": admin}
    for name, role in PEOPLE.items():
        segwatch("users", "add", name, "--role", role, "--password-stdin", env=as_admin,
                 stdin=passwords[name] + "\n")
    segwatch("users", "add", "books", "--role", "feeder", env=as_admin)
    books = segwatch("tokens", "create", "--user", "books", "--expires", "1", env=as_admin,
                     show=False).stdout.strip()
    segwatch("users", "list", env=as_admin)
    print("\n(demo passwords: " + ", ".join(f"{k}={v}" for k, v in passwords.items()) + ")")
    return passwords, books


def api_workflow(url: str, passwords: dict[str, str]) -> str:
    """mia proposes and carl approves the shortfall through the API; return its status."""
    api = f"{url}/api/v1"
    sessions = {}
    for name in PEOPLE:
        client = httpx.Client(base_url=api, timeout=10)
        signed = client.post("/auth/login", json={"name": name, "password": passwords[name]})
        signed.raise_for_status()
        client.headers["X-CSRF-Token"] = signed.json()["csrf"]
        sessions[name] = client
        print(f"POST /auth/login as {name}: roles {signed.json()['roles']}")
    mia, carl = sessions["mia"], sessions["carl"]
    console_glance(url, "carl", passwords["carl"])
    (finding,) = mia.get("/discrepancies", params={"status": "open"}).json()
    id_ = finding["id"]
    print(f"GET /discrepancies?status=open: #{id_} {finding['type']} {finding['asset']} "
          f"{finding['difference']}")
    show("mia tries to approve", mia.post(f"/discrepancies/{id_}/approve",
                                                       json={}))
    show("mia proposes", mia.post(f"/discrepancies/{id_}/propose", json={
        "reason": "deposit_in_transit", "note": "100 USDC top-up in flight, ticket 4711"}))
    show("carl approves", carl.post(f"/discrepancies/{id_}/approve", json={}))
    history = carl.get(f"/discrepancies/{id_}").json()["history"]
    for entry in history:
        print(f"  #{entry['seq']} {entry['actor']:>8} {entry['action']}")
    head = carl.get("/audit/head").json()
    print(f"GET /audit/head: entry {head['seq']} signed by {head['key'][:16]}…")
    status: str = carl.get(f"/discrepancies/{id_}").json()["status"]
    for client in sessions.values():
        client.close()
    return status


def block_time(node: AnvilNode, tag: str = "latest") -> int:
    return int(node.call("eth_getBlockByNumber", [tag, False])["timestamp"], 16)


def books(rows: dict[tuple[str, str], str]) -> str:
    """The demo ledger with some (address, asset) amounts replaced."""
    lines = LEDGER.read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        if (cells[1], cells[4]) in rows:
            cells[5] = rows[(cells[1], cells[4])]
        out.append(",".join(cells))
    return "\n".join(out) + "\n"


def iso(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def in_transit(node: AnvilNode, as_books: dict[str, str]) -> list[int]:
    """SPEC §8 on the devnet: books cut at a block; an approved withdrawal mined after
    the cut-off raises nothing (in transit); books cut after it book it. Returns the
    exit codes of the six commands."""
    print("\n--- an operating day: a withdrawal mined before the books book it ---")
    time.sleep(1.1)  # the next block is a second after the first import's cut-off
    node.mine()
    cut = block_time(node)
    node.call("evm_setNextBlockTimestamp", [cut + 1])
    (STORE_DIR / "books-1.csv").write_text(books({(ALICE, "USDC"): "2400"}))
    codes = [segwatch("ledger", "import", "demo/books-1.csv", "--as-of", iso(cut),
                      env=as_books).returncode]
    (STORE_DIR / "withdrawal.csv").write_text(
        "id,chain,from_address,to_address,asset,amount,approved_by,approved_at\n"
        f"w-demo-1,devnet,{ALICE},{PAYEE},ETH,0.3,carl,{iso(cut)}\n")
    codes.append(segwatch("withdrawals", "import", "demo/withdrawal.csv",
                          env=as_books).returncode)
    impersonate(node, ALICE)
    receipt = node.transact(PAYEE, value=WITHDRAWN, sender=ALICE)
    fee = int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
    print(f"\nalice's approved withdrawal of 0.3 ETH is mined in block "
          f"{int(receipt['blockNumber'], 16)} (fee {fee} wei); the books have not booked it")
    env = {k: v for k, v in as_books.items() if k != "SEGWATCH_TOKEN"}
    codes += [segwatch("run", "--once", env=env).returncode,
              segwatch("check", "devnet", ALICE, env=env).returncode]
    left = Decimal(10 * ETH - WITHDRAWN - fee).scaleb(-18)
    (STORE_DIR / "books-2.csv").write_text(books({(ALICE, "USDC"): "2400",
                                                  (ALICE, "ETH"): f"{left:f}"}))
    mined = block_time(node)
    codes += [segwatch("ledger", "import", "demo/books-2.csv", "--as-of", iso(mined),
                       env=as_books).returncode,
              segwatch("run", "--once", env=env).returncode]
    print("the books booked it: nothing is in transit any more")
    return codes


def console_glance(url: str, name: str, password: str) -> None:
    """Sign in to the console's form as `name` and read the dashboard's overall signal."""
    with httpx.Client(base_url=url, timeout=10) as browser:
        form = browser.get("/login").text
        nonce = form.split('name="nonce" value="', 1)[1].split('"', 1)[0]
        browser.post("/login", data={"name": name, "password": password, "nonce": nonce})
        page = browser.get("/").text
        signal = page.split('data-testid="overall">', 1)[1].split("<", 1)[0] \
            if 'data-testid="overall">' in page else "not signed in"
        print(f"console at {url}/ as {name}: dashboard says {signal}")


def show(what: str, answer: httpx.Response) -> None:
    body: Any = answer.json()
    detail = body.get("status") if answer.is_success else body["error"]["message"]
    print(f"{what}: HTTP {answer.status_code} {detail}")


def serve(env: dict[str, str]) -> subprocess.Popen[bytes]:
    server = subprocess.Popen([sys.executable, "-m", "daemon.cli", "--config", str(CONFIG),
                               "serve"], cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    url = f"http://{env['SEGWATCH_DAEMON__LISTEN']}"
    for _ in range(100):  # bounded: 20 s
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.terminate()
    raise SystemExit("demo: segwatch serve did not start")


def main() -> int:
    binary = find_anvil()
    if binary is None:
        print("anvil not found: run `make install` (it installs @foundry-rs/anvil from npm)")
        return 2
    shutil.rmtree(STORE_DIR, ignore_errors=True)
    STORE_DIR.mkdir()
    node = start_anvil(binary)
    try:
        print(f"devnet: anvil at {node.url} (chain id 31337)")
        token = deploy_test_token(node, "Demo USD Coin", "USDC", 6)
        if token != EXPECTED_CONTRACT:
            print(f"unexpected token address {token}; config/demo/segwatch.toml expects "
                  f"{EXPECTED_CONTRACT}")
            return 2
        install_multicall(node)
        set_balances(node, {ALICE: 10 * ETH, OMNIBUS: 12 * ETH + ETH // 4,
                            DAVE: ETH // 8, HOUSE: 100 * ETH})
        mint_many(node, token, [ALICE, OMNIBUS], [2_400 * USDC_UNIT, 1_000_500_000])
        print("seeded: 4 wallets; alice holds 2,400 USDC on chain, the ledger says 2,500")
        listen = f"127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEGWATCH_")}
        env.update({"SEGWATCH_DEMO_RPC": node.url, "SEGWATCH_DAEMON__LISTEN": listen})
        codes = [segwatch("keys", "generate", "--out", "demo/audit-key.pem", env=env)
                 .returncode]
        made = segwatch("keys", "generate", "--out", "demo/export-key.pem", env=env, show=False)
        fingerprint = made.stdout.split("fingerprint: ", 1)[1].split()[0]
        (STORE_DIR / "trusted-keys.json").write_text(json.dumps([fingerprint]) + "\n")
        env["SEGWATCH_EXPORT__TRUSTED_KEYS"] = json.dumps([fingerprint])
        passwords, books = identities(env)
        codes += [
            segwatch("ledger", "import", str(LEDGER),
                     env={**env, "SEGWATCH_TOKEN": books}).returncode,
            segwatch("run", "--once", env=env).returncode,
            segwatch("status", env=env).returncode,
        ]
        print(f"\n$ segwatch serve   # the API on http://{listen}/api/v1/")
        server = serve(env)
        try:
            resolved = api_workflow(f"http://{listen}", passwords)
        finally:
            server.terminate()
            server.wait(timeout=10)
        codes += in_transit(node, {**env, "SEGWATCH_TOKEN": books})
        codes += [segwatch("audit", "verify", env=env).returncode,
                  segwatch("status", env=env).returncode]
    finally:
        node.stop()
        print("\ndevnet stopped")
    # keys, imports ok; run and status exit 1 (the deliberate shortfall); the in-transit
    # scene (books, withdrawal, run, check, books, run) all 0; after carl's approval the
    # audit verifies and status is compliant.
    expected = [0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    if codes != expected or resolved != "resolved":
        print(f"demo: unexpected exit codes {codes} (expected {expected}), item {resolved}")
        return 1
    print("demo: the deliberate shortfall was found, proposed by the maker and approved by "
          "the checker through the API; a withdrawal mined before the books booked it "
          "raised nothing; the audit log verifies")
    print(f"\nOperator console: run `make console`, then open http://{CONSOLE}/ and sign in "
          "as")
    for name, role in {"admin": "admin", **PEOPLE}.items():
        print(f"  {name:<7} password {passwords[name]}   ({role})")
    print("(the devnet is stopped: the console shows the demo's stored state; a live spot "
          "check says it cannot reach the node)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
