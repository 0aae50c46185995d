"""PURE: what changed between two ledger snapshots, line by line."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Key = tuple[str, str, str, str]
"""(chain, address, asset, owner)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One allocation added, removed or changed (amounts in base units; None: absent)."""

    chain: str
    address: str
    asset: str
    owner: str
    before: int | None
    after: int | None

    @property
    def kind(self) -> str:
        return "added" if self.before is None else "removed" if self.after is None \
            else "changed"

    def as_json(self) -> dict[str, Any]:
        return {"chain": self.chain, "address": self.address, "asset": self.asset,
                "owner": self.owner, "change": self.kind,
                "before": None if self.before is None else str(self.before),
                "after": None if self.after is None else str(self.after)}


def diff(before: Mapping[Key, int], after: Mapping[Key, int]) -> list[Change]:
    """Every allocation whose amount differs between the snapshots, in key order."""
    return [Change(*key, before.get(key), after.get(key))
            for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]
