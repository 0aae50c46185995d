"""`segwatch export …` and `segwatch keys generate`: thin shells over daemon/export/service.py,
daemon/export/package.py and daemon/export/verify.py. Registered on the root app by
daemon/cli/app.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from daemon.cli.common import parse_time, plural, progress, typer_app
from daemon.errors import EXIT_DISCREPANCY, InputError

export_app = typer_app(help="Auditor proof package: build, verify, prove.")
keys_app = typer_app(help="Signing keys for export packages.", no_args_is_help=True)
out = Console()

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine output (JSON) on stdout.")]
PublicKeyOpt = Annotated[list[Path] | None, typer.Option(
    "--public-key", help="Trust packages signed by this Ed25519 public key (PEM; repeatable).")]
FingerprintOpt = Annotated[list[str] | None, typer.Option(
    "--fingerprint", help="Trust packages signed by the key with this SHA-256 fingerprint "
                          "(hex; repeatable).")]
VerboseOpt = Annotated[bool, typer.Option("-v", "--verbose", help="Debug logging.")]


def _globals(ctx: typer.Context, verbose: bool) -> Any:
    from daemon.runtime.logs import configure

    root = ctx.find_root().obj
    configure(getattr(root, "log_format", None), verbose)
    return root


def _emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _trusted(root: Any, public_keys: list[Path] | None,
             fingerprints: list[str] | None) -> frozenset[str]:
    """The trusted signers' fingerprints: given on the command line, else configured."""
    from daemon.export.signing import trusted_fingerprints

    configured: list[str] = []
    if not public_keys and not fingerprints:
        configured = list(root.settings(required=False).export.trusted_keys)
    return trusted_fingerprints(public_keys or [], fingerprints or [], configured)


@export_app.callback(invoke_without_command=True)
def export_command(
    ctx: typer.Context,
    out_path: Annotated[Path | None, typer.Option(
        "--out", help="New directory (or FILE.zip) to write the package to.")] = None,
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="Pin each chain's newest block at confirmation depth at or before "
                        "this time (ISO-8601 with offset).")] = None,
    sign_key: Annotated[Path | None, typer.Option(
        "--sign-key", help="Ed25519 private key (PEM) to sign the manifest.")] = None,
    reveal_owners: Annotated[bool, typer.Option(
        "--reveal-owners", help="Name owners in the package. By default each owner's "
                                "leaves commit to a ref only they can check (the master "
                                "salt is written beside the package as OUT.owner-salt).")
    ] = False,
    pseudonymize: Annotated[bool, typer.Option(
        "--pseudonymize", help="The default (kept for scripts that pass it).")] = False,
    as_json: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Write the signed package: manifest.json, wallets.csv, allocations.csv,
    discrepancies.csv, report.html."""
    if ctx.invoked_subcommand is not None:
        return
    from daemon.export.package import load_private_key
    from daemon.export.service import export

    if out_path is None:
        raise InputError("export needs --out DIR (or --out FILE.zip)")
    if sign_key is None:
        raise InputError("export needs --sign-key FILE (`segwatch keys generate --out FILE` "
                         "makes one; `openssl genpkey -algorithm ed25519` keys work too)")
    key = load_private_key(sign_key)
    moment = parse_time(as_of, "--as-of") if as_of else None
    root = _globals(ctx, verbose)
    if reveal_owners and pseudonymize:
        raise InputError("--reveal-owners and --pseudonymize contradict each other")
    hidden = not reveal_owners
    service = root.service()
    with progress("reading the pinned blocks and writing the package…"):
        package = export(service, out_path, key, actor=root.principal(service), as_of=moment,
                         pseudonymize=hidden)
    manifest = json.loads(package.files["manifest.json"])
    summary = {"out": str(out_path), "chains": [
        {"name": c["name"], "block": c["block"]} for c in manifest["chains"]],
        "liabilities": manifest["liabilities"],
        "salt_file": f"{out_path}.owner-salt" if hidden else None,
        "exposed": [list(k) for k in package.exposed]}
    if as_json:
        _emit(summary)
    else:
        out.print(f"wrote {out_path}: {plural(len(manifest['chains']), 'chain')}, "
                  f"{plural(len(manifest['liabilities']), 'Merkle root')}", markup=False,
                  highlight=False)


@export_app.command("verify")
def verify_command(
    ctx: typer.Context,
    package: Annotated[Path, typer.Argument(help="Package directory or .zip.")],
    recheck: Annotated[bool, typer.Option(
        "--recheck", help="Also re-read every balance at the pinned blocks.")] = False,
    public_key: PublicKeyOpt = None, fingerprint: FingerprintOpt = None,
    as_json: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Check the signature (by a trusted signer: --public-key, --fingerprint or [export]
    trusted_keys; a valid signature by another key is UNTRUSTED), file hashes, the Merkle
    roots and totals, wallets.csv against allocations.csv (and, with --recheck, the
    chain). Exit 0 only when all hold."""
    from daemon.export.package import read_package
    from daemon.export.verify import verify_package

    root = _globals(ctx, verbose)
    trusted = _trusted(root, public_key, fingerprint)
    files = read_package(package)
    problems = verify_package(files, trusted)
    if recheck and not problems:
        from daemon.export.service import recheck as recheck_chain

        # no store here (an auditor's machine): none is created; the chain is re-read from
        # the configured sources (core-rpc roll-backs need the store where there is one)
        with progress("re-reading the balances at the pinned blocks…"):
            problems = recheck_chain(root.service(or_memory=True), files)
    if as_json:
        _emit({"ok": not problems, "problems": problems})
    elif problems:
        for problem in problems:
            out.print(f"FAIL {problem}", highlight=False, markup=False, soft_wrap=True)
    else:
        out.print(f"{package}: intact (hashes, signature, roots, totals"
                  f"{', balances at the pinned blocks' if recheck else ''})", markup=False,
                  highlight=False)
    if problems:
        raise typer.Exit(EXIT_DISCREPANCY)


@export_app.command("proof")
def proof_command(
    ctx: typer.Context,
    package: Annotated[Path, typer.Argument(help="Package directory or .zip.")],
    owner: Annotated[str, typer.Option("--owner", help="The owner id.")],
    salt_file: Annotated[Path | None, typer.Option(
        "--salt-file", help="Pseudonymized packages: the salt (default: PACKAGE.owner-salt).")
    ] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Accepted for uniformity: the proofs are always JSON.")] = True,
    verbose: VerboseOpt = False,
) -> None:
    """Print the owner's inclusion proofs (JSON) against the package's Merkle roots, with
    the owner's secret when the package is pseudonymized: give it to that owner only."""
    from daemon.export.package import SALT_SUFFIX, read_package
    from daemon.export.verify import owner_proofs
    from daemon.rules.leaves import owner_secret

    _globals(ctx, verbose)
    files = read_package(package)
    salt = None
    if json.loads(files["manifest.json"]).get("pseudonymized"):
        path = salt_file or package.with_name(package.name + SALT_SUFFIX)
        try:
            salt = bytes.fromhex(path.read_text().strip())
        except (OSError, ValueError):
            raise InputError(f"--salt-file {path}: missing or not hex") from None
    proofs = owner_proofs(files, owner, salt)
    _emit({"owner": owner, "secret": owner_secret(salt, owner).hex(), "proofs": proofs}
          if salt is not None else {"owner": owner, "proofs": proofs})


@export_app.command("verify-proof")
def verify_proof_command(
    proof_file: Annotated[Path, typer.Argument(metavar="PROOF.json")],
    ctx: typer.Context,
    package: Annotated[Path | None, typer.Option(
        "--package", help="Check against this package's signed manifest roots.")] = None,
    public_key: PublicKeyOpt = None, fingerprint: FingerprintOpt = None,
    as_json: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Check inclusion proofs (one, or a list as `export proof` prints) against their
    root, or against a package's published root and total. Exit 0 only when all hold."""
    from daemon.export.package import read_package
    from daemon.export.verify import verify_package
    from daemon.rules.merkle import verify_proof

    _globals(ctx, verbose)
    try:
        loaded = json.loads(proof_file.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{proof_file}: not readable JSON ({type(exc).__name__})") from None
    owner_problems: list[str] = []
    if isinstance(loaded, dict) and "proofs" in loaded:  # what `export proof` prints
        owner_problems = _owner_check(loaded)
        loaded = loaded["proofs"]
    proofs = loaded if isinstance(loaded, list) else [loaded]
    roots: dict[tuple[str, str], dict[str, Any]] = {}
    problems: list[str] = list(owner_problems)
    if package is not None:
        files = read_package(package)
        problems += verify_package(files, _trusted(ctx.find_root().obj, public_key,
                                                   fingerprint))
        roots = {(r["chain"], r["asset"]): r
                 for r in json.loads(files["manifest.json"]).get("liabilities", [])}
    results = []
    for n, proof in enumerate(proofs):
        key = (proof.get("chain"), proof.get("asset")) if isinstance(proof, dict) else None
        root = roots.get(key) if key else None  # type: ignore[arg-type]
        reason: str | None
        if package is not None and root is None:
            result_ok, reason = False, "no root for its chain and asset in the package"
        else:
            result = verify_proof(proof, root["root"] if root else None,
                                  int(root["total"]) if root else None)
            result_ok, reason = result.ok, result.reason
        results.append({"proof": n, "ok": result_ok, "reason": reason})
        if not result_ok:
            problems.append(f"proof {n}: {reason}")
    if as_json:
        _emit({"ok": not problems, "proofs": results, "problems": problems})
    else:
        for problem in problems:
            out.print(f"FAIL {problem}", highlight=False, markup=False, soft_wrap=True)
        if not problems:
            out.print(f"{plural(len(proofs), 'proof')} verified"
                      + (" against the package's signed roots" if package else ""))
    if problems:
        raise typer.Exit(EXIT_DISCREPANCY)


def _owner_check(document: dict[str, Any]) -> list[str]:
    """With an owner's secret, every leaf must commit to the ref that owner's id and
    secret give (so that a leaf shown to two clients fails for one of them)."""
    from daemon.rules.leaves import checked_ref

    owner, secret, proofs = (document.get("owner"), document.get("secret"),
                             document.get("proofs"))
    if not isinstance(proofs, list):
        return ["proofs must be a list"]
    if secret is None:
        return []
    try:
        expected = checked_ref(bytes.fromhex(str(secret)), str(owner))
    except ValueError:
        return ["secret is not hex"]
    return [f"proof {n}: its leaf is not {owner}'s (owner_ref differs)"
            for n, proof in enumerate(proofs)
            if not isinstance(proof, dict) or not isinstance(proof.get("leaf"), dict)
            or proof["leaf"].get("owner_ref") != expected]


@keys_app.command("generate")
def keys_generate(
    ctx: typer.Context,
    key_path: Annotated[Path, typer.Option("--out", help="Where to write the private key.")],
    as_json: JsonOpt = False, verbose: VerboseOpt = False,
) -> None:
    """Write a new Ed25519 signing key (PEM, mode 0600) and its public key beside it
    (FILE.pub); print the public key and its fingerprint (what verifiers trust)."""
    from daemon.export.signing import generate_key

    _globals(ctx, verbose)
    made = generate_key(key_path)
    if as_json:
        _emit({"private_key_file": str(made.private), "public_key_file": str(made.public),
               "fingerprint": made.fingerprint, "public_key": made.public_pem})
        return
    sys.stdout.write(made.public_pem)
    sys.stdout.write(f"fingerprint: {made.fingerprint}\npublic key: {made.public}\n")
