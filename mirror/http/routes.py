"""The route table: every URL the daemon answers, on one screen."""

from __future__ import annotations

from aiohttp import web

from mirror.http import health


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/healthz", health.healthz)
