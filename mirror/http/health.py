"""`GET /healthz`: liveness plus a glance at the daemon.

`streams` is the number of file responses whose body is being sent right now; it drops
as soon as a client that went away has had its stream stopped (its read-ahead cancelled,
its chunk leases or fill reader slot released), so it tells an operator, and the tests,
whether work for gone clients lingers.
"""

from __future__ import annotations

from aiohttp import web

from mirror import __version__
from mirror.http.hub_files import STREAMS


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__, "streams": STREAMS.open})
