"""The daemon's composition: a node (node.py builds every component) behind an
aiohttp application. The only module that knows both the components and the HTTP edge:
it hands each handler group exactly the components it calls (app keys in
http/context.py), installs the middlewares (access log, address allowlist, errors,
caller), and ties the node's lifetime to the application's.

With `[server] admin_listen` the admin routes live in a second application served only on
that listener (a TCP address or a unix socket), so they do not exist on the main port at
all; it has the same middlewares and shares the main application's components. Without
it they are part of the main application.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Middleware

from mirror.clock import Clock
from mirror.config import Config
from mirror.http.auth import GATE, ROUTE_ACTIONS, auth_middleware
from mirror.http import admin_api
from mirror.http.allowlist import ALLOWLIST, Allowlist, allowlist_middleware
from mirror.http.caller import caller_middleware
from mirror.http.context import AUDIT, CONFIG, COUNTERS, FILES, METADATA, NODE, PASSTHROUGH, VERSIONS
from mirror.http.listen import Listener, listen, listen_tcp
from mirror.http.metrics import METRICS, metrics_middleware, metrics_routes, on_prepare
from mirror.http.accesslog import AccessLog
from mirror.http.middleware import ACCESS_LOG, ERROR_PAGE, access_middleware, echo_request_id, errors_middleware
from mirror.http.peer_api import PEER_AUTH, PEER_KEY, PEER_SERVICE, PEER_TABLE, peer_routes
from mirror.http.routes import AdminRoute, setup_routes
from mirror.http.tls import server_context
from mirror.http.ui import DASHBOARD, RENDERER, error_page, ui_routes
from mirror.node import open_node
from mirror.ui.render import Renderer

log = logging.getLogger("mirror")

# Outermost first. The allowlist comes right after the access log: a refused request
# still gets its access line, and nothing else runs for it.
MIDDLEWARES = (access_middleware, allowlist_middleware, errors_middleware, caller_middleware, auth_middleware)
CLIENT_MAX_SIZE = 1 << 20


def _admin_routes() -> list[AdminRoute]:
    return admin_api.admin_routes()


def _middlewares(config: Config) -> list[Middleware]:
    """With metrics on, their request observer goes outermost: it sees every final status."""
    return [metrics_middleware, *MIDDLEWARES] if config.server.metrics else list(MIDDLEWARES)


def build_app(config: Config, *, clock: Clock | None = None) -> web.Application:
    app = web.Application(middlewares=_middlewares(config), client_max_size=CLIENT_MAX_SIZE)
    if config.server.metrics:
        app.on_response_prepare.append(on_prepare)
    app.on_response_prepare.append(echo_request_id)
    if config.server.access_log:
        app[ACCESS_LOG] = AccessLog()  # after the daemon configured logging (cli/serve.py)
    app[CONFIG] = config
    app[ALLOWLIST] = Allowlist(config.server.allow)
    app[RENDERER] = Renderer()
    app[ERROR_PAGE] = error_page

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        async with await open_node(config, clock=clock, online=True, observe=config.server.metrics) as node:
            app[NODE] = node
            app[METADATA] = node.metadata
            app[FILES] = node.http_files
            if node.metrics is not None:
                app[METRICS] = node.metrics
            app[VERSIONS] = node.version_metrics
            app[PASSTHROUGH] = node.passthrough
            app[COUNTERS] = node.catalog.meta
            app[PEER_SERVICE] = node.peer_service
            app[PEER_AUTH] = node.peer_auth
            app[PEER_KEY] = node.key
            app[PEER_TABLE] = node.peers
            app[GATE] = node.gate
            app[AUDIT] = node.audit
            app[DASHBOARD] = node.dashboard
            await node.fetcher.recover()
            node.start_background()
            yield

    app.cleanup_ctx.append(lifetime)
    # The auth middleware knows every route's action, the admin listener's included.
    admin = () if config.server.admin_listen else _admin_routes()
    actions = setup_routes(app, admin=admin, peer=peer_routes(), metrics=metrics_routes() if config.server.metrics else (),
                           ui=ui_routes())
    actions.update({r.handler: (action, writes) for r, action, writes in _admin_routes()})  # type: ignore[attr-defined]
    app[ROUTE_ACTIONS] = actions
    return app


def build_admin_app(main: web.Application) -> web.Application:
    """The admin listener's application: only the admin routes, the same middlewares,
    and the main application's state (components, config, allowlist), copied when it
    starts, which is after the main application opened the node."""
    config = main[CONFIG]
    admin = web.Application(middlewares=_middlewares(config), client_max_size=CLIENT_MAX_SIZE)
    if config.server.metrics:
        admin.on_response_prepare.append(on_prepare)
    admin.on_response_prepare.append(echo_request_id)

    async def share(admin_app: web.Application) -> None:
        for key in main:
            admin_app[key] = main[key]  # type: ignore[index]

    admin.on_startup.append(share)
    admin.router.add_routes([r for r, _action, _writes in _admin_routes()])
    return admin


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
    # Before anything opens: a bad certificate or key is one line and a non-zero exit.
    tls = server_context(config.server.tls_cert, config.server.tls_key) if config.server.tls_cert else None
    app = build_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    admin_runner: web.AppRunner | None = None
    admin_listener: Listener | None = None
    # From here the services run (catalog thread, executors): every exit path, a failed
    # bind included, goes through runner.cleanup(), or a worker thread keeps the process
    # alive and a supervisor's Restart=on-failure never fires.
    try:
        if config.server.admin_listen:
            # Set up after the main runner: the admin app copies the opened components.
            admin_runner = web.AppRunner(build_admin_app(app), access_log=None, handle_signals=False, shutdown_timeout=5.0)
            await admin_runner.setup()
            admin_listener = await listen(admin_runner, config.server.admin_listen, tls)
            log.info("admin routes on %s", admin_listener.url)
        main = await listen_tcp(runner, config.server.host, config.server.port, tls)
        log.info("serving on %s (data %s, upstream %s)", main.url, config.store.data_dir, config.upstream.url)
        scheme = "https" if tls else "http"
        app[NODE].announce(f"{scheme}://{_reachable(config.server.host)}:{main.port}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        if admin_runner is not None:
            await admin_runner.cleanup()
        if admin_listener is not None:
            admin_listener.remove_socket()
        await runner.cleanup()
        if ACCESS_LOG in app:
            app[ACCESS_LOG].flush()  # the last turn's lines, should the loop end before its callback
