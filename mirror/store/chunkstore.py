"""The chunk store: immutable frames named by blake3 of their raw bytes.

Layers: `ChunkStore` (ids, codec, verification, staging for ingest, archive fallback)
sits on a `ChunkBackend` (store/backend.py: where frames live; `LocalBackend`,
store/localfs.py, or a bucket behind a local cache, store/cached.py) and beside an
`ArchiveTier` (store/packs.py). Nothing outside store/ touches chunk files. A backend
that is not local files is read with one `get` per chunk (no stat first), written with
its puts side by side in the publish pool, and, when it caches (`CachingBackend`), a
quarantine keeps the durable copy when only the local one was damaged.

Contract:
- `put_raw(raw)` computes the id, encodes, and stores the frame atomically and durably;
  storing an id that exists is a no-op (idempotent) and returns `new=False`.
- `read(id)` returns the raw bytes, verified against the id (blake3) unless told not to;
  a mismatch or malformed frame raises `CorruptChunk`; an absent chunk `ChunkMissing`.
- `delete(id)` and `quarantine(id)` remove a chunk from the readable set.
- With an `archive` tier set, `has` and `read` also see chunks that live only in
  archive packs (slower, same verification); the other methods concern hot files.
- Methods are blocking and thread-safe; callers run them in a worker pool.

The store knows nothing of files, repos or the catalog.
"""

from __future__ import annotations

import threading
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

import blake3

from mirror import crashpoints
from mirror.errors import ChunkMissing, CorruptChunk, IntegrityError
from mirror.store.codec import HEADER_SIZE, MAX_CHUNK, RAW, Buffer, Codec, FrameError, peek_header
from mirror.store.backend import CachingBackend, ChunkBackend, FileBackend
from mirror.store.fsio import DurableFS
from mirror.store.quarantine import ChunkQuarantine

# No frame is larger than a raw frame of the largest chunk: compressed frames are only
# kept when they are smaller than raw.
MAX_FRAME = HEADER_SIZE + MAX_CHUNK


@dataclass(frozen=True, slots=True)
class PutResult:
    chunk_id: str
    raw_len: int
    stored_len: int
    codec: int
    new: bool


@dataclass(frozen=True, slots=True)
class Encoded:
    chunk_id: str
    raw_len: int
    frame: bytes | None  # None: the chunk is stored already


@dataclass(frozen=True, slots=True)
class Staged:
    chunk_id: str
    raw_len: int
    stored_len: int
    codec: int
    tmp: Path | None


def chunk_id_of(raw: bytes | memoryview) -> str:
    return blake3.blake3(raw).hexdigest()


class ArchiveTier(Protocol):
    """The cold tier beside the backend (store/packs.py `PackStore`): read-only here."""

    def has(self, cid: str) -> bool: ...

    def read_frame(self, cid: str) -> bytes | None:
        """The chunk's frame (decoded and verified by the caller), or None if absent."""


class ChunkStore:
    def __init__(
        self,
        backend: ChunkBackend,
        tmp_dir: Path,
        quarantine_dir: Path,
        *,
        archive: ArchiveTier | None = None,
        compress: bool = True,
        fs: DurableFS | None = None,
        verify_reads: bool = True,
    ) -> None:
        """`tmp_dir` holds staged temps of ingests (local, whatever the backend);
        `quarantine_dir` receives frames that failed verification."""
        self.backend = backend
        self.tmp_dir = tmp_dir
        self.quarantine_dir = quarantine_dir
        self.archive = archive
        self.compress = compress
        self.fs = fs or DurableFS()
        self.verify_reads = verify_reads
        self._files = backend if isinstance(backend, FileBackend) else None
        self._cache = backend if isinstance(backend, CachingBackend) else None
        self._quarantine = ChunkQuarantine(quarantine_dir, backend)
        self._local = threading.local()

    def _codec(self) -> Codec:
        codec = getattr(self._local, "codec", None)
        if codec is None:
            codec = self._local.codec = Codec()
        return codec

    # --- writing ---------------------------------------------------------------

    def put_raw(self, raw: bytes | memoryview, *, group_width: int = 0, chunk_id: str | None = None) -> PutResult:
        cid = chunk_id or chunk_id_of(raw)
        st = self.backend.stat(cid)
        if st is not None:
            return PutResult(cid, len(raw), st.size, -1, False)
        frame = self._codec().encode(raw, compress=self.compress, group_width=group_width)
        new = self.backend.put(cid, frame)
        return PutResult(cid, len(raw), len(frame), frame[4], new)

    def encode_raw(self, raw: bytes | memoryview, *, group_width: int = 0) -> "Encoded":
        """Name and encode one chunk (CPU only: blake3 and the codec). A chunk that is
        already stored is not encoded (`frame` is None)."""
        cid = chunk_id_of(raw)
        if self.backend.stat(cid) is not None:
            return Encoded(cid, len(raw), None)
        return Encoded(cid, len(raw), self._codec().encode(raw, compress=self.compress, group_width=group_width))

    def stage_encoded(self, enc: "Encoded") -> "Staged":
        """Write an encoded chunk to a durable temp file without publishing it (I/O only:
        write and fsync), so an ingest can drop everything if the whole file then fails
        its hash."""
        if enc.frame is None:
            return Staged(enc.chunk_id, enc.raw_len, 0, -1, None)
        return self.stage_frame(enc.chunk_id, enc.raw_len, enc.frame)

    def stage_frame(self, cid: str, raw_len: int, frame: bytes) -> "Staged":
        """Stage a frame already checked to decode to `cid` (see `stage_encoded`)."""
        if self._files is not None:
            # The chunk's directory is made now, in parallel with other writes, rather
            # than in `publish`, which runs after the file hash and holds up the whole
            # ingest. An empty directory is harmless if the ingest is then dropped.
            self._files.prepare(cid)
        tmp = self.fs.stage(frame, self.tmp_dir, cid)
        return Staged(cid, raw_len, len(frame), frame[4], tmp)

    def stage_verified(self, cid: str, raw_len: int, frame: bytes) -> "Staged":
        """Stage a frame the caller decoded and checked against `cid`, unless the chunk
        is stored already (then nothing is written and `tmp` is None)."""
        if self.has(cid):
            return Staged(cid, raw_len, 0, -1, None)
        return self.stage_frame(cid, raw_len, frame)

    def stage_raw(self, raw: bytes | memoryview, *, group_width: int = 0) -> "Staged":
        """`encode_raw` then `stage_encoded`: a chunk already stored is not staged (`tmp` is None)."""
        return self.stage_encoded(self.encode_raw(raw, group_width=group_width))

    def publish(self, staged: "list[Staged]", *, pool: Executor | None = None) -> list[PutResult]:
        """Move staged chunks into place durably (a file backend renames them and fsyncs
        each touched directory once, in `pool` when given: concurrent directory fsyncs
        share journal commits), and return what is now stored (new chunks flagged
        `new`; the codec and stored length of a chunk that was there already are read
        from its frame header). Raises ChunkMissing if a chunk that was found stored
        when it was staged has gone since."""
        out: list[PutResult] = []
        fresh: list[str] = []
        if self._files is None and pool is not None and len(staged) > 1:
            # Each put is a network round trip (object storage): run them side by side.
            stored = list(pool.map(lambda st: st.tmp is not None and self._publish_one(st), staged))
        else:
            stored = [st.tmp is not None and self._publish_one(st) for st in staged]
        for st, new in zip(staged, stored):
            if new:
                fresh.append(st.chunk_id)
                out.append(PutResult(st.chunk_id, st.raw_len, st.stored_len, st.codec, True))
                continue
            codec, _raw_len, stored_len = self.describe(st.chunk_id)
            out.append(PutResult(st.chunk_id, st.raw_len, stored_len, codec, False))
        if self._files is not None and fresh:
            self._files.sync(fresh, pool if len(fresh) > 1 else None)
        crashpoints.hit("dir.fsynced")
        return out

    def _publish_one(self, st: "Staged") -> bool:
        assert st.tmp is not None
        if self._files is not None:
            return self._files.publish_file(st.chunk_id, st.tmp)
        try:
            return self.backend.put(st.chunk_id, st.tmp.read_bytes())
        finally:
            self.fs.discard(st.tmp)

    def discard(self, staged: "list[Staged]") -> None:
        for st in staged:
            if st.tmp is not None:
                self.fs.discard(st.tmp)

    def put_frame(self, cid: str, frame: bytes) -> bool:
        """Store an already-encoded frame after checking it decodes to `cid`. A frame
        larger than raw (a sender's choice) is stored raw instead, so that no stored
        file exceeds MAX_FRAME."""
        raw = self._codec().decode(frame)
        if chunk_id_of(raw) != cid:
            raise CorruptChunk(cid, "frame does not hash to its id")
        if len(frame) > MAX_FRAME:
            frame = self._codec().encode(raw, compress=False)
        return self.backend.put(cid, frame)

    # --- reading ---------------------------------------------------------------

    def has(self, cid: str) -> bool:
        """True when the chunk is readable, hot or archived."""
        return self.backend.stat(cid) is not None or (self.archive is not None and self.archive.has(cid))

    def servable(self, cid: str) -> bool:
        """`has`, but never a request per chunk to a bucket behind local copies: for a
        chunk a stored manifest names, its backend's word (CachingBackend.vouches_for),
        then the archive's index. Used before serving a stored file."""
        if self._cache is not None:
            return self._cache.vouches_for(cid) or (self.archive is not None and self.archive.has(cid))
        return self.has(cid)

    def has_hot(self, cid: str) -> bool:
        """True when the chunk is stored in the backend (not only archived)."""
        return self.backend.stat(cid) is not None

    def read_frame(self, cid: str) -> bytes:
        """The stored frame of a chunk. A frame larger than any frame can be (a planted or
        damaged file) is refused before it is read into memory. A backend that is not
        local files is asked once (one GET of at most MAX_FRAME + 1 bytes, no stat first)."""
        if self._files is None:
            try:
                frame = self.backend.get(cid, 0, MAX_FRAME + 1)
            except ChunkMissing:
                frame = self.archive.read_frame(cid) if self.archive is not None else None
                if frame is None:
                    raise
                return frame
            if len(frame) > MAX_FRAME:
                raise CorruptChunk(cid, f"chunk object of more than {MAX_FRAME} bytes exceeds the largest frame")
            return frame
        st = self.backend.stat(cid)
        if st is None:
            frame = self.archive.read_frame(cid) if self.archive is not None else None
            if frame is None:
                raise ChunkMissing(cid)
            return frame
        if st.size > MAX_FRAME:
            raise CorruptChunk(cid, f"chunk file of {st.size} bytes exceeds the largest frame ({MAX_FRAME})")
        try:
            return self.backend.get(cid, 0, st.size)
        except ChunkMissing:
            # Deleted (or archived and deleted) between the stat and the read.
            frame = self.archive.read_frame(cid) if self.archive is not None else None
            if frame is None:
                raise
            return frame

    def read(self, cid: str, expected_len: int | None = None, *, verify: bool | None = None) -> Buffer:
        """The raw bytes of a chunk, checked against its id unless `verify` (default: the
        store's `verify_reads`) is off. Raises ChunkMissing or CorruptChunk."""
        frame = self.read_frame(cid)
        try:
            raw = self._codec().decode(frame, expected_len)
        except FrameError as exc:
            raise CorruptChunk(cid, str(exc)) from None
        if (self.verify_reads if verify is None else verify) and chunk_id_of(raw) != cid:
            raise CorruptChunk(cid, "content does not match its blake3 id")
        return raw

    def decode_frame(self, cid: str, frame: bytes | memoryview, expected_len: int | None = None) -> Buffer:
        """The raw bytes of a frame received from elsewhere (a peer), checked like a
        stored one: bomb-proof decoding (codec.py), the expected length, then blake3
        against `cid`. Raises CorruptChunk; stores nothing."""
        try:
            raw = self._codec().decode(frame, expected_len)
        except FrameError as exc:
            raise CorruptChunk(cid, str(exc)) from None
        if chunk_id_of(raw) != cid:
            raise CorruptChunk(cid, "content does not match its blake3 id")
        return raw

    def raw_span(self, cid: str) -> tuple[str, int, int] | None:
        """(path, offset, length) of the raw bytes when the chunk is stored uncompressed
        in a local file, so the server may `sendfile` it; None when it is compressed,
        absent, or not a local file."""
        if self._files is None:
            return None
        st = self.backend.stat(cid)
        if st is None:
            return None
        try:
            head = self.backend.get(cid, 0, HEADER_SIZE)
        except ChunkMissing:
            return None
        if len(head) < HEADER_SIZE or head[4] != RAW:
            return None
        return str(self._files.path_of(cid)), HEADER_SIZE, st.size - HEADER_SIZE

    def describe(self, cid: str) -> tuple[int, int, int]:
        """(codec, raw_len, stored_len) from the frame header."""
        st = self.backend.stat(cid)
        if st is None:
            raise ChunkMissing(cid)
        head = self.backend.get(cid, 0, HEADER_SIZE)
        try:
            codec, _w, raw_len = peek_header(head, st.size)
        except FrameError as exc:
            raise CorruptChunk(cid, str(exc)) from None
        return codec, raw_len, st.size

    def stored_len(self, cid: str) -> int:
        """Stored bytes of a hot chunk (0 when it is not stored in the backend)."""
        st = self.backend.stat(cid)
        return st.size if st is not None else 0

    def mtime(self, cid: str) -> float | None:
        st = self.backend.stat(cid)
        return st.mtime if st is not None else None

    def capacity(self) -> tuple[int, int] | None:
        """(total, free) bytes of the volume behind the backend, when it has one."""
        return self._files.capacity() if self._files is not None else None

    # --- removal and listing ------------------------------------------------------

    def delete(self, cid: str) -> bool:
        return self.backend.delete(cid)

    def delete_many(self, ids: Iterable[str], *, keep: Callable[[str], bool] | None = None, crashpoint: str = "") -> int:
        """Delete the chunks (skipping those `keep` says to keep, asked just before each
        deletion), durably; return how many went."""
        n = 0
        gone: list[str] = []
        for cid in ids:
            if keep is not None and keep(cid):
                continue
            removed = self._files.remove(cid) if self._files is not None else self.backend.delete(cid)
            if removed:
                n += 1
                gone.append(cid)
                if crashpoint:
                    crashpoints.hit(crashpoint)
        if self._files is not None and gone:
            self._files.sync(gone)
        return n

    def quarantine(self, cid: str) -> bool:
        """Move a chunk that failed verification out of the readable set, keeping its
        frame for inspection under the quarantine directory (store/quarantine.py)."""
        return self._quarantine.move(cid)

    def quarantine_if_bad(self, cid: str) -> bool:
        """Quarantine the chunk, then judge the frame that was moved: a reader may have
        replaced a rotten chunk by a good copy since it was found bad, and that one goes
        back. True if a bad frame is now in quarantine."""
        return self._quarantine.move_if_bad(cid, lambda moved: self._good_frame(cid, moved))

    def _good_frame(self, cid: str, path: Path) -> bytes | None:
        """The frame in `path` when it is a good frame of `cid`, else None."""
        try:
            frame = path.read_bytes() if path.stat().st_size <= MAX_FRAME else b""
            return frame if frame and chunk_id_of(self._codec().decode(frame)) == cid else None
        except (IntegrityError, ValueError, OSError):
            return None

    def iter_ids(self) -> Iterator[str]:
        """Every chunk id stored in the backend (archived-only chunks are not listed)."""
        return self.backend.list()

    # --- a shared durable store (CachingBackend: a bucket other nodes use too) ----------

    @property
    def shared(self) -> bool:
        """True when the backend's durable copies live in a store other nodes may share
        (a bucket): this node's GC then removes only its local copies, and the bucket is
        collected by the cross-node protocol (mirror/s3/gc.py)."""
        return self._cache is not None

    def iter_local_ids(self) -> Iterator[str]:
        """The chunks this node holds copies of: the local cache with a shared store,
        else every stored chunk (`iter_ids`)."""
        if self._cache is not None:
            return self._cache.cached_ids()
        return self.backend.list()

    def drop_local_many(self, ids: Iterable[str], *, keep: Callable[[str], bool] | None = None,
                        crashpoint: str = "") -> int:
        """`delete_many` of the local copies only with a shared store (the durable copies
        stay for the other nodes); `delete_many` otherwise."""
        if self._cache is None:
            return self.delete_many(ids, keep=keep, crashpoint=crashpoint)
        n = 0
        for cid in ids:
            if keep is not None and keep(cid):
                continue
            if self._cache.drop_cached(cid):
                n += 1
                if crashpoint:
                    crashpoints.hit(crashpoint)
        return n
