"""PURE authorization, tested without HTTP: which role may do what, the dual-role rule,
role grants, user names; the claim-to-role mapping of OpenID sign-in; the sign-in rate
limit."""

from __future__ import annotations

import pytest

from daemon.auth.oidc import map_roles, user_name
from daemon.auth.policy import GRANTS, ROLES, Principal, authorize, check_name, check_roles
from daemon.errors import Forbidden, InputError

ALLOWED = {
    "viewer": {"read"},
    "auditor": {"read", "export", "verify"},
    "maker": {"read", "propose"},
    "checker": {"read", "approve", "reject"},
    "feeder": {"read", "feed"},
    "admin": {"read", "admin"},
}


@pytest.mark.parametrize("role", ROLES)
def test_each_role_may_exactly_what_the_spec_says(role: str) -> None:
    """SPEC §9's table: every (role, permission) pair is allowed or Forbidden."""
    who = Principal("someone", frozenset({role}), "test")
    for permission in GRANTS:
        if permission in ALLOWED[role]:
            authorize(who, permission, allow_dual_role=False)
        else:
            with pytest.raises(Forbidden, match=f"may not {permission}"):
                authorize(who, permission, allow_dual_role=False)


def test_maker_and_checker_together_act_only_when_allowed() -> None:
    """A principal holding both is refused every workflow action by default; reads are
    not workflow actions."""
    both = Principal("cora", frozenset({"maker", "checker"}), "test")
    for permission in ("propose", "approve", "reject"):
        with pytest.raises(Forbidden, match="holds both maker and checker"):
            authorize(both, permission, allow_dual_role=False)  # type: ignore[arg-type]
        authorize(both, permission, allow_dual_role=True)  # type: ignore[arg-type]
    authorize(both, "read", allow_dual_role=False)


def test_grants_are_checked() -> None:
    """Unknown roles, no role, and maker with checker are refused; order is canonical."""
    assert check_roles(["admin", "viewer"], allow_dual_role=False) == ("viewer", "admin")
    with pytest.raises(InputError, match="unknown role 'root'"):
        check_roles(["root"], allow_dual_role=False)
    with pytest.raises(InputError, match="at least one role"):
        check_roles([], allow_dual_role=False)
    with pytest.raises(InputError, match="both maker and checker"):
        check_roles(["maker", "checker"], allow_dual_role=False)
    assert check_roles(["checker", "maker"], allow_dual_role=True) == ("maker", "checker")


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 129, "eve\n", "config:x", "<b>"])
def test_user_names_are_bounded_and_plain(name: str) -> None:
    """Names are shown in the audit log, the CLI and the console: no spaces, markup,
    control characters or the `config:`-style actor prefix."""
    with pytest.raises(InputError, match="invalid user name"):
        check_name(name)


def test_claims_map_to_roles_and_names() -> None:
    """A string or list claim maps through the configured table; unknown values map to
    nothing; a verified e-mail names the user, else the subject."""
    table = {"makers": ["maker"], "viewers": ["viewer"]}
    assert map_roles({"groups": ["makers", "other"]}, "groups", table) == {"maker"}
    assert map_roles({"groups": "viewers"}, "groups", table) == {"viewer"}
    assert map_roles({"groups": 7}, "groups", table) == frozenset()
    assert user_name({"sub": "123", "email": "a@b.c", "email_verified": True}) == "a@b.c"
    assert user_name({"sub": "123", "email": "a@b.c", "email_verified": False}) == "oidc-123"


def test_the_sign_in_rate_limit_forgets_attempts_older_than_its_window() -> None:
    """10 attempts a minute per address; an 11th waits until the oldest leaves the
    window; other addresses are not affected."""
    from daemon.api.security import RateLimit

    now = [0.0]
    limit = RateLimit(attempts=10, seconds=60, clock=lambda: now[0])
    assert all(limit.retry_after("a") is None for _ in range(10))
    assert limit.retry_after("a") == 60
    assert limit.retry_after("b") is None
    now[0] = 60.5
    assert limit.retry_after("a") is None
