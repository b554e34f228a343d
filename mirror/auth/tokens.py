"""Mirror tokens: `mm_<id>_<secret>`, shown once at creation, stored as a hash only.

The `mm_` prefix keeps a mirror token from ever being mistaken for a Hub token (`hf_`):
the edge never forwards one upstream. `<id>` (8 characters) names the token in lists
and audit records and finds its row; the row holds sha256 of the whole token, compared
in constant time. Look-ups are cached for `REFRESH` seconds, so a revocation by the CLI
reaches a running daemon within that time; last-use times are written in batches.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string

from mirror.catalog.tokens import TokenCatalog, TokenRow
from mirror.clock import Clock
from mirror.errors import AccessDenied, InvalidToken, UsageError
from mirror.auth.permissions import ROLES

PREFIX = "mm_"
TOKEN_RE = re.compile(r"mm_([a-z0-9]{8})_([A-Za-z0-9]{40})", re.ASCII)
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}", re.ASCII)
GRANT_RE = re.compile(r"[A-Za-z0-9._*?/\[\]-]{1,200}", re.ASCII)
REFRESH = 2.0
_ALPHABET = string.ascii_letters + string.digits


def token_hash(token: str) -> str:
    return hashlib.sha256(b"model-mirror token v1\0" + token.encode()).hexdigest()


def looks_like_mirror_token(text: str | None) -> bool:
    return bool(text) and text.startswith(PREFIX)  # type: ignore[union-attr]


class TokenStore:
    def __init__(self, catalog: TokenCatalog, clock: Clock) -> None:
        self.catalog = catalog
        self.clock = clock
        self._cache: dict[str, tuple[TokenRow | None, float]] = {}
        self._used: dict[str, float] = {}

    async def create(self, name: str, role: str, *, expires_in: float | None = None, grants: list[str] = []) -> tuple[str, TokenRow]:
        """A new token: (the token, shown once; its row)."""
        if not NAME_RE.fullmatch(name):
            raise UsageError("a token name is 1-64 letters, digits, '.', '_', '@' or '-'")
        if role not in ROLES:
            raise UsageError(f"role must be one of {', '.join(ROLES)}")
        for g in grants:
            if not GRANT_RE.fullmatch(g):
                raise UsageError(f"bad grant {g!r}: a repo, a namespace or a glob like 'org/*'")
        if await self.catalog.by_name(name) is not None:
            raise UsageError(f"a token named {name!r} exists already (revoke it or pick another name)")
        tid = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        token = f"{PREFIX}{tid}_{''.join(secrets.choice(_ALPHABET) for _ in range(40))}"
        expires_at = self.clock.now() + expires_in if expires_in else None
        await self.catalog.add(tid, name, role, token_hash(token), list(grants), expires_at)
        row = await self.catalog.by_id(tid)
        assert row is not None
        return token, row

    async def authenticate(self, token: str) -> TokenRow:
        """The row of a valid token; InvalidToken (401) otherwise, saying why."""
        m = TOKEN_RE.fullmatch(token)
        if not m:
            raise InvalidToken("malformed mirror token")
        row = await self._row(m.group(1))
        if row is None or not hmac.compare_digest(row.hash, token_hash(token)):
            raise InvalidToken("unknown mirror token")
        if row.revoked_at is not None:
            raise InvalidToken(f"mirror token {row.name!r} was revoked", code="TokenRevoked")
        if row.expires_at is not None and row.expires_at <= self.clock.now():
            raise InvalidToken(f"mirror token {row.name!r} has expired", code="TokenExpired")
        self._used[row.id] = self.clock.now()
        return row

    async def _row(self, tid: str) -> TokenRow | None:
        now = self.clock.monotonic()
        hit = self._cache.get(tid)
        if hit is not None and now - hit[1] < REFRESH:
            return hit[0]
        row = await self.catalog.by_id(tid)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[tid] = (row, now)
        return row

    async def find(self, name_or_id: str) -> TokenRow:
        row = await self.catalog.by_name(name_or_id) or await self.catalog.by_id(name_or_id)
        if row is None:
            raise UsageError(f"no token named {name_or_id!r} (mirror token list)")
        return row

    async def revoke(self, name_or_id: str, *, force: bool = False) -> TokenRow:
        row = await self.find(name_or_id)
        if row.role == "admin" and not force:
            admins = await self.catalog.active_admins(self.clock.now())
            if admins == [row.id]:
                raise AccessDenied(f"{row.name!r} is the last admin token; create another admin first (or --force)")
        await self.catalog.revoke(row.id)
        self._cache.pop(row.id, None)
        return row

    async def flush(self) -> None:
        used, self._used = self._used, {}
        await self.catalog.used(used)
