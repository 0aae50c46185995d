"""The dependency audit's policy (scripts/audit_deps.py, run by `make test`): a known
vulnerability fails; an unreachable vulnerability database does not fail the build but is
never reported as "no known vulnerabilities"; a broken run fails."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).parents[2] / "scripts" / "audit_deps.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_deps", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


AUDIT = load()


def test_a_known_vulnerability_fails_naming_it() -> None:
    verdict = AUDIT.judge({"dependencies": [
        {"name": "jinja2", "version": "2.10", "vulns": [
            {"id": "PYSEC-2019-217", "fix_versions": ["2.10.1"]}]},
        {"name": "httpx", "version": "0.28.1", "vulns": []}]})
    assert verdict.code == 1
    assert verdict.lines == ["VULNERABLE jinja2 2.10: PYSEC-2019-217 (fixed in 2.10.1)"]


def test_an_unreachable_database_passes_but_says_nothing_was_audited() -> None:
    """What pip-audit reports here (the registry serves no PyPI JSON API): every release
    skipped, exit 0. The verdict passes the build and says they were NOT audited; it never
    claims 'no known vulnerability'."""
    verdict = AUDIT.judge({"dependencies": [
        {"name": n, "skip_reason": f"Dependency not found on PyPI and could not be audited: "
                                   f"{n} (1.0)"} for n in ("httpx", "typer")], "fixes": []})
    assert verdict.code == 0
    assert "NOT audited" in verdict.lines[0] and "2 of 2" in verdict.lines[0]
    assert not any("no known vulnerability" in line for line in verdict.lines)


def test_partly_audited_reports_both_and_vulnerabilities_still_fail() -> None:
    report = {"dependencies": [
        {"name": "a", "version": "1", "vulns": []},
        {"name": "b", "skip_reason": "Dependency not found on PyPI and could not be audited"},
        {"name": "c", "version": "2", "vulns": [{"id": "GHSA-x", "fix_versions": []}]}]}
    verdict = AUDIT.judge(report)
    assert verdict.code == 1 and "VULNERABLE c 2: GHSA-x (fixed in no fixed release)" in \
        verdict.lines
    report["dependencies"].pop()
    verdict = AUDIT.judge(report)
    assert verdict.code == 0
    assert verdict.lines[-1] == ("dependency audit: 1 of 2 pinned releases audited, no known "
                                 "vulnerability")


def test_a_network_error_passes_and_any_other_error_fails() -> None:
    down = AUDIT.judge_failure("requests.exceptions.ConnectionError: Max retries exceeded")
    assert down.code == 0 and "unreachable" in down.lines[0]
    broken = AUDIT.judge_failure("ERROR: requirement file: invalid hash")
    assert broken.code == 2 and "invalid hash" in broken.lines[0]
    assert AUDIT.judge({"nothing": []}).code == 2
