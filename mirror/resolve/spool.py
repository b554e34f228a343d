"""SpoolWriter: hashes and writes a fill's bytes on its own thread, pipelined with the
network reads on the event loop.

The loop hands over each piece as it arrives and goes back to reading; one worker thread
(so pieces stay in order) updates the hash and writes the piece at its offset. Completed
pieces are retired in order: `on_written(offset, piece)` runs on the loop, which is when
followers may see them. At most `max_inflight` bytes wait in the queue (memory bound).
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable


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
