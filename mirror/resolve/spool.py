"""Spools: what a cache fill writes while it downloads one file content.

`FillTarget` names the content (repo, commit, listing entry). Its spool is two files
(see store/layout.py): `<identity>.part`, the bytes so far, and `<identity>.meta`, a
JSON record of the target and whether the bytes were verified; `write_record` and
`read_record` own that record, so a restart can resume or ingest the spool.

`SpoolWriter` hashes and writes a fill's bytes on its own thread, pipelined with the
network reads on the event loop.

The loop hands over each piece as it arrives and goes back to reading; one worker thread
(so pieces stay in order) updates the hash and writes the piece at its offset. Completed
pieces are retired in order: `on_written(offset, piece)` runs on the loop, which is when
followers may see them. At most `max_inflight` bytes wait in the queue (memory bound).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mirror.model import FileEntry, RepoKey


@dataclass(frozen=True, slots=True)
class FillTarget:
    key: RepoKey
    commit: str
    entry: FileEntry

    @property
    def identity(self) -> str:
        return self.entry.identity

    @property
    def size(self) -> int:
        return self.entry.size


def write_record(meta_path: Path, target: FillTarget, verified: bool) -> None:
    e = target.entry
    record = {
        "identity": target.identity,
        "repo_type": target.key.repo_type,
        "repo_id": target.key.repo_id,
        "commit": target.commit,
        "path": e.path,
        "oid": e.oid,
        "size": e.size,
        "lfs_sha256": e.lfs_sha256,
        "verified": verified,
    }
    tmp = meta_path.with_suffix(".meta-tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, meta_path)


def read_record(meta_path: Path) -> tuple[FillTarget, bool]:
    """Raises ValueError, KeyError or TypeError on a malformed record."""
    r = json.loads(meta_path.read_text())
    entry = FileEntry(r["path"], "file", r["oid"], int(r["size"]), r.get("lfs_sha256"))
    target = FillTarget(RepoKey(r["repo_type"], r["repo_id"]), r["commit"], entry)
    if target.identity != r["identity"]:
        raise ValueError("spool record identity does not match its entry")
    return target, bool(r.get("verified"))


class SpoolWriter:
    def __init__(self, fd: int, hasher: object, offset: int, on_written: Callable[[int, bytes], None], max_inflight: int = 8 << 20) -> None:
        self.fd = fd
        self.hasher = hasher
        self.offset = offset  # where the next submitted piece goes
        self.on_written = on_written
        self.max_inflight = max_inflight
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._inflight: deque[tuple[Future[None], int, bytes]] = deque()
        self._bytes = 0
        # End of the last piece known written, in order: the truth after a failed write
        # (`offset` also counts pieces submitted but never written).
        self.retired = offset

    async def submit(self, piece: bytes) -> None:
        fut = self._pool.submit(_write_and_hash, self.fd, piece, self.offset, self.hasher)
        self._inflight.append((fut, self.offset, piece))
        self.offset += len(piece)
        self._bytes += len(piece)
        self.retire()
        while self._bytes > self.max_inflight:
            await asyncio.wrap_future(self._inflight[0][0])
            self.retire()

    def retire(self) -> None:
        """Report every leading piece whose write finished (raises its error, if any)."""
        while self._inflight and self._inflight[0][0].done():
            fut, off, piece = self._inflight.popleft()
            self._bytes -= len(piece)
            fut.result()
            self.retired = off + len(piece)
            self.on_written(off, piece)

    async def drain(self) -> None:
        """Wait for every submitted piece, retiring them in order."""
        try:
            while self._inflight:
                await asyncio.wrap_future(self._inflight[0][0])
                self.retire()
        finally:
            self._pool.shutdown(wait=True)


def _write_and_hash(fd: int, data: bytes, offset: int, hasher: object) -> None:
    hasher.update(data)  # type: ignore[attr-defined]
    view = memoryview(data)
    pos = offset
    while view:
        n = os.pwrite(fd, view, pos)
        view = view[n:]
        pos += n


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def hash_prefix(fd: int, length: int, hasher: "object") -> None:
    pos = 0
    while pos < length:
        data = os.pread(fd, min(8 << 20, length - pos), pos)
        if not data:
            break
        hasher.update(data)  # type: ignore[attr-defined]
        pos += len(data)
