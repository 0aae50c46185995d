"""`make test`'s dependency audit: pip-audit over the hashed lock files, offline-safe.

    python scripts/audit_deps.py requirements-dev.lock [more.lock …]

pip-audit asks a vulnerability database (the PyPI JSON API) about every pinned
release. The policy:
- a known vulnerability in any pinned release fails (exit 1), naming it;
- a database that cannot be reached does not fail the build (a machine without the
  internet must still be able to run the tests), but the run says so loudly: how many
  releases were not audited and why. pip-audit itself reports a release the database
  does not answer for as "skipped" and exits 0, so that case is detected here, never
  taken for "no known vulnerabilities";
- anything else pip-audit cannot do (a malformed lock, pip-audit missing) fails (exit 2).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

UNREACHABLE_HINTS = ("not found on pypi", "connection", "timed out", "temporary failure",
                     "name or service not known", "max retries", "network is unreachable")
"""What pip-audit says when it could not ask the database (skip reasons, error text)."""
TIMEOUT_SECONDS = 300


@dataclass
class Verdict:
    code: int
    lines: list[str] = field(default_factory=list)


def judge(report: dict[str, Any]) -> Verdict:
    """The verdict on one pip-audit JSON report (`--format json`)."""
    dependencies = report.get("dependencies")
    if not isinstance(dependencies, list):
        return Verdict(2, ["pip-audit: the report has no dependency list"])
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if d.get("skip_reason")]
    unreachable = [d for d in skipped
                   if any(h in str(d["skip_reason"]).lower() for h in UNREACHABLE_HINTS)]
    audited = len(dependencies) - len(skipped)
    lines = []
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed release"
            lines.append(f"VULNERABLE {dep['name']} {dep.get('version', '?')}: "
                         f"{vuln.get('id', '?')} (fixed in {fixed})")
    if unreachable:
        lines.append(f"dependency audit: the vulnerability database did not answer for "
                     f"{len(unreachable)} of {len(dependencies)} pinned releases (offline or "
                     f"no PyPI JSON API here): those were NOT audited; not failing the build")
    other = [d for d in skipped if d not in unreachable]
    lines += [f"not audited: {d['name']}: {d['skip_reason']}" for d in other]
    if vulnerable:
        return Verdict(1, lines)
    if audited:
        lines.append(f"dependency audit: {audited} of {len(dependencies)} pinned releases "
                     "audited, no known vulnerability")
    return Verdict(0, lines)


def judge_failure(stderr: str) -> Verdict:
    """The verdict when pip-audit exited without a report."""
    text = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
    if any(h in stderr.lower() for h in UNREACHABLE_HINTS):
        return Verdict(0, [f"dependency audit: the vulnerability database is unreachable "
                           f"({text[:200]}): nothing was audited; not failing the build"])
    return Verdict(2, [f"dependency audit failed: {text[:300]}"])


def audit(lock: str) -> Verdict:
    command = [sys.executable, "-m", "pip_audit", "--disable-pip", "--requirement", lock,
               "--format", "json", "--progress-spinner", "off"]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, check=False,
                              timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return Verdict(0, [f"dependency audit: pip-audit did not finish within "
                           f"{TIMEOUT_SECONDS} s (the database is slow or unreachable): "
                           "not failing the build"])
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        return judge_failure(proc.stderr)
    return judge(report)


def main(locks: list[str]) -> int:
    if not locks:
        print("usage: audit_deps.py LOCK [LOCK …]", file=sys.stderr)
        return 2
    worst = 0
    for lock in locks:
        verdict = audit(lock)
        for line in verdict.lines:
            print(f"{lock}: {line}", file=sys.stderr if verdict.code else sys.stdout)
        worst = max(worst, verdict.code)
    return worst


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
