"""The chunk quarantine: where a chunk that failed verification goes (threat-model C6),
out of the readable set, its frame kept for inspection as `<quarantine dir>/<chunk id>`.

A chunk file of a local backend is renamed there (one rename, nothing copied). With any
other backend the frame is read, written there (temp then rename) and the stored copy
deleted; with a bucket behind local copies (`CachingBackend`), when the copy read was
the local one and the bucket's differs, only the local copy is dropped: the bucket's
stays readable, since the damage was the local disk's.

`move_if_bad` judges the frame it moved: a reader may have put a good copy back since
the chunk was found bad, and a good frame goes back into the store.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable

from mirror.errors import ChunkMissing
from mirror.store.backend import CachingBackend, ChunkBackend, FileBackend
from mirror.store.layout import is_chunk_id


class ChunkQuarantine:
    def __init__(self, directory: Path, backend: ChunkBackend) -> None:
        self.directory = directory
        self.backend = backend
        self._files = backend if isinstance(backend, FileBackend) else None
        self._cache = backend if isinstance(backend, CachingBackend) else None

    def move(self, cid: str) -> bool:
        """Move the chunk out of the readable set; False when it was not stored."""
        if not is_chunk_id(cid):
            raise ValueError(f"not a chunk id: {cid[:80]!r}")
        dest = self.directory / cid
        if self._files is not None:
            try:
                os.replace(self._files.path_of(cid), dest)
                return True
            except FileNotFoundError:
                return False
        try:
            frame = self.backend.get(cid)
        except ChunkMissing:
            return False
        tmp = self.directory / f".{cid}.{uuid.uuid4().hex[:8]}"
        tmp.write_bytes(frame)
        os.replace(tmp, dest)
        if self._cache is not None and self._cache.drop_cached(cid):
            # The frame read was a local copy: if the durable one differs, only the copy
            # was damaged (a local disk's fault), and the durable one stays readable.
            try:
                durable = self.backend.get(cid)
            except ChunkMissing:
                return True
            if durable != frame:
                return True
        return self.backend.delete(cid)

    def move_if_bad(self, cid: str, good: Callable[[Path], bytes | None]) -> bool:
        """`move`, then judge the moved frame with `good` (its bytes when it is a good
        frame of `cid`, else None): a good one goes back. True if a bad frame is now in
        quarantine."""
        if not self.move(cid):
            return False
        moved = self.directory / cid
        frame = good(moved)
        if frame is None:
            return True
        self.backend.put(cid, frame)  # durable; a no-op if a copy is there again
        os.unlink(moved)
        return False
