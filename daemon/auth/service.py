"""Identity use cases: bootstrap the first admin, manage users and tokens, authenticate
tokens, passwords and sessions, and authorize (refusals audited). The CLI, the API and
the console call these; they only parse input and map errors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import structlog

from daemon.auth.policy import Permission, Principal, authorize, check_name, check_roles
from daemon.auth.secrets import hash_password, password_problem
from daemon.errors import Forbidden, InputError, Unauthenticated
from daemon.inputs.config import Settings
from daemon.store.identity import Identities, Lockout, SignedIn, TokenInfo, UserInfo

log = structlog.get_logger("segwatch")

BOOTSTRAP = Principal("bootstrap", frozenset({"admin"}), "bootstrap")
"""The actor of the first admin's creation on a store without users."""
MAX_TOKEN_DAYS = 3650


class IdentityService:
    """Who may act, and as whom."""

    def __init__(self, settings: Settings, identities: Identities,
                 clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self.store = identities
        self._clock = clock

    @property
    def lockout(self) -> Lockout:
        auth = self.settings.auth
        return Lockout(auth.login_attempts, auth.lockout_minutes)

    def require(self, principal: Principal | None, permission: Permission, what: str,
                discrepancy_id: int | None = None) -> Principal:
        """Return `principal` if it may `permission`. Raises Unauthenticated without a
        principal, Forbidden (audited as `refused`) without the role."""
        if principal is None:
            raise Unauthenticated(f"{what} needs credentials (SEGWATCH_TOKEN, --token-file, "
                                  "or a signed-in session)")
        try:
            authorize(principal, permission,
                      allow_dual_role=self.settings.daemon.allow_dual_role)
        except Forbidden as exc:
            self.store.audit(principal.name, "refused",
                             {"permission": permission, "what": what, "via": principal.via,
                              "refusal": exc.user_message}, self._clock(), discrepancy_id)
            raise
        return principal

    # --- users --------------------------------------------------------------------------
    def add_user(self, actor: Principal | None, name: str, roles: Sequence[str],
                 password: str | None) -> Principal:
        """Create a local user; return the acting principal. Without credentials this is
        allowed once, on a store without users, for an admin (the bootstrap)."""
        check_name(name)
        wanted = check_roles(roles, allow_dual_role=self.settings.daemon.allow_dual_role)
        if password is not None and (problem := password_problem(password)):
            raise InputError(problem)
        digest = hash_password(password) if password is not None else None
        if actor is None:
            if "admin" not in wanted:
                raise Unauthenticated("adding a user needs an admin's token (SEGWATCH_TOKEN); "
                                      "on a new store the first user must be an admin")
            self.store.add_user(name, wanted, digest, "local", BOOTSTRAP.name, self._clock(),
                                only_if_empty=True)
            log.warning("first_admin_bootstrapped", user=name)
            return BOOTSTRAP
        self.require(actor, "admin", "adding a user")
        self.store.add_user(name, wanted, digest, "local", actor.name, self._clock())
        return actor

    def set_roles(self, actor: Principal | None, name: str, roles: Sequence[str]) -> None:
        """Replace a user's roles (admin)."""
        self.require(actor, "admin", "changing roles")
        wanted = check_roles(roles, allow_dual_role=self.settings.daemon.allow_dual_role)
        assert actor is not None
        self.store.set_roles(name, wanted, actor.name, self._clock())

    def set_password(self, actor: Principal | None, name: str, password: str) -> None:
        """Set a local account's password (admin)."""
        self.require(actor, "admin", "setting a password")
        if problem := password_problem(password):
            raise InputError(problem)
        assert actor is not None
        self.store.set_password(name, hash_password(password), actor.name, self._clock())

    def users(self, actor: Principal | None) -> list[UserInfo]:
        """Every user (admin)."""
        self.require(actor, "admin", "listing users")
        return self.store.users()

    def sync_declared(self) -> int:
        """Give the configuration's [[users]] their declared roles in the store."""
        declared = [(u.name, check_roles(u.roles, allow_dual_role=self.settings.daemon
                                         .allow_dual_role)) for u in self.settings.users
                    if u.roles]
        return self.store.sync(declared, self._clock()) if declared else 0

    # --- tokens -------------------------------------------------------------------------
    def create_token(self, actor: Principal | None, user: str, roles: Sequence[str] | None,
                     days: float | None) -> tuple[str, str]:
        """Create a token for `user` (admin); return (id, token), the token shown once."""
        self.require(actor, "admin", "creating a token")
        assert actor is not None
        if days is not None and not 0 < days <= MAX_TOKEN_DAYS:
            raise InputError(f"--expires: between 0 and {MAX_TOKEN_DAYS} days")
        if roles:
            check_roles(roles, allow_dual_role=True)
        now = self._clock()
        expires = now + timedelta(days=days) if days is not None else None
        return self.store.create_token(user, roles, expires, actor.name, now)

    def create_own_token(self, name: str, password: str, client: str,
                         roles: Sequence[str] | None, days: float | None) -> tuple[str, str]:
        """A user signs in with their local password and creates a token for themselves
        (the way the first admin gets one). Raises Unauthenticated (audited)."""
        me = self.store.password_principal(name[:128], password[:1024], client, self._clock(),
                                           self.lockout)
        if days is not None and not 0 < days <= MAX_TOKEN_DAYS:
            raise InputError(f"--expires: between 0 and {MAX_TOKEN_DAYS} days")
        now = self._clock()
        expires = now + timedelta(days=days) if days is not None else None
        return self.store.create_token(me.name, roles, expires, me.name, now)

    def revoke_token(self, actor: Principal | None, token_id: str) -> str:
        """Revoke a token at once (admin); return its user."""
        self.require(actor, "admin", "revoking a token")
        assert actor is not None
        return self.store.revoke_token(token_id, actor.name, self._clock())

    def tokens(self, actor: Principal | None, user: str | None = None) -> list[TokenInfo]:
        """Tokens, newest first (admin)."""
        self.require(actor, "admin", "listing tokens")
        return self.store.tokens(user)

    # --- authentication -----------------------------------------------------------------
    def from_token(self, token: str, client: str) -> Principal:
        """The principal of a bearer token. Raises Unauthenticated."""
        return self.store.token_principal(token[:200], client, self._clock())

    def sign_in(self, name: str, password: str, client: str) -> SignedIn:
        """Check a local password and start a web session. Raises Unauthenticated."""
        principal = self.store.password_principal(name[:128], password[:1024], client,
                                                  self._clock(), self.lockout)
        return self.store.start_session(principal, self.settings.auth.session_hours,
                                        self._clock())

    def oidc_sign_in(self, name: str, roles: frozenset[str], client: str) -> SignedIn:
        """Start a web session for a person the identity provider vouched for: the user
        (origin oidc) gets exactly the roles their claims map to (grants and revocations
        audited). Refused (audited) without a mapped role, or with maker and checker
        together unless allowed."""
        problem = None
        if not roles:
            problem = "no role is mapped from the identity provider's claims"
        elif {"maker", "checker"} <= roles and not self.settings.daemon.allow_dual_role:
            problem = "the claims map to both maker and checker"
        else:
            try:
                check_name(name)
            except InputError as exc:
                problem = exc.user_message
        if problem is not None:
            self.store.audit(name[:128] or "unknown", "sign_in_failed",
                             {"via": "oidc", "reason": problem, "client": client[:200]},
                             self._clock())
            raise Forbidden(f"sign-in refused: {problem}")
        self.store.sync([(name, sorted(roles))], self._clock(), origin="oidc")
        return self.store.start_session(Principal(name, roles, "oidc"),
                                        self.settings.auth.session_hours, self._clock())

    def from_session(self, cookie: str) -> tuple[Principal, str]:
        """The principal and CSRF token of a session cookie. Raises Unauthenticated."""
        return self.store.session_principal(cookie, self._clock())

    def sign_out(self, cookie: str) -> None:
        self.store.end_session(cookie, self._clock())
