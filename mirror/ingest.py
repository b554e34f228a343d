"""Ingest: a file's bytes -> verified hash -> chunks -> signed manifest -> catalog.

Order (design.md §4, threat-model I2/I3): every new chunk is encoded and written to a
durable temp file while the file hash is computed in parallel; only when the hash equals
the expected identity does `Ingestor.adopt` commit: chunks published (renamed into place,
directories fsynced), then their catalog rows written, then the signed manifest. A hash
mismatch discards the temps and stores nothing. A crash at any point leaves temps
(removed at start) or unreferenced chunks (collected by GC), never a manifest that
points at a missing chunk.

`adopt` is the one durable commit sequence for verified content, whoever verified it:
this module's ingest, bundle import (admin/bundle_import.py), and next peers, `sync
--from` and hosted uploads.

The pipeline over a file mapped window by window, all of it off the event loop:

    staging thread   FastCDC cut points, in file order (pyfastcdc drops the GIL)
    hash thread      sha256 (or git blob sha1) of the whole file (hashlib drops the GIL)
    CPU pool         per chunk: blake3 id, then byte grouping and zstd (`store.workers`)
    write pool       per new chunk: write the temp file and fsync it

Encoding and durable writes run in separate pools so that a chunk waiting for its fsync
never holds a CPU worker: with one pool, about a third of the workers' time on this
machine was spent blocked in fsync. At most `_INFLIGHT` chunks are in flight.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import mmap
import os
import queue
import threading
from collections import deque
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

from mirror import crashpoints
from mirror.catalog.content import ContentCatalog
from mirror.errors import ChunkMissing, HashMismatch
from mirror.keys import NodeKey
from mirror.manifest import ChunkRef, Manifest
from mirror.store.chunker import cut, sniff_group_width
from mirror.store.chunkstore import ChunkStore, PutResult, Staged
from mirror.store.leases import LeaseTable

# Chunks between being cut and being staged: enough to keep both pools busy, few enough
# that memory stays at a few tens of MiB whatever the file size.
_INFLIGHT = 12
# Bytes read per window of the staging pass; must exceed the chunker's MAX_SIZE.
_WINDOW = 32 << 20


def git_blob_sha1(data: bytes | memoryview) -> str:
    h = hashlib.sha1(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


def identity_hasher(identity: str, size: int) -> "hashlib._Hash":
    kind = identity.split(":", 1)[0]
    if kind == "sha256":
        return hashlib.sha256()
    h = hashlib.sha1()
    h.update(b"blob %d\0" % size)
    return h


class Ingestor:
    def __init__(self, store: ChunkStore, content: ContentCatalog, key: NodeKey, leases: LeaseTable, tmp_dir: Path,
                 executor: Executor, write_executor: Executor | None = None,
                 on_stored: Callable[[Manifest], None] | None = None) -> None:
        """`executor` encodes chunks (CPU); `write_executor` writes and fsyncs them (I/O),
        and defaults to `executor`. `leases` keep GC in this process off the chunks of an
        ingest until its manifest is written; `tmp_dir` holds small contents spooled by
        `ingest_bytes`. `on_stored` hears of every manifest this node newly signs and
        stores (with a shared bucket: published there, mirror/s3/manifests.py); it must
        not block."""
        self.on_stored = on_stored
        self.store = store
        self.content = content
        self.key = key
        self.leases = leases
        self.tmp_dir = tmp_dir
        self.executor = executor
        self.write_executor = write_executor or executor

    async def ingest_path(self, path: Path, identity: str, *, verified: bool = False) -> Manifest:
        """Store the file at `path` as content `identity`. `verified=True` skips the
        hash when the caller already checked these exact bytes (a verified spool)."""
        existing = await self.complete_manifest(identity)
        if existing is not None:
            return existing
        loop = asyncio.get_running_loop()
        staged, size = await loop.run_in_executor(None, self._stage_file, path, identity, verified)
        crashpoints.hit("ingest.staged")
        man = Manifest(identity, size, tuple(ChunkRef(s.chunk_id, s.raw_len) for s in staged))
        try:
            manifests, _results = await self.adopt(staged, [man])
        except ChunkMissing:
            # A chunk found stored while staging was collected before the manifest was
            # written (GC in another process): stage again, now writing it.
            staged, size = await loop.run_in_executor(None, self._stage_file, path, identity, True)
            manifests, _results = await self.adopt(staged, [man])
        return manifests[0]

    async def ingest_bytes(self, data: bytes, identity: str) -> Manifest:
        """Convenience for small contents: spool to a temp file, then ingest."""
        tmp = self.tmp_dir / f"ingest-{id(data):x}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        tmp.write_bytes(data)
        try:
            return await self.ingest_path(tmp, identity)
        finally:
            tmp.unlink(missing_ok=True)

    async def complete_manifest(self, identity: str) -> Manifest | None:
        """The stored manifest of `identity` when every chunk it names is readable."""
        existing = await self.content.get_manifest(identity)
        if existing is None:
            return None
        # One stat per chunk: thousands for a large file, so off the event loop.
        ids = [c.chunk_id for c in existing.chunks]
        present = await asyncio.get_running_loop().run_in_executor(None, lambda: all(self.store.has(c) for c in ids))
        return existing if present else None

    async def adopt(self, staged: list[Staged], manifests: Sequence[Manifest]) -> tuple[list[Manifest], list[PutResult]]:
        """Commit verified content durably, in the one order that never leaves a manifest
        naming a missing chunk: publish the staged chunks (renamed into place, their
        directories fsynced), write their catalog rows, then each manifest, signed by
        this node. The caller has verified the bytes (the file's hash; blake3 per chunk)
        and every chunk a manifest names is in `staged` or stored already. A manifest
        whose stored copy is complete is kept as it is. On any error the staged temps
        are discarded. Raises ChunkMissing (and writes no manifest that names it) when a
        chunk assumed stored was collected meanwhile by another process.
        Returns the manifests now stored, and what the publish stored."""
        loop = asyncio.get_running_loop()
        held = self.leases.acquire([s.chunk_id for s in staged] + [c.chunk_id for m in manifests for c in m.chunks])
        try:
            try:
                results = await loop.run_in_executor(None, functools.partial(self.store.publish, staged, pool=self.write_executor))
            except BaseException:
                self.store.discard(staged)
                raise
            await self.content.add_chunks(results)
            crashpoints.hit("db.chunk_row")
            out: list[Manifest] = []
            for man in manifests:
                existing = await self.complete_manifest(man.identity)
                if existing is not None:
                    out.append(existing)
                    continue
                signed = man.signed(self.key)
                crashpoints.hit("manifest.signed")
                await self._put_checked(signed)
                crashpoints.hit("db.manifest_row")
                out.append(signed)
                if self.on_stored is not None:
                    self.on_stored(signed)
            return out, results
        finally:
            self.leases.release(held)

    async def _put_checked(self, man: Manifest) -> None:
        """Write the manifest, then check its chunks are still there: GC in another
        process may have deleted a chunk that was found stored (its own dangling check
        covers the other order)."""
        await self.content.put_manifest(man)
        ids = [c.chunk_id for c in man.chunks]
        gone = await asyncio.get_running_loop().run_in_executor(None, lambda: [c for c in ids if not self.store.has(c)])
        if gone:
            await self.content.delete_manifest(man.identity)
            raise ChunkMissing(gone[0])

    def _stage_file(self, path: Path, identity: str, verified: bool) -> tuple[list[Staged], int]:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                if not verified:
                    _check(identity_hasher(identity, 0), identity, path)
                return [], 0
            return self._stage_stream(fh, size, identity, verified, path), size

    def _stage_stream(self, fh: BinaryIO, size: int, identity: str, verified: bool, path: Path) -> list[Staged]:
        """Cut, hash and stage the file window by window: memory stays at a few windows
        whatever the file size (a whole-file mapping would count the file in our RSS)."""
        width = sniff_group_width(os.pread(fh.fileno(), 1 << 20, 0)) if self.store.compress else 0
        hasher = identity_hasher(identity, size)
        # The hash runs in its own thread (hashlib drops the GIL), fed windows in order.
        hash_queue: queue.Queue[memoryview | None] = queue.Queue(maxsize=2)
        hash_thread = None
        if not verified:
            hash_thread = threading.Thread(target=_hash_queue, args=(hasher, hash_queue), daemon=True)
            hash_thread.start()
        store, writer = self.store, self.write_executor

        def encode_then_write(raw: memoryview) -> Future[Staged]:
            # Runs in the CPU pool; hands the frame to the write pool without waiting.
            return writer.submit(store.stage_encoded, store.encode_raw(raw, group_width=width))

        pending: deque[Future[Future[Staged]]] = deque()
        staged: list[Staged] = []
        try:
            start = 0  # file offset where the current window begins
            hashed = 0  # file offset up to which bytes went to the hash thread
            while True:
                length = min(_WINDOW, size - start)
                window = _map_window(fh, start, length)
                final = start + length >= size
                if hash_thread is not None:
                    hash_queue.put(window[hashed - start:])
                    hashed = start + length
                cuts = list(cut(window))
                # The last cut of a window is where the mapping ended, not a content
                # boundary: the next window starts there and cuts it again.
                for off, n in cuts if final else cuts[:-1]:
                    pending.append(self.executor.submit(encode_then_write, window[off:off + n]))
                    # Bound memory and keep file order: collect the oldest when too many run.
                    while len(pending) > _INFLIGHT:
                        staged.append(pending.popleft().result().result())
                if final:
                    break
                start += cuts[-1][0]
                del window  # its mapping goes once no chunk or hash view needs it
            while pending:
                staged.append(pending.popleft().result().result())
            if hash_thread is not None:
                hash_queue.put(None)
                hash_thread.join()
                hash_thread = None
                _check(hasher, identity, path)
        except BaseException:
            if hash_thread is not None:
                _stop_hash_thread(hash_queue, hash_thread)
            # Wait for every chunk already submitted and drop whatever each one staged.
            for outer in pending:
                try:
                    staged.append(outer.result().result())
                except BaseException:
                    continue
            self.store.discard(staged)
            raise
        return staged


def _map_window(fh: BinaryIO, start: int, length: int) -> memoryview:
    """A read-only view of file bytes [start, start + length). The mapping is unmapped
    when the last view of it is released, so only live windows count in our RSS."""
    aligned = start - start % mmap.ALLOCATIONGRANULARITY
    mm = mmap.mmap(fh.fileno(), length + (start - aligned), access=mmap.ACCESS_READ, offset=aligned)
    return memoryview(mm)[start - aligned:]


def _hash_queue(hasher: "hashlib._Hash", q: "queue.Queue[memoryview | None]") -> None:
    while True:
        view = q.get()
        if view is None:
            return
        step = 8 << 20
        for i in range(0, len(view), step):
            hasher.update(view[i:i + step])


def _stop_hash_thread(q: "queue.Queue[memoryview | None]", t: threading.Thread) -> None:
    while t.is_alive():
        try:
            q.put(None, timeout=0.1)
        except queue.Full:
            continue
        break
    t.join()


def _check(hasher: "hashlib._Hash", identity: str, path: Path) -> None:
    expected = identity.split(":", 1)[1]
    actual = hasher.hexdigest()
    if actual != expected:
        raise HashMismatch(f"{path.name}", expected, actual)
