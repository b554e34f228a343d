"""Reading any byte range of a stored file, as a stream of pieces.

`iter_range` locates the first chunk by offset (bisect over the manifest's offsets),
then reads and decodes chunks in worker threads with a bounded read-ahead, so
decompression and verification never run on the event loop and memory stays at
about `readahead` chunks per stream, whatever the file size. With a `LeaseTable`, the
chunks of a file are leased while it streams (GC skips leased chunks).
"""

from __future__ import annotations

import asyncio
import bisect
from concurrent.futures import Executor
from typing import AsyncIterator, Sequence

from mirror.manifest import ChunkRef
from mirror.store.chunkstore import ChunkStore
from mirror.store.leases import LeaseTable


class ChunkReader:
    def __init__(self, store: ChunkStore, executor: Executor, readahead: int = 4, leases: LeaseTable | None = None) -> None:
        self.store = store
        self.executor = executor
        self.readahead = readahead
        self.leases = leases

    async def iter_range(self, chunks: Sequence[ChunkRef], start: int, end: int) -> AsyncIterator[bytes | memoryview]:
        """Yield the bytes [start, end) of the file made of `chunks`."""
        if start >= end:
            return
        offsets = []
        pos = 0
        for c in chunks:
            offsets.append(pos)
            pos += c.length
        first = bisect.bisect_right(offsets, start) - 1
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[bytes]] = []
        idx = first

        def schedule() -> None:
            nonlocal idx
            while len(pending) < self.readahead and idx < len(chunks) and offsets[idx] < end:
                c = chunks[idx]
                pending.append(loop.run_in_executor(self.executor, self.store.read, c.chunk_id, c.length))
                idx += 1

        # Lease the file's chunks while streaming, so GC in this process keeps them.
        held = self.leases.acquire(c.chunk_id for c in chunks) if self.leases is not None else ()
        try:
            schedule()
            i = first
            while pending:
                raw = await pending.pop(0)
                schedule()
                lo = max(start - offsets[i], 0)
                hi = min(end - offsets[i], len(raw))
                yield memoryview(raw)[lo:hi] if (lo or hi != len(raw)) else raw
                i += 1
        finally:
            for f in pending:
                f.cancel()
            if self.leases is not None:
                self.leases.release(held)
