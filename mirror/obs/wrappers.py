"""Wrappers that count: components the composition root (node.py) wraps before it hands
them on, so no component counts anything itself.

    Files (what the HTTP edge is given)  -> MeteredFiles: file bodies opened and bytes
                                            handed out, by source (store, fill, direct)
    ChunkStore (what ChunkReader reads)  -> TimedChunks: seconds per chunk read, raw bytes,
                                            blake3 checks and failures (CorruptChunk)
    UpstreamOrigin (in the origin list)  -> VerdictOrigin: whole-file hash checks and
                                            mismatches (the Fetcher and direct streams
                                            tell every origin the verdict: one count each)
    the upstream HTTP session            -> upstream_trace: requests by outcome and their
                                            latency (aiohttp's client tracing)

Each wrapper keeps its inner object's contract (same results, same exceptions, streams
closed as promptly); it only observes.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, AsyncIterator

import aiohttp

from mirror.caller import Caller
from mirror.errors import CorruptChunk
from mirror.model import FileEntry, RepoKey
from mirror.obs.counts import Tally
from mirror.obs.metrics import Metrics
from mirror.resolve.files import Files, Source
from mirror.resolve.metadata import Resolved
from mirror.resolve.origin import Origin, Sink
from mirror.resolve.spool import FillTarget
from mirror.store.chunkstore import ChunkStore
from mirror.store.codec import Buffer


class CountedSource:
    """A file source whose pieces are counted as they are handed out."""

    def __init__(self, inner: Source, sent: Tally) -> None:
        self.inner = inner
        self.kind = inner.kind
        self._sent = sent

    async def iter(self, start: int, end: int) -> AsyncIterator[bytes | memoryview]:
        pieces = self.inner.iter(start, end)
        key = (self.kind,)
        try:
            async for piece in pieces:
                self._sent.add(key, len(piece))
                yield piece
        finally:
            # Closed now, not at garbage collection: the inner stream's read-ahead and
            # leases go as soon as the client does (http/hub_files.py `_stop`).
            aclose = getattr(pieces, "aclose", None)
            if aclose is not None:
                await aclose()


class MeteredFiles:
    """`Files` as the HTTP edge uses it (`locate`, `open`), counting what `open` gives."""

    def __init__(self, inner: Files, metrics: Metrics) -> None:
        self.inner = inner
        self._opened = metrics.file_requests
        self._sent = metrics.file_bytes

    async def locate(self, key: RepoKey, revision: str, path: str, caller: Caller) -> tuple[Resolved, FileEntry]:
        return await self.inner.locate(key, revision, path, caller)

    async def open(self, res: Resolved, entry: FileEntry, caller: Caller) -> Source:
        source = await self.inner.open(res, entry, caller)
        self._opened.add((source.kind,))
        return CountedSource(source, self._sent)


class TimedChunks:
    """The chunk store's `read` as ChunkReader calls it (in worker threads), timed."""

    def __init__(self, inner: ChunkStore, metrics: Metrics) -> None:
        self.inner = inner
        self._reads = metrics.reads

    def read(self, cid: str, expected_len: int | None = None) -> Buffer:
        t = time.perf_counter()
        try:
            data = self.inner.read(cid, expected_len)
        except CorruptChunk:
            self._reads.done(time.perf_counter() - t, 0, False)
            raise
        except BaseException:
            self._reads.done(time.perf_counter() - t, 0, None)  # missing, unreadable: no check was made
            raise
        self._reads.done(time.perf_counter() - t, len(data), True if self.inner.verify_reads else None)
        return data


class VerdictOrigin:
    """An origin whose whole-file verdicts are counted (wrap exactly one origin of the
    list: every origin hears every verdict)."""

    def __init__(self, inner: Origin, metrics: Metrics) -> None:
        self.inner = inner
        self.name = inner.name
        self._checks = metrics.file_checks

    async def fill(self, target: FillTarget, sink: Sink, caller: Caller) -> None:
        await self.inner.fill(target, sink, caller)

    def judged(self, identity: str, hash_ok: bool) -> None:
        self._checks.add(("ok",) if hash_ok else ("failed",))
        self.inner.judged(identity, hash_ok)


# Failures that mean no answer came: the host is down, unroutable, or refused us.
_UNREACHABLE = (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ConnectionTimeoutError)


def upstream_trace(metrics: Metrics) -> aiohttp.TraceConfig:
    """A client trace for the upstream session: each request (each redirect hop is
    one) counted by outcome, and its time to response headers."""
    outcomes = metrics.upstream
    latency = metrics.upstream_latency

    async def start(_session: aiohttp.ClientSession, ctx: SimpleNamespace, _params: Any) -> None:
        ctx.started = time.perf_counter()

    async def end(_session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestEndParams) -> None:
        latency.observe(time.perf_counter() - ctx.started)
        status = params.response.status
        outcomes.add(("429",) if status == 429 else (f"{min(max(status // 100, 2), 5)}xx",))

    async def failed(_session: aiohttp.ClientSession, _ctx: SimpleNamespace,
                     params: aiohttp.TraceRequestExceptionParams) -> None:
        outcomes.add(("unreachable",) if isinstance(params.exception, _UNREACHABLE) else ("error",))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(start)
    trace.on_request_end.append(end)
    trace.on_request_exception.append(failed)
    return trace
