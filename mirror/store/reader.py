"""Reading any byte range of a stored file, as a stream of pieces.

`iter_range` locates the first chunk by offset (bisect over the manifest's offsets),
then reads and decodes chunks in worker threads, so decompression and verification never
run on the event loop. The read-ahead follows the consumer: a chunk is decoded ahead only
for a consumer that came back for its last chunk quickly (its socket drains), and grows
up to `readahead` chunks while it has to wait for decoding. A slow consumer (a client
reading at a few KB/s) holds only the chunk it is sending and queues no decode work that
could delay other requests in the shared pool. Streams of the same chunks at once (a herd
of clients, many slow readers of one file) share one decode and one decoded copy, held as
long as any of them needs it: memory is about one chunk per stream at most (1 MiB on
average, 4 MiB at most), less when they read the same file. With a `LeaseTable`, the chunks of a file
are leased while it streams (GC skips leased chunks); closing the stream (the server does
it as soon as its client is gone) cancels the queued decodes and releases the leases.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import weakref
from concurrent.futures import Executor
from typing import AsyncIterator, Protocol, Sequence

from mirror.manifest import ChunkRef
from mirror.store.codec import Buffer
from mirror.store.leases import LeaseTable


class ChunkSource(Protocol):
    """What the reader needs of the chunk store (store/chunkstore.py `ChunkStore.read`,
    or a wrapper of it): a chunk's raw bytes, verified; blocking, thread-safe."""

    def read(self, cid: str, expected_len: int | None = None) -> Buffer: ...


# A consumer that took its last chunk slower than this (bytes/s) is the bottleneck itself
# and gets no read-ahead: a decode on demand costs it a few ms while its socket still
# drains, whereas a chunk decoded ahead for it is held in memory (up to 4 MiB) for as long
# as the client takes, times the number of slow clients.
_SLOW_CONSUMER = 8e6


class _Decoded:
    """A decoded chunk, weakly shareable: every stream that holds it keeps it alive."""

    __slots__ = ("data", "__weakref__")

    def __init__(self, data: bytes) -> None:
        self.data = data


class _Flight:
    """One decode in the pool and the number of streams waiting for it."""

    __slots__ = ("future", "waiters")

    def __init__(self, future: "asyncio.Future[_Decoded]") -> None:
        self.future = future
        self.waiters = 0


class ChunkReader:
    def __init__(self, store: ChunkSource, executor: Executor, readahead: int = 4, leases: LeaseTable | None = None) -> None:
        self.store = store
        self.executor = executor
        self.readahead = readahead
        self.leases = leases
        # Streams of one file at once (a herd, many slow clients) share its decoded chunks:
        # one decode, one copy in memory, for as long as any of them holds it.
        self._live: weakref.WeakValueDictionary[str, _Decoded] = weakref.WeakValueDictionary()
        self._flights: dict[str, _Flight] = {}

    def _decode(self, c: ChunkRef) -> "asyncio.Future[_Decoded]":
        """A future of chunk `c` decoded: the live copy if a stream holds one, else a
        decode in the pool shared by every stream that asks meanwhile. Cancelling the
        future leaves the others alone; the decode itself is dropped when none waits."""
        loop = asyncio.get_running_loop()
        live = self._live.get(c.chunk_id)
        if live is not None:
            ready: asyncio.Future[_Decoded] = loop.create_future()
            ready.set_result(live)
            return ready
        flight = self._flights.get(c.chunk_id)
        if flight is None or flight.future.get_loop() is not loop:
            flight = _Flight(loop.run_in_executor(self.executor, self._read, c.chunk_id, c.length))
            self._flights[c.chunk_id] = flight
            flight.future.add_done_callback(functools.partial(self._landed, c.chunk_id, flight))
        flight.waiters += 1
        mine = asyncio.shield(flight.future)
        mine.add_done_callback(functools.partial(self._left, flight))
        return mine

    def _read(self, cid: str, length: int) -> _Decoded:
        return _Decoded(self.store.read(cid, length))

    def _landed(self, cid: str, flight: _Flight, fut: "asyncio.Future[_Decoded]") -> None:
        if self._flights.get(cid) is flight:
            del self._flights[cid]
        if not fut.cancelled() and fut.exception() is None:
            self._live[cid] = fut.result()

    @staticmethod
    def _left(flight: _Flight, _fut: "asyncio.Future[_Decoded]") -> None:
        flight.waiters -= 1
        if not flight.waiters and not flight.future.done():
            flight.future.cancel()  # every stream that wanted it is gone: unqueue it

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
        pending: list[asyncio.Future[_Decoded]] = []
        idx = first

        def schedule(n: int) -> None:
            nonlocal idx
            while len(pending) < n and idx < len(chunks) and offsets[idx] < end:
                pending.append(self._decode(chunks[idx]))
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
                decoded = await pending.pop(0)  # held while yielded: others may share it
                raw = decoded.data
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
                del raw, decoded
                i += 1
        finally:
            for f in pending:
                f.cancel()
            if self.leases is not None:
                self.leases.release(held)
