"""Membership: the peers this node knows, their health, and who owns a file.

Peers come from `[peers] nodes` (static) and from LAN discovery (discovery.py). Each is
checked with a signed `hello` every `health_interval` seconds: the answer names the
peer's key, proven by its signature of our nonce. A peer is *usable* when it answered,
its key is trusted and not revoked, and it is not serving a penalty:

- a transport failure (refused, timed out, a broken body) is a strike; three strikes in
  a row mark the peer down for `down_for` seconds (threat-model P1: "after 3 failures A
  is banned for a cooldown");
- an integrity failure (a chunk that does not match its id, a forged or wrong-target
  manifest) marks it down at once, and is logged;
- a down peer is re-checked with backoff (up to `MAX_BACKOFF` s); an answer clears it;
- a peer whose key is not trusted here is `untrusted`; one that answers 403 (it does not
  trust this node's key, or revoked it) is `refused`: neither is used, both are
  re-checked every `health_interval`, so a `mirror keys trust` on either side shows.

`owner(identity)` picks, by rendezvous hashing over this node and the usable peers, the
one node that fetches a file from upstream when several miss it at once.

The daemon writes a snapshot of the table to `<data_dir>/peers.json` after each round
(`mirror peers` reads it; `save`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mirror.clock import Clock
from mirror.config import PeersConfig
from mirror.errors import MirrorError
from mirror.peers.auth import TrustStore

log = logging.getLogger("mirror.peers")

MAX_BACKOFF = 60.0
STRIKES = 3
STATE_VERSION = 1


@dataclass
class Peer:
    url: str
    source: str  # "static" | "discovered"
    key: str = ""
    state: str = "unknown"  # unknown | up | down | untrusted (its key) | refused (it refuses ours) | self
    reason: str = ""
    latency_ms: float | None = None
    last_seen: float | None = None  # wall clock of the last good answer
    bytes_in: int = 0  # chunk and file bytes received from it
    bytes_out: int = 0  # bytes this node served to it
    failures: int = 0  # every failure so far
    strikes: int = 0  # failures in a row
    down_until: float = 0.0  # monotonic
    next_check: float = 0.0  # monotonic
    serial: int = 0
    _backoff: float = field(default=0.0, repr=False)

    def public(self, now_mono: float) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_") and k not in ("down_until", "next_check")}
        d["down_for"] = round(max(0.0, self.down_until - now_mono), 1)
        return d


def rendezvous_score(identity: str, key: str) -> bytes:
    return hashlib.sha256(f"{identity}\n{key}".encode()).digest()


class Peers:
    def __init__(self, config: PeersConfig, client: "Any", trust: TrustStore, own_key: str, clock: Clock, state_path: Path) -> None:
        """`client` is the PeerClient (client.py) used for health checks."""
        self.config = config
        self.client = client
        self.trust = trust
        self.own_key = own_key
        self.clock = clock
        self.state_path = state_path
        self.self_url = ""
        self._peers: dict[str, Peer] = {}
        self._changed = asyncio.Event()
        self._saved = -1e18
        for url in config.nodes:
            self.add(url, "static")

    # --- the table ------------------------------------------------------------------------

    def add(self, url: str, source: str) -> Peer:
        url = url.rstrip("/")
        peer = self._peers.get(url)
        if peer is None:
            peer = self._peers[url] = Peer(url, source)
            # Debug: every CLI command builds the table, and discovery logs what it finds.
            log.debug("peer %s added (%s)", url, source)
            self._changed.set()  # the health loop checks it now
        return peer

    def remove(self, url: str) -> None:
        peer = self._peers.get(url.rstrip("/"))
        if peer is not None and peer.source == "discovered":
            del self._peers[peer.url]
            log.info("peer %s left", peer.url)

    def all(self) -> list[Peer]:
        return list(self._peers.values())

    def usable(self) -> list[Peer]:
        now = self.clock.monotonic()
        return [p for p in self._peers.values() if p.state == "up" and p.key and now >= p.down_until]

    def by_key(self, key: str) -> Peer | None:
        for p in self._peers.values():
            if p.key == key:
                return p
        return None

    def owner(self, identity: str, among: list[Peer]) -> Peer | None:
        """The node that fetches `identity` upstream for the site: None when it is this
        node (rendezvous hashing over this node and `among`)."""
        best: tuple[bytes, Peer | None] = (rendezvous_score(identity, self.own_key), None)
        for p in among:
            score = rendezvous_score(identity, p.key)
            if score > best[0]:
                best = (score, p)
        return best[1]

    # --- outcomes -------------------------------------------------------------------------

    def ok(self, peer: Peer, received: int = 0) -> None:
        peer.strikes = 0
        peer.bytes_in += received
        peer.last_seen = self.clock.now()

    def fault(self, peer: Peer, why: str, *, integrity: bool = False) -> None:
        """Count a failure of `peer`; integrity failures mark it down at once."""
        peer.failures += 1
        peer.strikes += 1
        if integrity or peer.strikes >= STRIKES:
            peer.down_until = self.clock.monotonic() + self.config.down_for
            peer.state = "down"
            peer.reason = why
            peer.next_check = peer.down_until
            log.warning("peer %s marked down for %.0fs: %s", peer.url, self.config.down_for, why)
            self._changed.set()  # the health loop writes the snapshot now: `mirror peers` shows the ban
        else:
            log.info("peer %s failed (%d in a row): %s", peer.url, peer.strikes, why)

    def served(self, key: str, n: int) -> None:
        peer = self.by_key(key)
        if peer is not None:
            peer.bytes_out += n

    # --- health ---------------------------------------------------------------------------

    async def check(self, peer: Peer) -> None:
        now = self.clock.monotonic()
        try:
            hello = await self.client.hello(peer.url)
        except MirrorError as exc:
            if getattr(exc, "peer_status", 0) == 403:
                # Reachable, but it refuses this node's key (untrusted or revoked there):
                # not a transport failure, and no backoff (trusting us there fixes it).
                peer.next_check = now + self.config.health_interval
                if peer.state != "refused":
                    log.warning("peer %s refuses this node (key %s): %s; on it: mirror keys trust %s",
                                peer.url, self.own_key[:16], exc.message, self.own_key)
                peer.state, peer.reason = "refused", exc.message
                return
            peer.failures += 1
            peer.strikes += 1
            peer._backoff = min(max(peer._backoff * 2, self.config.health_interval), MAX_BACKOFF)
            peer.next_check = now + peer._backoff
            if peer.state != "down":
                log.warning("peer %s is down: %s", peer.url, exc.message)
            peer.state, peer.reason = "down", exc.message
            return
        peer.key, peer.serial = hello.public_key, hello.serial
        peer.latency_ms = round(hello.latency * 1000, 2)
        peer.last_seen = self.clock.now()
        peer.next_check = now + self.config.health_interval
        peer._backoff = 0.0
        if hello.public_key == self.own_key:
            peer.state, peer.reason = "self", "this node"
            return
        if not await self.trust.is_trusted(hello.public_key):
            if peer.state != "untrusted":
                log.warning("peer %s has key %s, which is not trusted here (mirror keys trust); not used", peer.url, hello.public_key)
            peer.state, peer.reason = "untrusted", "key not trusted"
            return
        if now < peer.down_until:
            return  # serving a penalty: stays down until it ends
        if peer.state != "up":
            log.info("peer %s is up (key %s, %.1f ms)", peer.url, hello.public_key[:16], peer.latency_ms)
            peer.strikes = 0
        # A prompt hello does not clear strikes a live peer earned on chunks or fills: a
        # peer that answers hello but trickles data would never reach STRIKES otherwise.
        peer.state, peer.reason = "up", ""

    async def check_all(self, *, due_only: bool = True) -> None:
        now = self.clock.monotonic()
        due = [p for p in self._peers.values() if not due_only or now >= p.next_check]
        if due:
            await asyncio.gather(*(self.check(p) for p in due))
        # A key revoked (or no longer trusted) takes effect now, even for a peer that is
        # down and not due for a check.
        trusted = await self.trust.trusted()
        for p in self._peers.values():
            if p.key and p.state in ("up", "down") and p.key not in trusted:
                log.warning("peer %s: key %s is no longer trusted; not used", p.url, p.key[:16])
                p.state, p.reason, p.next_check = "untrusted", "key not trusted", now + self.config.health_interval

    async def forever(self) -> None:
        """The health loop (a task of the node's scheduler)."""
        while True:
            try:
                await self.check_all()
                now = self.clock.monotonic()
                if self._peers and now - self._saved >= min(self.config.health_interval, 5.0):
                    self._saved = now
                    self.save()
            except Exception:
                log.exception("peer health round failed")
            self._changed.clear()
            try:
                async with asyncio.timeout(1.0):
                    await self._changed.wait()
            except TimeoutError:
                pass

    # --- state file -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        now = self.clock.monotonic()
        return {
            "version": STATE_VERSION,
            "written_at": self.clock.now(),
            "public_key": self.own_key,
            "url": self.self_url,
            "peers": [p.public(now) for p in sorted(self._peers.values(), key=lambda p: p.url)],
        }

    def save(self) -> None:
        tmp = self.state_path.with_suffix(f".{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.snapshot(), indent=1))
            os.replace(tmp, self.state_path)
        except OSError as exc:
            log.debug("cannot write %s: %s", self.state_path, exc)
