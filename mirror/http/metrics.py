"""The metrics route group (`GET /metrics`, action `metrics.read`) and the request
observer that feeds the node's HTTP metrics (obs/metrics.py).

`metrics_middleware` (outermost: it sees the final status of every request, refused ones
included) counts each request by route group and status and observes two latencies:
time to first byte, taken when the response is prepared (`on_prepare`, installed as the
application's `on_response_prepare` signal: for a streamed file that is when its headers
go out), and the whole response. A client that went away mid-response counts as 499,
like the access line. The route group comes from the action of the route that matched
(http/routes.py); admin routes are one group, an unmatched path is `unrouted`.

The scrape answers in the format the scraper asks for (Prometheus text or OpenMetrics),
compressed when it accepts gzip. Scrapes are routine: a successful one writes no access
line.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

from aiohttp import web

from mirror.http.auth import ROUTE_ACTIONS
from mirror.http.middleware import QUIET, was_aborted
from mirror.obs.metrics import Metrics

METRICS = web.AppKey("metrics", Metrics)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Route group by the action its routes carry; every other action is an admin route's.
_GROUPS = {"health": "health", "hub.read": "hub", "files.read": "files", "peer.api": "peer",
           "metrics.read": "metrics", "ui.read": "ui"}


class _Timing:
    __slots__ = ("start", "first_byte")

    def __init__(self, start: float) -> None:
        self.start = start
        self.first_byte = 0.0


_TIMING = web.RequestKey("metrics_timing", _Timing)


def metrics_routes() -> list[web.RouteDef]:
    return [web.get("/metrics", scrape)]


async def scrape(request: web.Request) -> web.Response:
    request[QUIET] = True
    body, content_type = await request.app[METRICS].render(request.headers.get("Accept"))
    resp = web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})
    resp.enable_compression()
    return resp


def route_group(request: web.Request) -> str:
    route = request.match_info.route
    spec = request.app[ROUTE_ACTIONS].get(route.handler) if route is not None else None
    if spec is None:
        return "unrouted"
    return _GROUPS.get(spec[0], "admin")


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    timing = _Timing(time.perf_counter())
    request[_TIMING] = timing
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as exc:
        status = exc.status
        raise
    except (ConnectionError, asyncio.CancelledError):
        status = 499
        raise
    finally:
        if was_aborted(request):
            status = 499
        end = time.perf_counter()
        # A response prepared after the handler returned (not streamed) sends its first
        # byte now.
        first = timing.first_byte or end
        request.app[METRICS].http_done(route_group(request), status, first - timing.start, end - timing.start)


async def on_prepare(request: web.Request, _response: web.StreamResponse) -> None:
    timing = request.get(_TIMING)
    if timing is not None and not timing.first_byte:
        timing.first_byte = time.perf_counter()
