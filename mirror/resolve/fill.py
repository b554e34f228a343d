"""A fill: one file content being brought into a spool file, followed by its clients.

Any number of clients stream it *from the spool* behind the writer (followers read from
disk, never from a shared RAM queue, so slow clients cost no memory). The last
`HOLDBACK` bytes of the file, and of each response, are withheld until the whole file is
verified; on failure every follower gets an error and the edge aborts its connection.
The fetch that feeds a fill is the `Fetcher`'s (resolve/fetcher.py).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import AsyncIterator

from mirror.errors import MirrorError, StorageError, UpstreamError
from mirror.manifest import ChunkRef
from mirror.resolve.spool import FillTarget
from mirror.store.chunkstore import Staged

HOLDBACK = 64 << 10
PIECE = 1 << 20

__all__ = ["Fill", "FillTarget", "HOLDBACK", "PIECE"]


class Fill:
    def __init__(self, target: FillTarget, spool: Path, meta: Path) -> None:
        self.target = target
        self.spool = spool
        self.meta = meta
        self.written = 0
        self.verified = False
        self.error: MirrorError | None = None
        self.done = asyncio.Event()
        self.ingested = asyncio.Event()
        self._changed = asyncio.Event()
        self.lock_fd: int | None = None
        # Verified chunks of the whole file, staged by an origin (Sink.offer): the
        # ingest adopts them instead of cutting the spool again.
        self.prechunked: "tuple[tuple[ChunkRef, ...], list[Staged]] | None" = None
        # The origin feeding the fill now (its name counts the bytes: "<name>_bytes").
        self.source = ""
        # The newest written piece, kept by reference so that followers which are caught
        # up take it from memory instead of reading it back from the spool.
        self.recent_offset = 0
        self.recent: bytes = b""
        # Clients streaming from this fill; the ingest waits for them (it would compete
        # with them for the CPU), up to INGEST_WAIT.
        self.readers = 0
        self.no_readers = asyncio.Event()
        self.no_readers.set()

    @property
    def size(self) -> int:
        return self.target.size

    def readable(self) -> int:
        """Bytes a follower may read now: all once verified, else all but the tail."""
        if self.verified:
            return self.size
        return min(self.written, max(0, self.size - HOLDBACK))

    async def wait_started(self, timeout: float) -> None:
        """Wait until the first bytes arrived, the fill ended, or `timeout` passed: an
        upstream that fails at once is then answered with a proper error status instead
        of a 200 whose body breaks off."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.written and not self.done.is_set() and not self.verified:
            left = deadline - loop.time()
            if left <= 0:
                return
            changed = self._changed
            try:
                async with asyncio.timeout(left):
                    await changed.wait()
            except TimeoutError:
                return

    async def wait_written(self, n: int) -> None:
        """Wait until the first `n` bytes are in the spool (not necessarily verified) or
        the fill ended: a scanner reads a file's header before the fill completes."""
        while self.written < n and not self.done.is_set() and not self.verified:
            await self._changed.wait()

    def notify(self) -> None:
        ev, self._changed = self._changed, asyncio.Event()
        ev.set()

    async def stream(self, start: int, end: int) -> AsyncIterator[bytes | memoryview]:
        """Yield bytes [start, end) of the file as the fill makes them available.

        Until the file is verified, the last bytes of *this response* are held back
        too, not only the file's tail: a Range answered from a running fill never
        completes with bytes a later check could reject, so a client resuming or
        stitching ranges (`curl -C -`, aria2) cannot assemble a wrong file."""
        loop = asyncio.get_running_loop()
        own_tail = end - min(HOLDBACK, end - start)
        try:
            fd = os.open(self.spool, os.O_RDONLY)
        except FileNotFoundError:
            # The fill failed and dropped its spool before this follower opened it.
            raise UpstreamError(f"upstream fetch failed: {self.error.message if self.error else 'spool is gone'}") from None
        self.add_reader()
        try:
            pos = start
            while pos < end:
                if isinstance(self.error, StorageError):
                    raise StorageError(self.error.message)  # the edge may go on uncached
                if self.error is not None:
                    raise UpstreamError(f"upstream fetch failed: {self.error.message}")
                limit = end if self.verified else min(self.readable(), own_tail)
                if pos < limit:
                    rel = pos - self.recent_offset
                    if 0 <= rel < len(self.recent):
                        hi = min(len(self.recent), limit - self.recent_offset)
                        view = memoryview(self.recent)[rel:hi]
                        pos += len(view)
                        yield view  # type: ignore[misc]
                        continue
                    n = min(limit - pos, PIECE)
                    data = await loop.run_in_executor(None, os.pread, fd, n, pos)
                    if not data:
                        raise UpstreamError("spool shrank under a reader")
                    pos += len(data)
                    yield data
                    continue
                if self.done.is_set() and not self.verified:
                    raise UpstreamError("upstream fetch failed")
                changed = self._changed
                try:
                    async with asyncio.timeout(30):  # a safety net: every change notifies
                        await changed.wait()
                except TimeoutError:
                    continue
        finally:
            os.close(fd)
            self.drop_reader()

    def add_reader(self) -> None:
        """One more reader of the spool: the ingest (which drops the spool) waits for
        them all to be gone (a follower's stream, a scanner handing over to one)."""
        self.readers += 1
        self.no_readers.clear()

    def drop_reader(self) -> None:
        self.readers -= 1
        if not self.readers:
            self.no_readers.set()
