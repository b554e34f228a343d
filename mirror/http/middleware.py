"""Middlewares: one maps domain errors to Hub-style responses, one logs a line per request.

Hub errors carry `X-Error-Code`, `X-Error-Message` and a JSON body `{"error": ...}`
(hf-protocol.md §2.5). Unexpected exceptions become a 500 with no internal detail, and
are logged with their traceback (never with request headers, which may hold tokens).

The access line escapes every field that comes from the request (mirror/logsafe.py), so
a path that decodes to CR/LF cannot forge a line. A client that disconnects mid-response
is logged as status 499 with the body bytes written before it left: a client abort,
not a 500.

Every request has an id: the client's `X-Request-Id` when it is a plain token (at most
64 characters of letters, digits and `._:-`, and not shaped like a Hub or API token,
which never reaches a log), else a new one (`request_id`). It is echoed as `X-Request-Id` on
every response, errors included (`echo_request_id`, an `on_response_prepare` hook, so
streamed and aiohttp-made responses carry it too). The access line carries it with the
route group (the action of the permission table the route performs), the source of a
file's bytes (`store`, `fill`, `direct`: resolve/files.py, set by the handler under
`SOURCE`) and the cache outcome it means (`hit`, `miss`, `bypass`); the same fields ride
on the record (`record.access`) for the JSON log format (mirror/jsonlog.py).
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from typing import Awaitable, Callable, Optional

from aiohttp import web

from mirror.errors import MirrorError
from mirror.http.accesslog import AccessLog
from mirror.http.auth import ROUTE_ACTIONS
from mirror.logsafe import SECRETS, escape

log = logging.getLogger("mirror.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    hdrs = {"X-Error-Message": _header_safe(message)}
    if code:
        hdrs["X-Error-Code"] = code
    hdrs.update(headers or {})
    return web.json_response({"error": message}, status=status, headers=hdrs)


def _header_safe(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:500]


# A route group whose callers are people (the dashboard) renders its own error pages:
# this function, set by app.py, answers the requests it owns (None: the JSON error).
# Arguments: the request, status, message, X-Error-Code, extra headers.
ErrorPage = Callable[[web.Request, int, str, Optional[str], dict[str, str]], Optional[web.StreamResponse]]
ERROR_PAGE = web.AppKey("error_page", ErrorPage)  # type: ignore[arg-type]


def _error(request: web.Request, status: int, message: str, code: str | None, headers: dict[str, str]) -> web.StreamResponse:
    page = request.app.get(ERROR_PAGE)
    resp = page(request, status, message, code, headers) if page is not None else None
    return resp if resp is not None else error_response(status, message, code, headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except MirrorError as exc:
        return _error(request, exc.status, exc.message, exc.error_code, exc.headers)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.status != 405:
            return _error(request, exc.status, exc.reason, None, {})
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


# Set by the file handler: the kind of source its bytes come from (resolve/files.py).
SOURCE = web.RequestKey("source", str)
REQUEST_ID = web.RequestKey("request_id", str)
_CACHE = {"store": "hit", "fill": "miss", "direct": "bypass"}
_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)
_GOOD_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}", re.ASCII)


def request_id(incoming: str | None) -> str:
    """The client's id when it is a plain token that cannot be a secret, else a new one:
    16 hex digits, a random prefix drawn when the process starts and a counter (unique
    in the process, and unlikely to repeat across restarts and nodes; a fresh random id
    per request cost a getrandom call each)."""
    if incoming and _GOOD_ID.fullmatch(incoming) and not SECRETS.search(incoming):
        return incoming
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFF:08x}"


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare` hook: every response names its request's id."""
    rid = request.get(REQUEST_ID)
    if rid is not None:
        response.headers["X-Request-Id"] = rid


def was_aborted(request: web.Request) -> bool:
    """Whether the client closed the connection mid-response (`client_aborted`)."""
    return _ABORTED in request


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    request[REQUEST_ID] = request_id(request.headers.get("X-Request-Id"))
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
        if ACCESS_LOG in request.app and not (status < 400 and request.get(QUIET)):
            _log_access(request, status, size, (time.perf_counter() - start) * 1000)


def _log_access(request: web.Request, status: int, size: int, ms: float) -> None:
    route = request.match_info.route
    spec = request.app.get(ROUTE_ACTIONS, {}).get(route.handler) if route is not None else None
    source = request.get(SOURCE, "-")
    request.app[ACCESS_LOG].write({
        "remote": escape(request.remote or "-", 100),
        "method": escape(request.method, 20),
        "path": escape(request.rel_url.path, 300).replace('"', "\\x22"),  # quotes delimit the field
        "status": status,
        "bytes": size,
        "duration_ms": round(ms, 1),
        "request_id": request[REQUEST_ID],
        "group": spec[0] if spec else "-",
        "source": source,
        "cache": _CACHE.get(source, "-"),
    })


# The access line writer (http/accesslog.py); absent when `[server] access_log = false`.
ACCESS_LOG = web.AppKey("access_log", AccessLog)
