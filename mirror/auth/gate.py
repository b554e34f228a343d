"""The gate: one decision per request, before any handler runs (and the same for CLI
actions). In order:

1. who: a bearer token starting `mm_` is a mirror token (auth/tokens.py): it sets the
   caller's name, role and grants, and is never passed upstream. Any other bearer token
   is the caller's Hub token, passed upstream as before; no token is `anonymous`;
2. may this role do this action at all (auth/permissions.py; default deny). Without a
   token where one is needed: 401 TokenRequired; with one that lacks the right: 403;
3. for repo actions: the repo rules (deny/allow: 403 RepoDenied), a developer's grants
   (403 AccessDenied), local-only namespaces (the caller is marked `offline`: nothing
   for that repo goes upstream), and an admin's service-token grant (`mirror grant`):
   the caller's upstream credential becomes the service token for that repo only;
4. two-factor: with `[auth] admin_totp`, a state-changing admin action needs a fresh
   TOTP code (auth/totp.py).

Every refusal is audited (action `auth.denied`) with the caller's name, never a secret.
"""

from __future__ import annotations

import dataclasses
import logging

from mirror.audit.log import AuditLog
from mirror.auth.permissions import SCOPED, allowed
from mirror.auth.policy import RepoPolicy, matches
from mirror.auth.tokens import TokenStore, looks_like_mirror_token
from mirror.auth.totp import Totp
from mirror.caller import Caller
from mirror.catalog.tokens import TokenCatalog, TokenRow
from mirror.clock import Clock
from mirror.config import AuthConfig
from mirror.errors import AccessDenied, InvalidToken, MirrorError
from mirror.model import RepoKey

log = logging.getLogger("mirror.auth")

_GRANTS_REFRESH = 2.0


class Gate:
    def __init__(self, config: AuthConfig, tokens: TokenStore, totp: Totp, policy: RepoPolicy, catalog: TokenCatalog,
                 audit: AuditLog, clock: Clock, service_token: str | None = None) -> None:
        self.config = config
        self.tokens = tokens
        self.totp = totp
        self.policy = policy
        self.catalog = catalog
        self.audit = audit
        self.clock = clock
        self.service_token = service_token
        self._grants: list[tuple[str, str]] = []
        self._read_at = -1e18

    async def admit(self, caller: Caller, action: str, key: RepoKey | None = None, *, target: str = "",
                    state_changing: bool = False, otp: str | None = None) -> Caller:
        """The caller as the rest of the request sees it, or MirrorError (audited)."""
        try:
            return await self._admit(caller, action, key, state_changing, otp)
        except MirrorError as exc:
            self.audit.record(caller.actor if not looks_like_mirror_token(caller.hub_token) else "token:invalid",
                              "auth.denied", target or (str(key) if key else ""), "denied",
                              permission=action, reason=exc.message, address=caller.address)
            raise

    async def _admit(self, caller: Caller, action: str, key: RepoKey | None, state_changing: bool, otp: str | None) -> Caller:
        row: TokenRow | None = None
        if looks_like_mirror_token(caller.hub_token):
            row = await self.tokens.authenticate(caller.hub_token or "")
            caller = dataclasses.replace(caller, hub_token=None, principal=row.name, role=row.role, grants=row.grants,
                                         token_id=row.id)
        if action == "peer.api":
            return caller  # peers prove themselves by key (peers/auth.py), not by token
        if not allowed(caller.role, action, self.config):
            if caller.role == "anonymous":
                raise InvalidToken("this mirror needs a mirror token (Authorization: Bearer mm_..., or HF_TOKEN)",
                                   code="TokenRequired")
            raise AccessDenied(f"{caller.role} {caller.principal!r} may not {action}",
                               hub_code="GatedRepo" if action in SCOPED else None)
        if key is not None and action in SCOPED:
            await self._refresh()
            why = self.policy.refusal(key)
            if why:
                raise AccessDenied(why, code="RepoDenied", hub_code="GatedRepo")
            if caller.role == "developer" and not self.policy.in_grants(caller.grants, key):
                raise AccessDenied(f"{key} is outside the grants of token {caller.principal!r}", hub_code="GatedRepo")
            if self.policy.local_only(key):
                caller = dataclasses.replace(caller, offline=True)
            elif self.service_token and await self._granted(key, caller):
                caller = dataclasses.replace(caller, hub_token=self.service_token)
        if state_changing and self.config.admin_totp and row is not None and row.role == "admin":
            self.totp.check(row, otp)
        return caller

    async def _refresh(self) -> None:
        """Grants and run-time local-only namespaces, re-read every few seconds (the CLI
        changes them in another process)."""
        now = self.clock.monotonic()
        if now - self._read_at >= _GRANTS_REFRESH:
            self._read_at = now  # first: the requests arriving during the reads do not read again
            self._grants = [(repo, grantee) for repo, grantee, _at, _by in await self.catalog.grants()]
            self.policy.set_local(await self.catalog.local_namespaces())

    async def _granted(self, key: RepoKey, caller: Caller) -> bool:
        """Whether an admin granted the service token for `key` to this caller."""
        if not caller.principal:
            return False
        who = {f"role:{caller.role}", f"token:{caller.principal}"}
        return any(grantee in who and matches(repo, key) for repo, grantee in self._grants)
