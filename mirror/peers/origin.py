"""The peer origin: a miss filled from other mirror nodes before upstream.

Asked by the Fetcher before `UpstreamOrigin` (resolve/origin.py: the contract). For one
file it:

1. asks every usable peer at once whether it holds the file or is filling it (`have`,
   one short request each: a dead peer costs at most `peers.timeout`);
2. from a peer that holds it, takes the signed manifest and checks it before any chunk is
   asked for: signed by a trusted, unrevoked key, bound to the identity asked for, of
   the listed size (threat-model P2, P3); then fetches the chunks it lacks from
   `sink.offset` on, in batches spread over the holders by rendezvous hashing, several
   batches in flight, each chunk decoded with the bomb-proof codec and checked against
   its blake3 id before a byte of it is written (P1, P5). Chunks this node holds
   already (shared with another file) are read locally. A holder that fails a batch is
   replaced by the next one for that batch; a batch no holder delivers comes from
   upstream as one Range of the file (`ranges`), checked against the same chunk ids,
   and the peers go on with the next batches;
3. otherwise, for a public repo, follows a peer that is fetching the file from upstream
   now, or asks the file's owner (rendezvous hashing over the live nodes) to fetch it
   and follows that fill as it grows, so a site fetches each file upstream once. When
   this node is the owner, it returns and upstream (the next origin) is asked.

Whatever it could not deliver, the next origin continues from `sink.offset`; the Fetcher
checks the whole file against its sha256 (or git sha1) in every case. A fill done on
behalf of a peer (`caller.peer`) never asks the peers (no cycles), and a node following
a peer for a file refuses to be followed for it (`is_following`, 409 in service.py), and
a node still asking its peers for a file does not report its fill of it as "filling"
(`is_asking`): only a fill fed from beyond the peers (upstream) is worth following, else
two cold nodes asked at once see each other filling, follow or refuse each other, and
both end up upstream.
Peers that fail cost strikes; peers that lie are marked down at once (membership.py).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import deque
from concurrent.futures import Executor
from typing import Any, Protocol

from mirror.caller import Caller
from mirror.catalog.repos import RepoCatalog
from mirror.config import PeersConfig
from mirror.errors import BadSignature, CorruptChunk, IntegrityError, MirrorError, PeerError, UpstreamError
from mirror.manifest import ChunkRef, Manifest
from mirror.peers.auth import TrustStore
from mirror.peers.client import PeerClient
from mirror.peers.membership import Peer, Peers, rendezvous_score
from mirror.peers.service import target_body
from mirror.resolve.origin import Sink, check_chunk
from mirror.resolve.spool import FillTarget
from mirror.store.chunkstore import ChunkStore, Staged

log = logging.getLogger("mirror.peers")

# Peer answers that say "not now" rather than "I am broken": no strike.
_NOT_A_FAULT = {404, 409, 429, 502, 503, 504, 507}


class RangeSource(Protocol):
    async def read_range(self, target: FillTarget, start: int, end: int, caller: Caller) -> bytes: ...


class PeerOrigin:
    name = "peer"

    def __init__(self, peers: Peers, client: PeerClient, trust: TrustStore, store: ChunkStore, repos: RepoCatalog,
                 executor: Executor, config: PeersConfig, ranges: RangeSource | None = None,
                 write_executor: Executor | None = None) -> None:
        """`ranges` (upstream) gives the byte ranges of chunks no peer delivers;
        `write_executor` stages received frames (I/O) while `executor` decodes (CPU)."""
        self.ranges = ranges
        self.write_executor = write_executor or executor
        self.peers = peers
        self.client = client
        self.trust = trust
        self.store = store
        self.repos = repos
        self.executor = executor
        self.batch = config.batch
        self.parallel = config.parallel
        self._following: dict[str, int] = {}
        self._asking: dict[str, int] = {}
        # Peers whose bytes went into a file being filled, until its hash is judged.
        self._suppliers: dict[str, dict[str, Peer]] = {}

    def judged(self, identity: str, hash_ok: bool) -> None:
        suppliers = self._suppliers.pop(identity, {})
        if hash_ok:
            return
        for peer in suppliers.values():
            log.error("integrity: the bytes peer %s (key %s) gave for %s do not match its hash; if this repeats, "
                      "`mirror keys revoke %s`", peer.url, peer.key[:16], identity, peer.key)
            self.peers.fault(peer, f"content of {identity} failed its hash", integrity=True)

    def _supplied(self, identity: str, peer: Peer) -> None:
        if len(self._suppliers) > 10_000:  # judged always pops; this only bounds a leak
            self._suppliers.clear()
        self._suppliers.setdefault(identity, {})[peer.url] = peer

    def is_following(self, identity: str) -> bool:
        return identity in self._following

    def is_asking(self, identity: str) -> bool:
        """True while a fill of `identity` is being fed by the peers (asking, copying
        chunks or following): its bytes come from the site, not from upstream."""
        return identity in self._asking

    async def fill(self, target: FillTarget, sink: Sink, caller: Caller) -> None:
        if caller.peer:
            return  # fetching for a peer: upstream only
        live = self.peers.usable()
        if not live or sink.offset >= target.size:
            return
        _enter(self._asking, target.identity)
        try:
            await self._fill(live, target, sink, caller)
        finally:
            _leave(self._asking, target.identity)

    async def _fill(self, live: list[Peer], target: FillTarget, sink: Sink, caller: Caller) -> None:
        answers = await self._have(live, target.identity)
        holders = [p for p, a in answers if a.get("state") == "stored"]
        if holders:
            await self._from_holders(holders, target, sink, caller)
            if sink.offset >= target.size:
                return
        row = await self.repos.get_repo(target.key)
        if row is not None and (row.private or row.gated):
            return  # a peer fetches upstream only anonymously: this node asks with its caller's token
        filling = [p for _w, p in sorted(((int(a.get("written") or 0), p) for p, a in answers if a.get("state") == "filling"),
                                          key=lambda t: -t[0])]
        owner = self.peers.owner(target.identity, [p for p in self.peers.usable()])
        candidates = filling + ([owner] if owner is not None and all(owner is not p for p in filling) else [])
        for peer in candidates[:2]:
            await self._follow(peer, target, sink)
            if sink.offset >= target.size:
                return

    # --- who has it ------------------------------------------------------------------------

    async def _have(self, live: list[Peer], identity: str) -> list[tuple[Peer, dict[str, Any]]]:
        async def ask(p: Peer) -> tuple[Peer, dict[str, Any]]:
            try:
                ids, _chunks = await self.client.have(p.url, p.key, [identity])
            except MirrorError as exc:
                self._fault(p, exc)
                return p, {}
            a = ids.get(identity)
            return p, a if isinstance(a, dict) else {}

        return list(await asyncio.gather(*(ask(p) for p in live)))

    def _fault(self, peer: Peer, exc: MirrorError) -> None:
        if isinstance(exc, PeerError) and exc.peer_status in _NOT_A_FAULT:
            return
        self.peers.fault(peer, exc.message, integrity=isinstance(exc, IntegrityError))

    # --- from holders: manifest, then chunks ---------------------------------------------------

    async def _manifest(self, holders: list[Peer], target: FillTarget) -> Manifest | None:
        for p in sorted(holders, key=lambda p: p.latency_ms or 0.0):
            try:
                man = await self.client.manifest(p.url, p.key, target.identity, trusted=await self.trust.trusted(),
                                                 size=target.size)
                # Chunks are checked one by one against this manifest: if the file then
                # fails its hash, the manifest lied (a trusted key signed other content).
                self._supplied(target.identity, p)
                return man
            except BadSignature as exc:
                log.error("integrity: peer %s sent a manifest that is refused: %s", p.url, exc.message)
                self._fault(p, exc)
            except MirrorError as exc:
                self._fault(p, exc)
        return None

    async def _from_holders(self, holders: list[Peer], target: FillTarget, sink: Sink, caller: Caller) -> None:
        man = await self._manifest(holders, target)
        if man is None:
            return
        start = sink.offset
        offsets = man.offsets()
        first = bisect.bisect_right(offsets, start) - 1
        skip = start - offsets[first]
        refs = man.chunks[first:]
        batches = [refs[i:i + self.batch] for i in range(0, len(refs), self.batch)]
        starts = [offsets[first + i] for i in range(0, len(refs), self.batch)]
        good = [p for p in holders if p.state == "up"]
        window: deque[asyncio.Task[list[Any]]] = deque()
        nxt = 0
        # A whole file from peers is kept as the frames received (offered to the fill:
        # no cutting and compressing again); staging runs beside the stream.
        staging: list[asyncio.Future[Staged]] | None = [] if sink.keeps and start == 0 else None
        loop = asyncio.get_running_loop()
        try:
            while nxt < len(batches) or window:
                while nxt < len(batches) and len(window) < self.parallel:
                    window.append(asyncio.ensure_future(self._batch(batches[nxt], good)))
                    nxt += 1
                done = nxt - len(window)
                try:
                    raws = await window.popleft()
                except MirrorError as exc:
                    if not any(p.state == "up" for p in good):
                        log.info("no peer left to deliver %s past %d/%d bytes (%s); going on upstream", target.entry.path,
                                 sink.offset, target.size, exc.message)
                        return  # the rest of the file in one upstream request
                    raws = await self._upstream_batch(batches[done], starts[done], target, caller, exc)
                    if raws is None:
                        return
                    staging = self._unstage(staging)  # raw bytes, no frames: the fill cuts its spool
                for ref, (raw, frame) in zip(batches[done], raws):
                    if staging is not None and frame is not None:
                        staging.append(loop.run_in_executor(self.write_executor, self.store.stage_verified, ref.chunk_id,
                                                            ref.length, frame))
                    if skip:
                        raw, skip = memoryview(raw)[skip:], 0
                    await sink.write(raw)
            if staging is not None and sink.offset >= target.size:
                sink.offer(man.chunks, list(await asyncio.gather(*staging)))
                staging = None
        finally:
            for t in window:
                t.cancel()
            if window:
                await asyncio.gather(*window, return_exceptions=True)
            self._unstage(staging)

    def _unstage(self, staging: "list[asyncio.Future[Staged]] | None") -> None:
        """Drop frames staged for an offer that will not be made."""
        for fut in staging or ():
            fut.add_done_callback(lambda f: f.cancelled() or f.exception() or self.store.discard([f.result()]))
        return None

    async def _upstream_batch(self, refs: tuple[ChunkRef, ...], start: int, target: FillTarget, caller: Caller,
                              why: MirrorError) -> list[Any] | None:
        """The chunks of a batch no peer delivered, as one upstream Range, each checked
        against its id; None when upstream cannot give them either."""
        end = start + sum(c.length for c in refs)
        log.info("peers could not deliver bytes %d-%d of %s (%s); asking upstream for that range", start, end, target.entry.path,
                 why.message)
        if self.ranges is None:
            return None
        try:
            data = await self.ranges.read_range(target, start, end, caller)
        except MirrorError as exc:
            log.info("upstream range of %s failed too (%s); going on upstream", target.entry.path, exc.message)
            return None
        view, out, pos = memoryview(data), [], 0  # (raw, no frame) per chunk
        loop = asyncio.get_running_loop()
        for c in refs:
            piece = view[pos:pos + c.length]
            pos += c.length
            try:
                await loop.run_in_executor(self.executor, check_chunk, c.chunk_id, piece)
            except IntegrityError as exc:
                log.error("integrity: upstream range of %s: %s", target.entry.path, exc.message)
                return None
            out.append((piece, None))
        return out

    async def _batch(self, refs: tuple[ChunkRef, ...] | list[ChunkRef], holders: list[Peer]) -> list[Any]:
        """(raw bytes, frame received or None) of each of `refs`, checked against its id:
        local ones read here, the rest from the holders, best by rendezvous first."""
        loop = asyncio.get_running_loop()
        out: dict[str, Any] = {}
        local = await loop.run_in_executor(self.executor, lambda: [c for c in refs if self.store.has_hot(c.chunk_id)])
        for c in local:
            try:
                out[c.chunk_id] = (await loop.run_in_executor(self.executor, self.store.read, c.chunk_id, c.length), None)
            except MirrorError:
                pass  # rotten or gone: the peers give it
        wanted = [c for c in refs if c.chunk_id not in out]
        if wanted:
            lengths = {c.chunk_id: c.length for c in wanted}
            ids = list(dict.fromkeys(c.chunk_id for c in wanted))
            order = sorted((p for p in holders if p.state == "up"), key=lambda p: rendezvous_score(ids[0], p.key), reverse=True)
            error: MirrorError = PeerError("no peer holds these chunks")
            for p in order:
                try:
                    got = await self._fetch(p, ids, lengths)
                except MirrorError as exc:
                    if isinstance(exc, IntegrityError):
                        log.error("integrity: peer %s: %s", p.url, exc.message)
                    self._fault(p, exc)
                    error = exc
                    continue
                out.update(got)
                break
            else:
                raise error
        return [out[c.chunk_id] for c in refs]

    async def _fetch(self, peer: Peer, ids: list[str], lengths: dict[str, int]) -> dict[str, Any]:
        # Each frame is decoded and checked in the pool while the next one is read off
        # the socket (the batch's frames decode in parallel); nothing is used before its
        # check passed.
        loop = asyncio.get_running_loop()
        pending: dict[str, tuple[asyncio.Future[Any], bytes]] = {}
        received = 0
        try:
            async for cid, frame in self.client.chunks(peer.url, peer.key, ids, sum(lengths.values())):
                if frame is None:
                    raise PeerError(f"peer {peer.url} lacks chunk {cid[:16]} of a file it holds")
                received += len(frame)
                pending[cid] = (loop.run_in_executor(self.executor, self.store.decode_frame, cid, frame, lengths[cid]), frame)
            got: dict[str, Any] = {}
            for cid, (fut, frame) in pending.items():
                try:
                    got[cid] = (await fut, frame)
                except CorruptChunk as exc:
                    raise CorruptChunk(cid, f"from peer {peer.url}: {exc.message}") from None
        finally:
            for fut, _frame in pending.values():
                if not fut.done():
                    fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.peers.ok(peer, received)
        return got

    # --- following a peer's fill -------------------------------------------------------------

    async def _follow(self, peer: Peer, target: FillTarget, sink: Sink) -> None:
        identity = target.identity
        _enter(self._following, identity)
        self._supplied(identity, peer)
        received = 0
        try:
            async for piece in self.client.follow(peer.url, peer.key, target_body(target), sink.offset):
                await sink.write(piece)
                received += len(piece)
            self.peers.ok(peer, received)
        except UpstreamError as exc:  # the sink refused bytes past the file's size
            self.peers.fault(peer, f"followed fill: {exc.message}", integrity=True)
        except PeerError as exc:
            log.info("following %s for %s stopped at %d/%d bytes: %s", peer.url, target.entry.path, sink.offset,
                     target.size, exc.message)
            self._fault(peer, exc)
        finally:
            _leave(self._following, identity)


def _enter(counts: dict[str, int], identity: str) -> None:
    counts[identity] = counts.get(identity, 0) + 1


def _leave(counts: dict[str, int], identity: str) -> None:
    n = counts[identity] - 1
    if n:
        counts[identity] = n
    else:
        del counts[identity]
