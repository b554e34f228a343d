"""The chunk backend: where chunk frames live, and nothing else.

A backend stores opaque frames (store/codec.py) under chunk ids (64 hex chars of blake3
of the raw bytes). It knows nothing of codecs, verification, archive packs, files or
repos: `ChunkStore` keeps all of that above it, so a second backend (object storage) only
has to implement the five methods below and pass tests/test_backend_conformance.py.

Every method is blocking and thread-safe; callers run them in a worker pool. A chunk id
that is not 64 lowercase hex characters is refused with ValueError before any I/O (ids
become object names; threat-model I1).

Optional capabilities a backend may add, found by `isinstance` on the protocols below:
`FileBackend` (the chunk is a local file: rename-publish of a staged temp, batched
directory fsyncs, `sendfile`, the volume's free space); `CachingBackend` (a durable
store behind local copies, store/cached.py: a local copy can be dropped alone).
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ChunkStat:
    size: int  # stored bytes (the whole frame)
    mtime: float  # seconds since the epoch when the chunk was stored


@runtime_checkable
class ChunkBackend(Protocol):
    def stat(self, cid: str) -> ChunkStat | None:
        """The chunk's stored size and time, or None when it is not stored."""

    def get(self, cid: str, offset: int = 0, length: int | None = None) -> bytes:
        """Stored bytes [offset, offset + length) of the frame (to its end when `length`
        is None; fewer when the frame is shorter). Raises ChunkMissing when absent.
        Never returns bytes of a partially written frame."""

    def put(self, cid: str, frame: bytes | memoryview) -> bool:
        """Store `frame` under `cid` if no frame is stored there: atomic (readers see
        nothing or the whole frame) and durable when it returns. Returns False, changing
        nothing, when the id is stored already; concurrent puts of one id store it once.
        Raises StorageError when it cannot store."""

    def delete(self, cid: str) -> bool:
        """Remove the chunk, durably. Returns False when it was not stored."""

    def list(self) -> Iterator[str]:
        """Every stored chunk id, each once, in no promised order. A chunk put or deleted
        during the iteration may or may not appear."""


@runtime_checkable
class FileBackend(Protocol):
    """A backend whose chunks are files on a local file system."""

    def publish_file(self, cid: str, tmp: Path) -> bool:
        """Rename a durable temp file (same file system) into place as chunk `cid`, or
        drop it and return False when the id is stored already. Not durable until
        `sync` has run for the id."""

    def prepare(self, cid: str) -> None:
        """Create (durably) whatever must exist for `publish_file(cid, ...)` to be one
        rename; idempotent. Lets staging overlap with other writes."""

    def remove(self, cid: str) -> bool:
        """Unlink the chunk's file; durable once `sync` has run for the id."""

    def sync(self, cids: Iterable[str], pool: Executor | None = None) -> None:
        """Make the publication (or deletion) of these chunks durable."""

    def path_of(self, cid: str) -> Path:
        """The file holding the chunk (for sendfile and quarantine)."""

    def capacity(self) -> tuple[int, int]:
        """(total, free) bytes of the volume holding the chunks."""


@runtime_checkable
class CachingBackend(Protocol):
    """A backend that keeps local copies of chunks whose durable copy lives elsewhere."""

    def drop_cached(self, cid: str) -> bool:
        """Remove the local copy only (the durable one stays); True if there was one."""

    def cached_ids(self) -> Iterator[str]:
        """The ids of the chunks that have a local copy."""

    def vouches_for(self, cid: str) -> bool:
        """Without a request: True when a read of a chunk some stored manifest names is
        expected to succeed (a local copy, or the durable store answers: a manifest is
        stored only after its chunks are durable, and the durable copies of referenced
        chunks stay). False means only that no local copy exists and the durable store
        is known to be down now."""
