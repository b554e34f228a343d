"""The bucket origin: a miss filled from a bucket other nodes share, before peers and upstream.

Asked by the Fetcher after the local store and before `PeerOrigin` and `UpstreamOrigin`
(resolve/origin.py: the contract), only with `[store] backend = "s3"`. For one file it:

1. reads the signed manifest another node published (`manifests/<algo>/<hex>`,
   mirror/s3/manifests.py): none, and it returns at once (one GET);
2. verifies it before any chunk is read, like a peer's (threat-model P2, P3): signed by
   a key the TrustStore trusts now (not revoked), bound to the identity asked for, of
   the listed size. A refused manifest is logged as an integrity event and the next
   origin is asked;
3. reads the chunks from `sink.offset` on through the chunk store (one GET each from
   the bucket, kept in the local cache), `parallel` in flight, each decoded with the
   bomb-proof codec and checked against its blake3 id in a worker before a byte of it
   is written. A chunk that is missing or rotten stops it: the next origin continues
   from `sink.offset`;
4. for a whole file (a fill that keeps its bytes), offers the manifest's chunks to the
   fill (`sink.offer`): they are stored already, so the fill records them instead of
   cutting, compressing and uploading the file again.

The Fetcher then checks the whole file against its sha256 (or git sha1); a file that
fails it after this origin delivered it names the manifest's signer in the log.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import deque
from concurrent.futures import Executor

from mirror.caller import Caller
from mirror.errors import BadSignature, BucketUnavailable, MirrorError
from mirror.manifest import ChunkRef, Manifest
from mirror.peers.auth import TrustStore
from mirror.resolve.origin import Sink
from mirror.resolve.spool import FillTarget
from mirror.s3.manifests import BucketManifests
from mirror.store.chunkstore import ChunkStore, Staged

log = logging.getLogger("mirror.s3")

PARALLEL = 8  # chunk reads in flight per fill


class BucketOrigin:
    name = "bucket"

    def __init__(self, manifests: BucketManifests, trust: TrustStore, store: ChunkStore, executor: Executor,
                 parallel: int = PARALLEL) -> None:
        self.manifests = manifests
        self.trust = trust
        self.store = store
        self.executor = executor
        self.parallel = max(1, parallel)
        self._signers: dict[str, str] = {}  # identity -> signer of the manifest used, until judged

    def judged(self, identity: str, hash_ok: bool) -> None:
        signer = self._signers.pop(identity, None)
        if signer is not None and not hash_ok:
            log.error("integrity: the bucket's manifest of %s, signed by %s, names content that fails its hash; "
                      "if this repeats, `mirror keys revoke %s`", identity, signer[:16], signer)

    async def fill(self, target: FillTarget, sink: Sink, caller: Caller) -> None:
        if sink.offset >= target.size:
            return
        man = await self._manifest(target)
        if man is None:
            return
        if len(self._signers) > 10_000:  # judged always pops; this only bounds a leak
            self._signers.clear()
        self._signers[target.identity] = man.signer
        await self._chunks(man, target, sink)

    async def _manifest(self, target: FillTarget) -> Manifest | None:
        loop = asyncio.get_running_loop()
        try:
            man = await loop.run_in_executor(self.executor, self.manifests.fetch, target.identity)
        except BucketUnavailable as exc:
            log.info("bucket origin: no manifest of %s (%s); asking the next origin", target.entry.path, exc.message)
            return None
        if man is None:
            return None
        try:
            man.verify(await self.trust.trusted(), expected_identity=target.identity)
            if man.size != target.size:
                raise BadSignature(f"manifest {target.identity} is for {man.size} bytes, the listing says {target.size}")
        except BadSignature as exc:
            log.error("integrity: the bucket's manifest of %s is refused: %s", target.entry.path, exc.message)
            return None
        return man

    async def _chunks(self, man: Manifest, target: FillTarget, sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        start = sink.offset
        offsets = man.offsets()
        first = bisect.bisect_right(offsets, start) - 1
        skip = start - offsets[first]
        refs = man.chunks[first:]
        window: deque[asyncio.Future[bytes]] = deque()
        nxt = 0
        try:
            while nxt < len(refs) or window:
                while nxt < len(refs) and len(window) < self.parallel:
                    c = refs[nxt]
                    window.append(loop.run_in_executor(self.executor, self._read, c))
                    nxt += 1
                try:
                    raw = await window.popleft()
                except MirrorError as exc:
                    log.info("bucket origin stopped at %d/%d bytes of %s: %s; asking the next origin", sink.offset,
                             target.size, target.entry.path, exc.message)
                    return
                piece = memoryview(raw)[skip:] if skip else raw
                skip = 0
                await sink.write(piece)  # type: ignore[arg-type]
        finally:
            for fut in window:
                fut.cancel()
            if window:
                await asyncio.gather(*window, return_exceptions=True)
        if start == 0 and sink.keeps and sink.offset >= target.size:
            staged = await loop.run_in_executor(self.executor, self._stored, man.chunks)
            sink.offer(man.chunks, staged)

    def _read(self, ref: ChunkRef) -> bytes:
        # Decoded with the bomb-proof codec and checked against its blake3 id.
        return bytes(self.store.read(ref.chunk_id, ref.length, verify=True))

    def _stored(self, chunks: tuple[ChunkRef, ...]) -> list[Staged]:
        """The chunks as stored already (nothing to write: `tmp` is None)."""
        return [Staged(c.chunk_id, c.length, 0, -1, None) for c in dict.fromkeys(chunks)]
