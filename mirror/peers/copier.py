"""One file content copied from a peer's store, verified end to end (`sync --from`).

The peer's manifest is checked before any chunk is asked for: signed by a trusted,
unrevoked key, bound to the identity asked for, of the listed size (threat-model P2,
P3). The chunks this node lacks then come in batches of `peers.batch`; each frame is
decoded with the bomb-proof codec and checked against its blake3 id (P1, P5), then
staged as received (no re-compression). The raw bytes of every chunk, fetched or
already here, feed the file's upstream hash (sha256 or git blob sha1) in file order, so
the content is committed (`Ingestor.adopt`, re-signed by this node) only when it is
exactly the file the listing names. Chunks are handled one at a time as they arrive:
memory stays at one chunk per file copied, whatever the file size. Any failure discards
what was staged.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass

from mirror.errors import (
    ChunkMissing,
    CorruptChunk,
    HashMismatch,
    PeerError,
)
from mirror.ingest import Ingestor, identity_hasher
from mirror.manifest import ChunkRef, Manifest
from mirror.peers.auth import TrustStore
from mirror.peers.client import PeerClient
from mirror.store.chunkstore import ChunkStore, Staged


@dataclass
class Copied:
    chunks_fetched: int = 0
    bytes_fetched: int = 0  # frame bytes received
    chunks_present: int = 0  # distinct chunks of the file this node held already


class FileCopier:
    def __init__(self, client: PeerClient, trust: TrustStore, store: ChunkStore, ingestor: Ingestor,
                 executor: Executor, batch: int) -> None:
        self.client = client
        self.trust = trust
        self.store = store
        self.ingestor = ingestor
        self.executor = executor
        self.batch = max(1, batch)

    async def copy(self, base: str, key: str, identity: str, size: int) -> Copied | None:
        """Copy content `identity` of `size` bytes from the peer at `base`; None when the
        peer does not hold it. Raises IntegrityError (a refused manifest, chunk or file
        hash) or PeerError; nothing is stored then."""
        try:
            man = await self.client.manifest(base, key, identity, trusted=await self.trust.trusted(), size=size)
        except PeerError as exc:
            if exc.peer_status == 404:
                return None
            raise
        job = _Copy(self, base, key, man)
        try:
            await job.run()
        except BaseException:
            self.store.discard(list(job.staged.values()))
            raise
        await self.ingestor.adopt(list(job.staged.values()), [man])
        return job.result


class _Copy:
    """The state of one copy: what is staged, the running hash, the counts."""

    def __init__(self, copier: FileCopier, base: str, key: str, man: Manifest) -> None:
        self.c = copier
        self.base = base
        self.key = key
        self.man = man
        self.staged: dict[str, Staged] = {}
        self.hasher = identity_hasher(man.identity, man.size)
        self.result = Copied()
        self.local: set[str] = set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        store, refs = self.c.store, self.man.chunks
        ids = list(dict.fromkeys(r.chunk_id for r in refs))
        self.local = set(await loop.run_in_executor(self.c.executor, lambda: [c for c in ids if store.has(c)]))
        self.result.chunks_present = len(self.local)
        pos = 0
        while pos < len(refs):
            # The next group of refs, up to `batch` distinct chunks to fetch; the refs
            # in between (held here, or fetched earlier in this file) are read locally.
            want: dict[str, int] = {}
            end = pos
            while end < len(refs) and len(want) < self.c.batch:
                cid = refs[end].chunk_id
                if cid not in self.local and cid not in self.staged and cid not in want:
                    want[cid] = refs[end].length
                end += 1
            i = pos
            if want:
                async for cid, frame in self.c.client.chunks(self.base, self.key, list(want), sum(want.values())):
                    while i < end and refs[i].chunk_id != cid:
                        await self._known(refs[i])
                        i += 1
                    if i >= end or frame is None:
                        raise PeerError(f"source {self.base} lacks chunk {cid[:16]} of {self.man.identity}")
                    await self._take(refs[i], frame)
                    i += 1
            while i < end:
                await self._known(refs[i])
                i += 1
            pos = end
        expected = self.man.identity.split(":", 1)[1]
        actual = self.hasher.hexdigest()
        if actual != expected:
            raise HashMismatch(f"{self.man.identity} rebuilt from the source's chunks", expected, actual)

    async def _take(self, ref: ChunkRef, frame: bytes) -> None:
        """A received frame: decoded and checked against its id, hashed, staged."""
        store = self.c.store

        def work() -> None:
            raw = store.decode_frame(ref.chunk_id, frame, ref.length)
            self.hasher.update(raw)
            self.staged[ref.chunk_id] = store.stage_verified(ref.chunk_id, len(raw), frame)

        await asyncio.get_running_loop().run_in_executor(self.c.executor, work)
        self.result.chunks_fetched += 1
        self.result.bytes_fetched += len(frame)

    async def _known(self, ref: ChunkRef) -> None:
        """A chunk held here or staged earlier in this file, read back for the hash. One
        that turns out gone or rotten is fetched from the source instead."""
        store = self.c.store

        def work() -> None:
            st = self.staged.get(ref.chunk_id)
            if st is not None and st.tmp is not None:
                raw = store.decode_frame(ref.chunk_id, st.tmp.read_bytes(), ref.length)
            else:
                raw = store.read(ref.chunk_id, ref.length)
            self.hasher.update(raw)

        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.c.executor, work)
            return
        except CorruptChunk:
            if ref.chunk_id not in self.staged:
                await loop.run_in_executor(self.c.executor, store.quarantine_if_bad, ref.chunk_id)
        except ChunkMissing:
            pass
        self.local.discard(ref.chunk_id)
        dropped = self.staged.pop(ref.chunk_id, None)
        if dropped is not None:
            store.discard([dropped])
        async for _cid, frame in self.c.client.chunks(self.base, self.key, [ref.chunk_id], ref.length):
            if frame is None:
                raise PeerError(f"source {self.base} lacks chunk {ref.chunk_id[:16]} of {self.man.identity}")
            await self._take(ref, frame)
