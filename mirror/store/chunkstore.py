"""The chunk store: immutable frames named by blake3 of their raw bytes.

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

import os
import threading
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

import blake3

from mirror import crashpoints
from mirror.errors import ChunkMissing, CorruptChunk
from mirror.store.codec import HEADER_SIZE, MAX_CHUNK, RAW, Buffer, Codec, FrameError, peek_header
from mirror.store.fsio import DurableFS
from mirror.store.layout import Layout, is_chunk_id

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
    """The cold tier behind the hot files (store/packs.py `PackStore`)."""

    def has(self, cid: str) -> bool: ...

    def read_frame(self, cid: str) -> bytes | None:
        """The chunk's frame (decoded and verified by the caller), or None if absent."""


class ChunkStore:
    def __init__(self, layout: Layout, *, compress: bool = True, fs: DurableFS | None = None, verify_reads: bool = True) -> None:
        self.layout = layout
        self.compress = compress
        self.fs = fs or DurableFS()
        self.verify_reads = verify_reads
        self._local = threading.local()
        # The archive tier (lifecycle), read when a chunk has no hot file; set by services.
        self.archive: ArchiveTier | None = None

    def _codec(self) -> Codec:
        codec = getattr(self._local, "codec", None)
        if codec is None:
            codec = self._local.codec = Codec()
        return codec

    # --- writing ---------------------------------------------------------------

    def put_raw(self, raw: bytes | memoryview, *, group_width: int = 0, chunk_id: str | None = None) -> PutResult:
        cid = chunk_id or chunk_id_of(raw)
        path = self.layout.chunk_path(cid)
        if path.exists():
            return PutResult(cid, len(raw), self._stored_len(path), -1, False)
        frame = self._codec().encode(raw, compress=self.compress, group_width=group_width)
        new = self.fs.write_atomic(path, frame, self.layout.tmp)
        return PutResult(cid, len(raw), len(frame), frame[4], new)

    def encode_raw(self, raw: bytes | memoryview, *, group_width: int = 0) -> "Encoded":
        """Name and encode one chunk (CPU only: blake3 and the codec). A chunk that is
        already stored is not encoded (`frame` is None)."""
        cid = chunk_id_of(raw)
        if self.layout.chunk_path(cid).exists():
            return Encoded(cid, len(raw), None)
        return Encoded(cid, len(raw), self._codec().encode(raw, compress=self.compress, group_width=group_width))

    def stage_encoded(self, enc: "Encoded") -> "Staged":
        """Write an encoded chunk to a durable temp file without publishing it (I/O only:
        write and fsync), so an ingest can drop everything if the whole file then fails
        its hash."""
        if enc.frame is None:
            return Staged(enc.chunk_id, enc.raw_len, 0, -1, None)
        # The chunk's directory is made now, in parallel with other writes, rather than in
        # `publish`, which runs after the file hash and holds up the whole ingest. An empty
        # directory is harmless if the ingest is then dropped.
        self.fs.makedirs(self.layout.chunk_dir(enc.chunk_id))
        tmp = self.fs.stage(enc.frame, self.layout.tmp, enc.chunk_id)
        return Staged(enc.chunk_id, enc.raw_len, len(enc.frame), enc.frame[4], tmp)

    def stage_raw(self, raw: bytes | memoryview, *, group_width: int = 0) -> "Staged":
        """`encode_raw` then `stage_encoded`: a chunk already stored is not staged (`tmp` is None)."""
        return self.stage_encoded(self.encode_raw(raw, group_width=group_width))

    def publish(self, staged: "list[Staged]", *, pool: Executor | None = None) -> list[PutResult]:
        """Move staged chunks into place, fsync each touched directory once (in `pool`
        when given: concurrent directory fsyncs share journal commits), and return what is
        now stored (new chunks flagged `new`; the codec and stored length of a chunk that
        was there already are read from its frame header). Raises ChunkMissing if a
        chunk that was found stored when it was staged has gone since."""
        out: list[PutResult] = []
        dirs: set[Path] = set()
        for st in staged:
            final = self.layout.chunk_path(st.chunk_id)
            if st.tmp is not None and self.fs.publish(st.tmp, final):
                dirs.add(final.parent)
                out.append(PutResult(st.chunk_id, st.raw_len, st.stored_len, st.codec, True))
                continue
            codec, _raw_len, stored_len = self.describe(st.chunk_id)
            out.append(PutResult(st.chunk_id, st.raw_len, stored_len, codec, False))
        if pool is not None and len(dirs) > 1:
            list(pool.map(self.fs.fsync_dir, sorted(dirs)))
        else:
            for d in sorted(dirs):
                self.fs.fsync_dir(d)
        crashpoints.hit("dir.fsynced")
        return out

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
        return self.fs.write_atomic(self.layout.chunk_path(cid), frame, self.layout.tmp)

    # --- reading ---------------------------------------------------------------

    def has(self, cid: str) -> bool:
        """True when the chunk is readable, hot or archived."""
        return self.layout.chunk_path(cid).exists() or (self.archive is not None and self.archive.has(cid))

    def read_frame(self, cid: str) -> bytes:
        """The stored frame of a chunk. A file larger than any frame can be (a planted or
        damaged file) is refused before it is read into memory."""
        try:
            fd = os.open(self.layout.chunk_path(cid), os.O_RDONLY)
        except FileNotFoundError:
            frame = self.archive.read_frame(cid) if self.archive is not None else None
            if frame is None:
                raise ChunkMissing(cid) from None
            return frame
        try:
            size = os.fstat(fd).st_size
            if size > MAX_FRAME:
                raise CorruptChunk(cid, f"chunk file of {size} bytes exceeds the largest frame ({MAX_FRAME})")
            frame = os.read(fd, size)
            while len(frame) < size:  # a short read from a regular file is rare, not an error
                more = os.read(fd, size - len(frame))
                if not more:
                    break
                frame += more
            return frame
        finally:
            os.close(fd)

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

    def raw_span(self, cid: str) -> tuple[str, int, int] | None:
        """(path, offset, length) of the raw bytes when the chunk is stored uncompressed,
        so the server may `sendfile` it; None when it is compressed or absent."""
        path = self.layout.chunk_path(cid)
        try:
            with open(path, "rb") as fh:
                head = fh.read(HEADER_SIZE)
                size = os.fstat(fh.fileno()).st_size
        except FileNotFoundError:
            return None
        if len(head) < HEADER_SIZE or head[4] != RAW:
            return None
        return str(path), HEADER_SIZE, size - HEADER_SIZE

    def describe(self, cid: str) -> tuple[int, int, int]:
        """(codec, raw_len, stored_len) from the frame header."""
        path = self.layout.chunk_path(cid)
        try:
            with open(path, "rb") as fh:
                head = fh.read(HEADER_SIZE)
                size = os.fstat(fh.fileno()).st_size
        except FileNotFoundError:
            raise ChunkMissing(cid) from None
        try:
            codec, _w, raw_len = peek_header(head, size)
        except FrameError as exc:
            raise CorruptChunk(cid, str(exc)) from None
        return codec, raw_len, size

    def _stored_len(self, path: os.PathLike[str]) -> int:
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            return 0

    # --- removal and listing ------------------------------------------------------

    def delete(self, cid: str) -> bool:
        try:
            os.unlink(self.layout.chunk_path(cid))
            return True
        except FileNotFoundError:
            return False

    def delete_many(self, ids: Iterable[str], *, keep: Callable[[str], bool] | None = None, crashpoint: str = "") -> int:
        """Delete the chunks (skipping those `keep` says to keep, asked just before each
        deletion), then fsync every touched directory once; return how many went."""
        n = 0
        dirs: set[Path] = set()
        for cid in ids:
            if keep is not None and keep(cid):
                continue
            if self.delete(cid):
                n += 1
                dirs.add(self.layout.chunk_dir(cid))
                if crashpoint:
                    crashpoints.hit(crashpoint)
        for d in dirs:
            self.fs.fsync_dir(d)
        return n

    def quarantine(self, cid: str) -> bool:
        try:
            os.replace(self.layout.chunk_path(cid), self.layout.quarantine_path(cid))
            return True
        except FileNotFoundError:
            return False

    def iter_ids(self) -> Iterator[str]:
        root = self.layout.chunks
        for a in sorted(os.listdir(root)):
            da = root / a
            if len(a) != 2 or not da.is_dir():
                continue
            for b in sorted(os.listdir(da)):
                db = da / b
                if not db.is_dir():
                    continue
                for name in os.listdir(db):
                    if is_chunk_id(name):
                        yield name

    def mtime(self, cid: str) -> float | None:
        try:
            return os.stat(self.layout.chunk_path(cid)).st_mtime
        except FileNotFoundError:
            return None

