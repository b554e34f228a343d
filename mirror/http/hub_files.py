"""`HEAD`/`GET /{repo}/resolve/{revision}/{path}` (hf-protocol.md §2).

HEAD answers 200 with the metadata headers and the exact size, never a redirect. GET
streams from the best source (resolve/files.py) with 200, or 206 for a single valid
Range. When a source fails after the headers went out, the connection is aborted so the
client sees a failed download, never a short or wrong "complete" file.
"""

from __future__ import annotations

import logging

from aiohttp import web

from mirror.errors import MirrorError
from mirror.http import parse
from mirror.http.caller import caller_of
from mirror.http.context import COUNTERS, FILES, stale_headers
from mirror.http.middleware import client_aborted
from mirror.model import FileEntry
from mirror.resolve.metadata import Resolved

log = logging.getLogger("mirror.http")

# Above this the Hub client refuses a non-Xet download when it knows the size (§2.3).
_HF_SIZE_GUARD = 50_000_000_000
_WRITE_BUFFER = 4 << 20


def _file_headers(res: Resolved, entry: FileEntry) -> dict[str, str]:
    h = {
        "X-Repo-Commit": res.commit,
        "ETag": f'"{entry.etag}"',
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
    }
    # The Hub sends these for LFS files only; sending them for every file gives old and
    # new clients one source of truth (the client prefers X-Linked-Etag to ETag).
    h["X-Linked-Etag"] = f'"{entry.etag}"'
    if entry.size <= _HF_SIZE_GUARD:
        h["X-Linked-Size"] = str(entry.size)
    h.update(stale_headers(res.stale))
    return h


async def resolve_file(request: web.Request) -> web.StreamResponse:
    key = parse.repo_key(request)
    rev, path = parse.split_special_revision(request.match_info["rev"], request.match_info["path"])
    rev = parse.revision(rev)
    path = parse.file_path(path)
    caller = caller_of(request)
    files = request.app[FILES]
    res, entry = await files.locate(key, rev, path, caller)
    headers = _file_headers(res, entry)
    if request.method == "HEAD":
        if entry.size <= _HF_SIZE_GUARD:
            headers["Content-Length"] = str(entry.size)
        return web.Response(status=200, headers=headers)
    rng = parse.byte_range(request.headers.get("Range"), entry.size)
    if rng is not None and request.headers.get("If-Range") and request.headers["If-Range"].strip() != headers["ETag"]:
        rng = None  # a stale validator: RFC 9110 says send the whole file
    start, end = rng if rng is not None else (0, entry.size)
    source = await files.open(res, entry, caller)
    if source.kind == "direct":
        headers["X-Mirror-Cache"] = "bypass; the mirror is short of disk space and does not keep this file"
    resp = web.StreamResponse(status=206 if rng is not None else 200, headers=headers)
    resp.content_length = end - start
    if rng is not None:
        resp.headers["Content-Range"] = f"bytes {start}-{end - 1}/{entry.size}"
    if request.transport is not None:
        # Let a few pieces queue in the socket so the next read overlaps the send.
        request.transport.set_write_buffer_limits(high=_WRITE_BUFFER)
    sent = 0
    try:
        await resp.prepare(request)
        async for piece in source.iter(start, end):
            await resp.write(piece)
            sent += len(piece)
    except MirrorError as exc:
        log.warning("aborting %s %s after %d/%d bytes: %s", key, path, sent, end - start, exc.message)
        _abort(request)
        return resp
    except ConnectionError:
        # The client went away (interrupted download, a parallel downloader closing a
        # spare connection): its doing, not ours. The access line says 499; no traceback.
        client_aborted(request, sent)
        _abort(request)
        return resp
    except Exception:
        if not resp.prepared:
            raise  # the errors middleware answers 500 in the Hub's format
        # Headers are out: a 500 cannot be sent any more, so the client must see a
        # broken download, never a hang or a short "complete" one.
        log.exception("internal error while streaming %s %s after %d bytes; aborting", key, path, sent)
        _abort(request)
        return resp
    finally:
        request.app[COUNTERS].bump("served_bytes", sent)
    if sent != end - start:
        _abort(request)
        return resp
    await resp.write_eof()
    return resp


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()
