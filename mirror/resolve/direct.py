"""Direct streams: a file delivered by the origins to one client without caching, for
when the node cannot store it (the data volume is short of space, store/space.py).

The same origins as a fill deliver the bytes (resolve/origin.py), into a `PipeSink`
instead of a spool: pieces go through the file's identity hash and then to the client
through a small queue (the client's speed paces the origins; nothing touches the disk).
Integrity is a fill's: a Range is served from a stream of the whole file (bytes outside
the range are hashed and dropped), and the last bytes of the response are held back in
memory until the whole file matches its identity; on a mismatch the client's connection
is aborted.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Sequence

from mirror.caller import Caller
from mirror.errors import HashMismatch, MirrorError, UpstreamError, UpstreamUnavailable
from mirror.ingest import identity_hasher
from mirror.resolve.fill import HOLDBACK, FillTarget
from mirror.resolve.origin import Origin, check_chunk, judge

log = logging.getLogger("mirror.files")

_QUEUE = 8  # pieces between the origins and the client


class PipeSink:
    """A sink whose pieces go to one reader through a bounded queue, hashed on the way."""

    def __init__(self, target: FillTarget) -> None:
        self.size = target.size
        self.hasher = identity_hasher(target.identity, target.size)
        # Pieces in file order; None once the origins are done (or failed).
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(_QUEUE)
        self.started = asyncio.Event()
        self._offset = 0

    @property
    def offset(self) -> int:
        return self._offset

    async def write(self, piece: bytes) -> None:
        if not piece:
            return
        if self._offset + len(piece) > self.size:
            raise UpstreamError("origin sent more bytes than the file size")
        self.hasher.update(piece)
        self._offset += len(piece)
        self.started.set()
        await self.queue.put(piece)

    async def write_chunk(self, chunk_id: str, raw: bytes) -> None:
        check_chunk(chunk_id, raw)
        await self.write(raw)

    async def drain(self) -> None:
        return None

    keeps = False  # nothing is kept: origins never offer chunks to a pipe

    def offer(self, chunks: object, staged: object) -> None:
        raise AssertionError("a direct stream keeps nothing")


class DirectSource:
    kind = "direct"

    def __init__(self, origins: Sequence[Origin], target: FillTarget, caller: Caller) -> None:
        self.origins = origins
        self.target = target
        self.caller = caller
        self.sink = PipeSink(target)
        self._task: asyncio.Task[None] | None = None
        self.error: MirrorError | None = None

    async def open(self, first_byte_wait: float = 8.0) -> None:
        """Start the origins and wait for the first piece, so that a failure before any
        byte becomes a proper error status before the client's headers are sent."""
        self._task = asyncio.ensure_future(self._run())
        waiter = asyncio.ensure_future(self.sink.started.wait())
        await asyncio.wait({waiter, self._task}, timeout=first_byte_wait, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self._task.done() and self.sink.offset == 0 and self.error is not None:
            raise self.error

    async def _run(self) -> None:
        """Ask the origins in order until the whole file went through the sink."""
        t, sink = self.target, self.sink
        try:
            for origin in self.origins:
                if sink.offset >= t.size:
                    break
                try:
                    await origin.fill(t, sink, self.caller)
                    self.error = None
                except MirrorError as exc:
                    self.error = exc
            if sink.offset < t.size and self.error is None:
                self.error = UpstreamUnavailable(f"no origin has {t.entry.path}")
        finally:
            if sink.offset < t.size and self.error is None:
                self.error = UpstreamError("the stream was stopped")
            await sink.queue.put(None)

    async def iter(self, start: int, end: int) -> AsyncIterator[bytes | memoryview]:
        if self._task is None:
            await self.open()
        assert self._task is not None
        t, sink = self.target, self.sink
        own_tail = end - min(HOLDBACK, end - start)
        held = bytearray()
        pos = 0
        try:
            while True:
                piece = await sink.queue.get()
                if piece is None:
                    break
                lo, hi = max(start, pos), min(end, pos + len(piece))
                if lo < hi:
                    out = memoryview(piece)[lo - pos:hi - pos]
                    free = max(0, min(hi, own_tail) - lo)  # bytes before the response's tail
                    if free:
                        yield out[:free]
                    if free < len(out):
                        held += out[free:]
                pos += len(piece)
        finally:
            if not self._task.done():
                self._task.cancel()
        if self.error is not None or pos != t.size:
            raise self.error or UpstreamError(f"the stream ended at {pos} of {t.size} bytes")
        expected = t.identity.split(":", 1)[1]
        judge(self.origins, t.identity, sink.hasher.hexdigest() == expected)
        if sink.hasher.hexdigest() != expected:
            log.error("integrity: %s %s@%s direct stream does not match %s; aborted", t.key, t.commit[:12], t.entry.path, t.identity)
            raise HashMismatch(f"{t.key} {t.entry.path}", expected, sink.hasher.hexdigest())
        if held:
            yield bytes(held)
