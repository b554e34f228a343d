"""Who may talk to this node as a peer, and how a peer request is proven.

`TrustStore` answers which keys are trusted now: the keys `mirror keys trust` recorded
in the catalog plus `[peers] trust`, minus every revoked key (`mirror keys revoke` wins
over both). It re-reads the catalog at most every `REFRESH` seconds, so a trust or a
revocation made by the CLI while the daemon runs takes effect within that time.

`PeerAuth.check` admits a signed request (wire.py) only when: every header is present
and well formed (else 401 PeerUnsigned); its time is within `max_skew` of ours and not
before this process started (else 401 PeerStale: nonces are remembered in memory, so a
request signed before a restart could otherwise be replayed after it); the key is
trusted (403 PeerUntrusted) and not revoked (403 PeerRevoked); the signature verifies
over method, Host, path and query, body digest, time, nonce and this node's key as the
audience (only `hello` may be unaddressed) (401 PeerBadSignature);
and the nonce was not seen within the window (401 PeerReplay). The nonce is remembered
only after the signature verified, so nobody can burn a peer's nonces.

`sign_request` and `sign_response` make the other side of the same proofs.
"""

from __future__ import annotations

import logging
import os
from typing import Iterable

from mirror import keys
from mirror.catalog.meta import MetaCatalog
from mirror.clock import Clock
from mirror.errors import BadSignature, PeerRefused
from mirror.keys import NodeKey
from mirror.peers import wire

log = logging.getLogger("mirror.peers")

REFRESH = 2.0
# Nonces kept at most (a flood of valid requests from a trusted peer cannot grow it past this).
_MAX_NONCES = 200_000


class TrustStore:
    def __init__(self, meta: MetaCatalog, configured: Iterable[str], clock: Clock) -> None:
        self.meta = meta
        self.configured = frozenset(configured)
        self.clock = clock
        self._trusted: frozenset[str] = frozenset()
        self._revoked: frozenset[str] = frozenset()
        self._read_at = -1e18

    async def refresh(self, *, force: bool = False) -> None:
        now = self.clock.monotonic()
        if not force and now - self._read_at < REFRESH:
            return
        revoked = frozenset(await self.meta.revoked())
        self._trusted = (frozenset(await self.meta.trusted()) | self.configured) - revoked
        self._revoked = revoked
        self._read_at = now

    async def trusted(self) -> frozenset[str]:
        await self.refresh()
        return self._trusted

    async def revoked(self) -> frozenset[str]:
        await self.refresh()
        return self._revoked

    async def is_trusted(self, key: str) -> bool:
        return key in await self.trusted()


class PeerAuth:
    def __init__(self, trust: TrustStore, clock: Clock, max_skew: float, own_key: str) -> None:
        self.own_key = own_key
        self.trust = trust
        self.clock = clock
        self.max_skew = max_skew
        self.started = clock.now()
        self._nonces: dict[str, float] = {}

    async def check(self, method: str, host: str, path_qs: str, headers: "dict[str, str] | object", body: bytes,
                    *, unaddressed: bool = False) -> tuple[str, str]:
        """Admit a request or raise PeerRefused. Returns (peer key, nonce).
        `unaddressed` also admits a request signed without an audience (hello)."""
        get = headers.get  # type: ignore[attr-defined]
        key, ts, nonce, sig = get(wire.H_KEY, ""), get(wire.H_TIME, ""), get(wire.H_NONCE, ""), get(wire.H_SIG, "")
        if not (key and ts and nonce and sig):
            raise PeerRefused("peer API: the request is not signed (peers answer only peers)", code="PeerUnsigned")
        if not (wire.KEY_RE.fullmatch(key) and wire.TIME_RE.fullmatch(ts) and wire.NONCE_RE.fullmatch(nonce) and wire.SIG_RE.fullmatch(sig)):
            raise PeerRefused("peer API: malformed signature headers", code="PeerUnsigned")
        now = self.clock.now()
        t = int(ts)
        if abs(now - t) > self.max_skew:
            raise PeerRefused(f"peer API: request time is {now - t:+.0f}s off this node's clock (max {self.max_skew:.0f}s)", code="PeerStale")
        if t < self.started - 2:
            raise PeerRefused("peer API: request signed before this node started", code="PeerStale")
        if key in await self.trust.revoked():
            raise PeerRefused(f"peer API: key {key[:16]} is revoked", status=403, code="PeerRevoked")
        if not await self.trust.is_trusted(key):
            raise PeerRefused(f"peer API: key {key[:16]} is not trusted here (mirror keys trust)", status=403, code="PeerUntrusted")
        audiences = [self.own_key, ""] if unaddressed else [self.own_key]
        for audience in audiences:
            try:
                keys.verify(key, bytes.fromhex(sig), wire.request_signing_bytes(method, host, path_qs, body, t, nonce, audience))
                break
            except BadSignature:
                continue
        else:
            raise PeerRefused("peer API: the signature does not verify (or the request is meant for another node)",
                              code="PeerBadSignature")
        mono = self.clock.monotonic()
        if nonce in self._nonces:
            raise PeerRefused("peer API: replayed request (nonce seen before)", code="PeerReplay")
        if len(self._nonces) >= _MAX_NONCES:
            self._nonces = {n: exp for n, exp in self._nonces.items() if exp > mono}
            if len(self._nonces) >= _MAX_NONCES:
                raise PeerRefused("peer API: too many requests in the skew window", status=429, code="PeerBusy")
        self._nonces[nonce] = mono + 2 * self.max_skew + 5
        return key, nonce


def sign_request(key: NodeKey, method: str, host: str, path_qs: str, body: bytes, now: float, to: str = "") -> dict[str, str]:
    """Signature headers of a request meant for the node whose key is `to` ("" for hello)."""
    ts = int(now)
    nonce = os.urandom(16).hex()
    sig = key.sign(wire.request_signing_bytes(method, host, path_qs, body, ts, nonce, to))
    return {wire.H_KEY: key.public_hex, wire.H_TIME: str(ts), wire.H_NONCE: nonce, wire.H_SIG: sig.hex()}


def sign_response(key: NodeKey, nonce: str, body: bytes) -> dict[str, str]:
    return {wire.H_KEY: key.public_hex, wire.H_SIG: key.sign(wire.response_signing_bytes(nonce, body)).hex()}


def check_response(headers: "dict[str, str] | object", nonce: str, body: bytes) -> str:
    """The responder's key, after checking its signature of this answer (BadSignature)."""
    get = headers.get  # type: ignore[attr-defined]
    key, sig = get(wire.H_KEY, ""), get(wire.H_SIG, "")
    if not wire.KEY_RE.fullmatch(key) or not wire.SIG_RE.fullmatch(sig):
        raise BadSignature("peer answer is not signed")
    keys.verify(key, bytes.fromhex(sig), wire.response_signing_bytes(nonce, body))
    return str(key)
