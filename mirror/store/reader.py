"""Reading any byte range of a stored file, as a stream of pieces.

`iter_range` locates the first chunk by offset (bisect over the manifest's offsets),
then reads and decodes chunks in worker threads, so decompression and verification never
run on the event loop. The read-ahead follows the consumer: a chunk is decoded ahead only
for a consumer that came back for its last chunk quickly (its socket drains), and grows
up to `readahead` chunks while it has to wait for decoding. A slow consumer (a client
reading at a few KB/s) holds only the chunk it is sending and queues no decode work that
could delay other requests in the shared pool. With a `LeaseTable`, the chunks of a file
are leased while it streams (GC skips leased chunks); closing the stream (the server does
it as soon as its client is gone) cancels the queued decodes and releases the leases.
"""

from __future__ import annotations

import asyncio
import bisect
from concurrent.futures import Executor
from typing import AsyncIterator, Sequence

from mirror.manifest import ChunkRef
from mirror.store.chunkstore import ChunkStore
from mirror.store.leases import LeaseTable


# A consumer that took its last chunk slower than this (bytes/s) is the bottleneck itself
# and gets no read-ahead: a decode on demand costs it a few ms while its socket still
# drains, whereas a chunk decoded ahead for it is held in memory (up to 4 MiB) for as long
# as the client takes, times the number of slow clients.
_SLOW_CONSUMER = 8e6


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

        def schedule(n: int) -> None:
            nonlocal idx
            while len(pending) < n and idx < len(chunks) and offsets[idx] < end:
                c = chunks[idx]
                pending.append(loop.run_in_executor(self.executor, self.store.read, c.chunk_id, c.length))
                idx += 1

        # Lease the file's chunks while streaming, so GC in this process keeps them.
        held = self.leases.acquire(c.chunk_id for c in chunks) if self.leases is not None else ()
        try:
            ahead = 0  # chunks decoded beyond the one the consumer is sending
            rate: float | None = None  # bytes/s the consumer took the last chunk at
            i = first
            while i < len(chunks) and offsets[i] < end:
                if not pending:
                    schedule(1)
                waited = not pending[0].done()
                raw = await pending.pop(0)
                if rate is not None and rate < _SLOW_CONSUMER:
                    ahead = 0
                elif rate is not None and waited:
                    ahead = min(ahead + 1, self.readahead)
                schedule(ahead)
                lo = max(start - offsets[i], 0)
                hi = min(end - offsets[i], len(raw))
                given = loop.time()
                yield memoryview(raw)[lo:hi] if (lo or hi != len(raw)) else raw
                rate = (hi - lo) / max(loop.time() - given, 1e-6)
                del raw
                i += 1
        finally:
            for f in pending:
                f.cancel()
            if self.leases is not None:
                self.leases.release(held)
