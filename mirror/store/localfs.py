"""The local chunk backend: one file per chunk under `chunks/ab/cd/<id>` (store/layout.py).

Writes follow `DurableFS.write_atomic` (temp file, fsync, rename, directory fsync), so a
reader sees no frame or the whole frame, and a put that returned survives a crash. It
also offers the `FileBackend` fast paths the ingest uses: staged temps are renamed into
place and their directories fsynced once per batch.
"""

from __future__ import annotations

import os
from concurrent.futures import Executor
from pathlib import Path
from typing import Iterable, Iterator

from mirror.errors import ChunkMissing
from mirror.store.backend import ChunkStat
from mirror.store.fsio import DurableFS
from mirror.store.layout import Layout, is_chunk_id


class LocalBackend:
    def __init__(self, layout: Layout, fs: DurableFS | None = None) -> None:
        self.layout = layout
        self.fs = fs or DurableFS()

    # --- ChunkBackend -----------------------------------------------------------------

    def stat(self, cid: str) -> ChunkStat | None:
        try:
            st = os.stat(self.layout.chunk_path(cid))
        except FileNotFoundError:
            return None
        return ChunkStat(st.st_size, st.st_mtime)

    def get(self, cid: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            fd = os.open(self.layout.chunk_path(cid), os.O_RDONLY)
        except FileNotFoundError:
            raise ChunkMissing(cid) from None
        try:
            if length is None:
                length = max(0, os.fstat(fd).st_size - offset)
            out = os.pread(fd, length, offset)
            while len(out) < length:  # a short read from a regular file is rare, not an error
                more = os.pread(fd, length - len(out), offset + len(out))
                if not more:
                    break
                out += more
            return out
        finally:
            os.close(fd)

    def put(self, cid: str, frame: bytes | memoryview) -> bool:
        return self.fs.write_atomic(self.layout.chunk_path(cid), frame, self.layout.tmp)

    def delete(self, cid: str) -> bool:
        path = self.layout.chunk_path(cid)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        self.fs.fsync_dir(path.parent)
        return True

    def list(self) -> Iterator[str]:
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

    # --- FileBackend ------------------------------------------------------------------

    def publish_file(self, cid: str, tmp: Path) -> bool:
        return self.fs.publish(tmp, self.layout.chunk_path(cid))

    def sync(self, cids: Iterable[str], pool: Executor | None = None) -> None:
        dirs = sorted({self.layout.chunk_dir(c) for c in cids})
        if pool is not None and len(dirs) > 1:
            list(pool.map(self.fs.fsync_dir, dirs))
        else:
            for d in dirs:
                self.fs.fsync_dir(d)

    def path_of(self, cid: str) -> Path:
        return self.layout.chunk_path(cid)

    def capacity(self) -> tuple[int, int]:
        st = os.statvfs(self.layout.chunks)
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize

    def prepare(self, cid: str) -> None:
        self.fs.makedirs(self.layout.chunk_dir(cid))

    def remove(self, cid: str) -> bool:
        try:
            os.unlink(self.layout.chunk_path(cid))
            return True
        except FileNotFoundError:
            return False
