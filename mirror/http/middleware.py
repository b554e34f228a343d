"""Middlewares: one maps domain errors to Hub-style responses, one logs a line per request.

Hub errors carry `X-Error-Code`, `X-Error-Message` and a JSON body `{"error": ...}`
(hf-protocol.md §2.5). Unexpected exceptions become a 500 with no internal detail, and
are logged with their traceback (never with request headers, which may hold tokens).

The access line escapes every field that comes from the request (mirror/logsafe.py), so
a path that decodes to CR/LF cannot forge a line. A client that disconnects mid-response
is logged as status 499 with the body bytes written before it left: a client abort,
not a 500.
"""

from __future__ import annotations

import logging
import time
from typing import Awaitable, Callable

from aiohttp import web

from mirror.errors import MirrorError
from mirror.logsafe import escape

log = logging.getLogger("mirror.http")
access_log = logging.getLogger("mirror.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    hdrs = {"X-Error-Message": _header_safe(message)}
    if code:
        hdrs["X-Error-Code"] = code
    hdrs.update(headers or {})
    return web.json_response({"error": message}, status=status, headers=hdrs)


def _header_safe(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:500]


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except MirrorError as exc:
        return error_response(exc.status, exc.message, exc.error_code, exc.headers)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.status != 405:
            return error_response(exc.status, exc.reason, None)
        raise
    except (ConnectionResetError, ConnectionError):
        raise
    except Exception:
        log.exception("internal error on %s %s", request.method, request.rel_url.path)
        return error_response(500, "internal mirror error")


# Status the access line shows for a client that went away mid-response (nginx's convention).
CLIENT_CLOSED = 499
_ABORTED = web.RequestKey("client_aborted_after", int)


# Set by handlers of routine requests (peer health checks, several a second on a big
# site) whose successful answers are not worth an access line; failures still log.
QUIET = web.RequestKey("quiet", bool)


def client_aborted(request: web.Request, sent: int) -> None:
    """Record that the client closed the connection after `sent` body bytes."""
    request[_ABORTED] = sent


def was_aborted(request: web.Request) -> bool:
    """Whether the client closed the connection mid-response (`client_aborted`)."""
    return _ABORTED in request


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    status = 500
    size = 0
    try:
        resp = await handler(request)
        status = resp.status
        size = resp.content_length or 0
        return resp
    except web.HTTPException as exc:
        status = exc.status
        raise
    except ConnectionError:
        status = CLIENT_CLOSED
        raise
    finally:
        if _ABORTED in request:
            status, size = CLIENT_CLOSED, request[_ABORTED]
        if request.app.get(ACCESS_LOG_ON, True) and not (status < 400 and request.get(QUIET)):
            access_log.info(
                '%s "%s %s" %d %d %.1fms',
                escape(request.remote or "-", 100),
                escape(request.method, 20),
                escape(request.rel_url.path, 300).replace('"', "\\x22"),  # quotes delimit the field
                status,
                size,
                (time.perf_counter() - start) * 1000,
            )


ACCESS_LOG_ON = web.AppKey("access_log_on", bool)
