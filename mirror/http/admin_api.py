"""The admin route group (`/_admin/v1/*`): served on the main listener, or only on the
admin listener when `[server] admin_listen` is set (app.py decides which).

For now it holds one route, `GET /_admin/v1/ping`, which answers `{"ok": true}` so that
an operator (and the tests) can tell which listener carries the admin routes.
"""

from __future__ import annotations

from aiohttp import web

from mirror.http.routes import AdminRoute


async def ping(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def admin_routes() -> list[AdminRoute]:
    """(route, action of the permission table, whether it changes state)."""
    return [(web.get("/_admin/v1/ping", ping), "health", False)]
