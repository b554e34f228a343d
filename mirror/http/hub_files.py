"""`HEAD`/`GET /{repo}/resolve/{revision}/{path}` (hf-protocol.md §2).

HEAD answers 200 with the metadata headers and the exact size, never a redirect. GET
streams from the best source (resolve/files.py) with 200, or 206 for a single valid
Range. When a source fails after the headers went out, the connection is aborted so the
client sees a failed download, never a short or wrong "complete" file.

Every request that found its file is counted for its version (channels/metrics.py
`observe`: memory only): the status it ended with and the bytes sent.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

from aiohttp import web

from mirror.caller import Caller
from mirror.errors import MirrorError
from mirror.http import parse
from mirror.http.caller import caller_of
from mirror.http.context import COUNTERS, FILES, VERSIONS, FileService, resolved_headers
from mirror.http.middleware import SOURCE, client_aborted
from mirror.model import FileEntry
from mirror.resolve.metadata import Resolved

log = logging.getLogger("mirror.http")

# Above this the Hub client refuses a non-Xet download when it knows the size (§2.3).
_HF_SIZE_GUARD = 50_000_000_000
# The transport's buffer above which a response waits for its socket to drain, and the
# largest single write. A fast client is fed from the kernel's socket buffer meanwhile;
# a slow one holds at most about high + one slice here, not megabytes (100 slow clients).
_WRITE_HIGH = 128 << 10
_WRITE_LOW = 32 << 10
_SLICE = 128 << 10
# Seconds between checks that a client whose stream waits for its source is still there.
_GONE_CHECK = 0.5


def _file_headers(res: Resolved, entry: FileEntry) -> dict[str, str]:
    h = {
        **resolved_headers(res),
        "ETag": f'"{entry.etag}"',
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
    }
    # The Hub sends these for LFS files only; sending them for every file gives old and
    # new clients one source of truth (the client prefers X-Linked-Etag to ETag).
    h["X-Linked-Etag"] = f'"{entry.etag}"'
    if entry.size <= _HF_SIZE_GUARD:
        h["X-Linked-Size"] = str(entry.size)
    return h


async def resolve_file(request: web.Request) -> web.StreamResponse:
    key = parse.repo_key(request)
    rev, path = parse.split_special_revision(request.match_info["rev"], request.match_info["path"])
    rev = parse.revision(rev)
    path = parse.file_path(path)
    caller = caller_of(request)
    files = request.app[FILES]
    res, entry = await files.locate(key, rev, path, caller)
    # Counted for its version (channels/metrics.py): what the client got, in memory.
    outcome = _Outcome()
    try:
        return await _send(request, files, res, entry, caller, outcome)
    except MirrorError as exc:
        outcome.status = exc.status
        raise
    except (asyncio.CancelledError, ConnectionError):
        outcome.status = 499
        raise
    finally:
        request.app[VERSIONS].observe(res.repo, res.commit, caller.client_key, outcome.status, outcome.sent)


class _Outcome:
    """The status a request ended with (500 until it is known: an escaped exception
    and a stream aborted by a failing source are the mirror's failures; 499 is a
    client that went away) and the bytes sent."""

    __slots__ = ("status", "sent")

    def __init__(self) -> None:
        self.status = 500
        self.sent = 0


async def _send(request: web.Request, files: FileService, res: Resolved, entry: FileEntry, caller: Caller,
                outcome: _Outcome) -> web.StreamResponse:
    key, path = res.key, entry.path
    headers = _file_headers(res, entry)
    if request.method == "HEAD":
        if entry.size <= _HF_SIZE_GUARD:
            headers["Content-Length"] = str(entry.size)
        outcome.status = 200
        return web.Response(status=200, headers=headers)
    rng = parse.byte_range(request.headers.get("Range"), entry.size)
    if rng is not None and request.headers.get("If-Range") and request.headers["If-Range"].strip() != headers["ETag"]:
        rng = None  # a stale validator: RFC 9110 says send the whole file
    start, end = rng if rng is not None else (0, entry.size)
    source = await files.open(res, entry, caller)
    request[SOURCE] = source.kind  # the access line's source and cache outcome
    if source.kind == "direct":
        headers["X-Mirror-Cache"] = "bypass; the mirror is short of disk space and does not keep this file"
    resp = web.StreamResponse(status=206 if rng is not None else 200, headers=headers)
    resp.content_length = end - start
    if rng is not None:
        resp.headers["Content-Range"] = f"bytes {start}-{end - 1}/{entry.size}"
    transport = request.transport
    if transport is not None:
        # A socket that does not drain holds at most this much of its response here.
        transport.set_write_buffer_limits(high=_WRITE_HIGH, low=_WRITE_LOW)
    progress = [0]
    pieces = source.iter(start, end)
    pump: asyncio.Future[None] | None = None
    STREAMS.open += 1
    try:
        await resp.prepare(request)
        pump = asyncio.ensure_future(_pump(resp, pieces, progress))
        if not await _done_or_gone(request, pump):
            # The client went away while the stream waited for its source: drop the work
            # queued for it now, and end like a failed write would.
            raise ConnectionResetError("client went away")
        pump.result()
    except MirrorError as exc:
        log.warning("aborting %s %s after %d/%d bytes: %s", key, path, progress[0], end - start, exc.message)
        _abort(request)
        return resp
    except ConnectionError:
        # The client went away (interrupted download, a parallel downloader closing a
        # spare connection): its doing, not ours. The access line says 499; no traceback.
        client_aborted(request, progress[0])
        outcome.status = 499
        _abort(request)
        return resp
    except Exception:
        if not resp.prepared:
            raise  # the errors middleware answers 500 in the Hub's format
        # Headers are out: a 500 cannot be sent any more, so the client must see a
        # broken download, never a hang or a short "complete" one.
        log.exception("internal error while streaming %s %s after %d bytes; aborting", key, path, progress[0])
        _abort(request)
        return resp
    finally:
        await _stop(pump, pieces)
        STREAMS.open -= 1
        request.app[COUNTERS].bump("served_bytes", progress[0])
        outcome.sent = progress[0]
    if progress[0] != end - start:
        _abort(request)
        return resp
    await resp.write_eof()
    outcome.status = resp.status
    return resp


class _Streams:
    """Responses whose body is being sent now, in this process (`streams` in /healthz)."""

    open = 0


STREAMS = _Streams()


async def _pump(resp: web.StreamResponse, pieces: AsyncIterator[bytes | memoryview], progress: list[int]) -> None:
    async for piece in pieces:
        if len(piece) <= _SLICE:
            await resp.write(piece)
        else:
            # In slices: the transport copies what the socket does not take at once,
            # and a whole chunk (up to 4 MiB) per slow client would add up.
            view = memoryview(piece)
            for i in range(0, len(view), _SLICE):
                await resp.write(view[i:i + _SLICE])
        progress[0] += len(piece)


async def _done_or_gone(request: web.Request, pump: "asyncio.Future[None]") -> bool:
    """Wait for the pump; False as soon as the client's connection is found closed. A
    write to a closed socket fails at once, but a pump waiting for a read-ahead decode or
    a fill's next bytes would otherwise keep that work queued for nobody."""
    while True:
        done, _ = await asyncio.wait({pump}, timeout=_GONE_CHECK)
        if done:
            return True
        transport = request.transport
        if transport is None or transport.is_closing():
            return False


async def _stop(pump: "asyncio.Future[None] | None", pieces: AsyncIterator[bytes | memoryview]) -> None:
    """End the pump and close the source now, not at garbage collection, so its
    read-ahead is cancelled and its leases (or the fill's reader slot) released."""
    if pump is not None and not pump.done():
        pump.cancel()
        await asyncio.wait({pump})
    if pump is not None and pump.done() and not pump.cancelled():
        pump.exception()  # retrieved here; re-raised by the caller's pump.result()
    aclose = getattr(pieces, "aclose", None)
    if aclose is not None:
        await aclose()


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()
