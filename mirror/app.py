"""The daemon's composition: a node (node.py builds every component) behind an
aiohttp application. The only module that knows both the components and the HTTP edge:
it hands each handler group exactly the components it calls (app keys in
http/context.py), installs the middlewares (caller, access log, errors), and ties the
node's lifetime to the application's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import AsyncIterator

from aiohttp import web

from mirror.clock import Clock
from mirror.config import Config
from mirror.errors import MirrorError
from mirror.http.auth import GATE, ROUTE_ACTIONS, auth_middleware
from mirror.http.caller import caller_middleware
from mirror.http.context import CONFIG, COUNTERS, FILES, METADATA, PASSTHROUGH
from mirror.http.middleware import ACCESS_LOG_ON, access_middleware, errors_middleware
from mirror.http.peer_api import PEER_AUTH, PEER_KEY, PEER_SERVICE, PEER_TABLE, peer_routes
from mirror.http.routes import setup_routes
from mirror.node import Node, open_node

log = logging.getLogger("mirror")

NODE = web.AppKey("node", Node)


def build_app(config: Config, *, clock: Clock | None = None) -> web.Application:
    app = web.Application(middlewares=[access_middleware, errors_middleware, caller_middleware, auth_middleware],
                          client_max_size=1 << 20)
    app[ACCESS_LOG_ON] = config.server.access_log
    app[CONFIG] = config

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        async with await open_node(config, clock=clock, online=True) as node:
            app[NODE] = node
            app[METADATA] = node.metadata
            app[FILES] = node.files
            app[PASSTHROUGH] = node.passthrough
            app[COUNTERS] = node.catalog.meta
            app[PEER_SERVICE] = node.peer_service
            app[PEER_AUTH] = node.peer_auth
            app[PEER_KEY] = node.key
            app[PEER_TABLE] = node.peers
            app[GATE] = node.gate
            await node.fetcher.recover()
            node.start_background()
            yield

    app.cleanup_ctx.append(lifetime)
    # Empty slots: the admin and metrics groups arrive with their issues.
    app[ROUTE_ACTIONS] = setup_routes(app, admin=(), peer=peer_routes(), metrics=())
    return app


def request_parser_is_native() -> bool:
    """True when aiohttp parses requests with its C (llhttp) parser. The pure-Python
    fallback is laxer, and parser differences with a front proxy feed request smuggling
    (threat-model T15), so the daemon says so loudly at start."""
    from aiohttp import http_parser

    return http_parser.HttpRequestParser is not http_parser.HttpRequestParserPy


def _reachable(host: str) -> str:
    """An address peers can use for this node: the listen address, or for a wildcard
    one the address of the interface that routes outwards."""
    if host not in ("0.0.0.0", "::", ""):
        return f"[{host}]" if ":" in host else host
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


async def serve(config: Config) -> None:
    """Run the daemon until SIGTERM or SIGINT, then shut down cleanly."""
    if not request_parser_is_native():
        log.warning("aiohttp is using its pure-Python HTTP parser (AIOHTTP_NO_EXTENSIONS?); run with the C parser in production")
    app = build_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    # From here the services run (catalog thread, executors): every exit path, a failed
    # bind included, goes through runner.cleanup(), or a worker thread keeps the process
    # alive and a supervisor's Restart=on-failure never fires.
    try:
        site = web.TCPSite(runner, config.server.host, config.server.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            # asyncio's strerror repeats the address; the errno's text is the reason.
            reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else (exc.strerror or str(exc))
            raise MirrorError(f"cannot listen on {config.server.host}:{config.server.port}: {reason}") from None
        sockets = site._server.sockets if site._server else []  # noqa: SLF001 - the bound port for port 0
        port = sockets[0].getsockname()[1] if sockets else config.server.port
        log.info("serving on http://%s:%d (data %s, upstream %s)", config.server.host, port, config.store.data_dir, config.upstream.url)
        app[NODE].announce(f"http://{_reachable(config.server.host)}:{port}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
