"""Audit use cases (SPEC §9): verify the log end to end — its hash chain, every stored
signed head, every discrepancy's state replayed against the table — and, given a head
recorded elsewhere (a package's manifest, an alert), that the log still extends it.

What each check catches:
- chain: an entry edited, deleted or reordered without recomputing the hashes;
- stored heads: an entry rewritten with every hash recomputed, or the newest entries
  deleted, below a head signed with the audit key (a key the database does not hold);
- replay: a discrepancy changed by a direct UPDATE (no audit entry);
- against a head kept outside the database: the same rewrite or truncation even when
  the stored heads were deleted as well.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from daemon.errors import InputError
from daemon.service import Service
from daemon.store.heads import Head, check_signature

log = structlog.get_logger("segwatch")


@dataclass
class AuditReport:
    """The outcome of `audit verify`: ok only when every check holds."""

    entries: int
    broken_seq: int | None
    chain_problem: str | None
    heads: int
    problems: list[str] = field(default_factory=list)
    against: Head | None = None

    @property
    def ok(self) -> bool:
        return self.broken_seq is None and not self.problems

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "verified": self.entries, "broken_seq": self.broken_seq,
                "reason": self.chain_problem, "heads_checked": self.heads,
                "problems": self.problems,
                "against": self.against.as_json() if self.against else None}


def verify(service: Service, public: Ed25519PublicKey | None = None,
           against: Head | None = None) -> AuditReport:
    """Run every check; `public` verifies the heads' signatures (default: the configured
    audit key's public half)."""
    if public is None and service.head_signer is not None:
        public = service.head_signer.public
    chain = service.store.verify_audit()
    heads, problems = service.store.verify_heads(public)
    problems += service.store.replay_audit()
    if against is not None:
        if against.signature and public is not None and (bad := check_signature(against,
                                                                                 public)):
            problems.append(f"--against: {bad}")
        if bad := service.store.extends(against):
            problems.append(f"--against: {bad}")
    return AuditReport(chain.checked, chain.broken_seq, chain.reason, heads, problems, against)


CHECKED = "audit_checked"
"""The audit action recording a periodic check's outcome (written when it changes)."""


def check(service: Service) -> AuditReport:
    """The daemon's periodic check: verify everything and, when the outcome differs from
    the last one recorded, append an `audit_checked` entry (ok, and the problems). While
    the newest says not ok, `status` reports every chain as unverified: a table edited
    behind the workflow's back is never reported compliant."""
    report = verify(service)
    problems = ([f"entry {report.broken_seq}: {report.chain_problem}"]
                if report.broken_seq is not None else []) + report.problems
    previous = service.store.audit_alarm()
    if (previous is None) != report.ok or (previous is not None and not report.ok
                                           and previous != problems[0]):
        service.identity.store.audit("engine", CHECKED,
                                     {"ok": report.ok, "problems": problems[:20],
                                      "entries": report.entries}, service.now())
        service.sign_head()
    if not report.ok:
        log.error("audit_mismatch", problems=problems[:5], count=len(problems))
    return report


def head_of(path: Path) -> Head:
    """The audit head a package (directory or .zip) or a manifest.json recorded. Raises
    InputError."""
    from daemon.export.package import read_package
    from daemon.export.signing import strict_json

    if path.is_file() and path.suffix == ".json":
        try:
            content = path.read_bytes()[:16 * 1024 * 1024]
        except OSError as exc:
            raise InputError(f"--against: cannot read {path}: {exc.strerror}") from None
    else:
        content = read_package(path).get("manifest.json", b"")
    try:
        manifest = strict_json(content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"--against: {path}: manifest.json is not JSON "
                         f"({type(exc).__name__})") from None
    doc = manifest.get("audit_head") if isinstance(manifest, dict) else None
    if doc is None:
        raise InputError(f"--against: {path}: the manifest records no audit head (made by "
                         "an earlier version)")
    try:
        return Head.from_json(doc)
    except ValueError as exc:
        raise InputError(f"--against: {path}: {exc}") from None


def head_json(doc: bytes) -> Head:
    """A head given as JSON (an alert's `audit_head`). Raises InputError."""
    try:
        return Head.from_json(json.loads(doc))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"audit head: {exc}") from None
