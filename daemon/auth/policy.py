"""PURE authorization (SPEC §9): which roles may do what, as functions of values.

    viewer   read                      maker    propose
    auditor  read, export, verify      checker  approve, reject
    feeder   read, push ledgers and approved withdrawals
    admin    read, users, roles, tokens

No person holds both maker and checker unless `daemon.allow_dual_role` is set; a
checker never approves their own proposal (daemon/rules/workflow.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from daemon.errors import Forbidden, InputError

Role = Literal["viewer", "auditor", "maker", "checker", "feeder", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "auditor", "maker", "checker", "feeder", "admin")
Permission = Literal["read", "export", "verify", "propose", "approve", "reject", "feed",
                     "admin"]
GRANTS: Mapping[Permission, frozenset[str]] = {
    "read": frozenset(ROLES),
    "export": frozenset({"auditor"}),
    "verify": frozenset({"auditor"}),
    "propose": frozenset({"maker"}),
    "approve": frozenset({"checker"}),
    "reject": frozenset({"checker"}),
    "feed": frozenset({"feeder"}),
    "admin": frozenset({"admin"}),
}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
"""A user name: the owner-id alphabet without ':' (audit actors such as `config:`)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated actor: a user's name, the roles this credential carries, and how
    it signed in (`token:ID`, `password`, `oidc`, `bootstrap`)."""

    name: str
    roles: frozenset[str]
    via: str

    def may(self, permission: Permission) -> bool:
        """Whether any of the principal's roles grants `permission`."""
        return bool(self.roles & GRANTS[permission])


def authorize(principal: Principal, permission: Permission, *, allow_dual_role: bool) -> None:
    """Return if `principal` may `permission`; raise Forbidden with one line otherwise.

    A principal holding both maker and checker is refused every workflow action unless
    `allow_dual_role` (the role set was granted before the rule, or by hand in the store).
    """
    if not principal.may(permission):
        needed = " or ".join(sorted(GRANTS[permission]))
        raise Forbidden(f"user {principal.name!r} may not {permission}: it needs the "
                        f"{needed} role")
    if permission in ("propose", "approve", "reject") and not allow_dual_role and \
            {"maker", "checker"} <= principal.roles:
        raise Forbidden(f"user {principal.name!r} holds both maker and checker; maker-checker "
                        "needs two people (daemon.allow_dual_role is off)")


def check_roles(roles: Iterable[str], *, allow_dual_role: bool) -> tuple[str, ...]:
    """Validate a role set for a grant: known roles, not maker and checker together
    (unless allowed). Return them sorted in ROLES order. Raises InputError."""
    wanted = set(roles)
    unknown = sorted(wanted - set(ROLES))
    if unknown:
        raise InputError(f"unknown role {unknown[0]!r} (one of: {', '.join(ROLES)})")
    if not wanted:
        raise InputError("at least one role is needed (--role)")
    if {"maker", "checker"} <= wanted and not allow_dual_role:
        raise InputError("a user may not hold both maker and checker "
                         "(set daemon.allow_dual_role = true to allow it)")
    return tuple(r for r in ROLES if r in wanted)


def check_name(name: str) -> str:
    """Return `name` if it is a valid user name; raise InputError otherwise."""
    if not NAME.fullmatch(name):
        raise InputError(f"invalid user name {name[:40]!r} (letters, digits and ._@-, "
                         "at most 128, starting with a letter or digit)")
    return name


def encode_roles(roles: Iterable[str]) -> str:
    """The stored form of a role set."""
    return ",".join(r for r in ROLES if r in set(roles))


def decode_roles(text: str) -> frozenset[str]:
    """The role set of a stored value (unknown names dropped)."""
    return frozenset(r for r in text.split(",") if r in ROLES)
