"""Two-factor codes for admin tokens (RFC 6238 TOTP, by `pyotp`).

`enroll` makes a seed for a token and returns it once (with an otpauth:// URI for an
authenticator app); the catalog keeps it sealed with AES-GCM under a key derived from
the node key (keys.py `derive`), so the data directory never holds it in clear. `check`
accepts the current code (and one step either side, for clock drift) and refuses a code
already used by that token (one code, one request).
"""

from __future__ import annotations

import os

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mirror.catalog.tokens import TokenCatalog, TokenRow
from mirror.clock import Clock
from mirror.errors import AccessDenied
from mirror.keys import NodeKey

_STEP = 30


class Totp:
    def __init__(self, catalog: TokenCatalog, key: NodeKey, clock: Clock) -> None:
        self.catalog = catalog
        self._aead = AESGCM(key.derive(b"totp seal v1"))
        self.clock = clock
        self._last: dict[str, int] = {}

    def _seal(self, token_id: str, secret: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, secret.encode(), token_id.encode())

    def _open(self, row: TokenRow) -> str:
        assert row.totp_secret is not None
        try:
            return self._aead.decrypt(row.totp_secret[:12], row.totp_secret[12:], row.id.encode()).decode()
        except InvalidTag:
            raise AccessDenied(f"the two-factor seed of {row.name!r} cannot be read with this node key; enroll again",
                               status=401, code="TotpRequired") from None

    async def enroll(self, row: TokenRow) -> tuple[str, str]:
        """(seed in base32, otpauth URI) for `row`; shown once, stored sealed."""
        secret = pyotp.random_base32()
        await self.catalog.set_totp(row.id, self._seal(row.id, secret))
        uri = pyotp.TOTP(secret).provisioning_uri(name=row.name, issuer_name="model-mirror")
        return secret, uri

    def check(self, row: TokenRow, code: str | None) -> None:
        """Raise AccessDenied (401 TotpRequired) unless `code` is a fresh, current code."""
        if row.totp_secret is None:
            raise AccessDenied(f"token {row.name!r} has no two-factor seed: `mirror token totp-enroll {row.name}`",
                               status=401, code="TotpRequired")
        if not code:
            raise AccessDenied("this admin action needs a current two-factor code in X-Mirror-OTP", status=401, code="TotpRequired")
        totp = pyotp.TOTP(self._open(row))
        now = self.clock.now()
        step = int(now // _STEP)
        for s in (step, step - 1, step + 1):
            if code.isascii() and code.isdigit() and totp.at(s * _STEP) == code:
                if self._last.get(row.id, -1) >= s:
                    raise AccessDenied("this two-factor code was used already; wait for the next one", status=401, code="TotpRequired")
                self._last[row.id] = s
                return
        raise AccessDenied("wrong or expired two-factor code (X-Mirror-OTP)", status=401, code="TotpRequired")
