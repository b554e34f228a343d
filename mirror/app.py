"""Wiring: builds every component of a daemon from its config. The only module that
knows everyone; components receive collaborators as constructor arguments.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import AsyncIterator

from aiohttp import web

from mirror.clock import Clock
from mirror.config import Config, parse_duration
from mirror.errors import MirrorError
from mirror.http.context import CONFIG, RESOLVER
from mirror.http.middleware import ACCESS_LOG_ON, access_middleware, errors_middleware
from mirror.http.routes import setup_routes
from mirror.lifecycle import policy as lifecycle
from mirror.resolve.resolver import Resolver
from mirror.services import Services, open_services
from mirror.sync.run import sync_forever

log = logging.getLogger("mirror")

SERVICES = web.AppKey("services", Services)
FLUSH_INTERVAL = 2.0


def build_app(config: Config, *, clock: Clock | None = None) -> web.Application:
    app = web.Application(middlewares=[access_middleware, errors_middleware], client_max_size=1 << 20)
    app[ACCESS_LOG_ON] = config.server.access_log
    app[CONFIG] = config

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        svc = await open_services(config, clock=clock)
        app[SERVICES] = svc
        resolver = Resolver(svc, config)
        await resolver.start()
        app[RESOLVER] = resolver
        tasks = [asyncio.create_task(_flush_loop(svc))]
        if config.sync.interval > 0:
            tasks.append(asyncio.create_task(sync_forever(resolver, config)))
        if parse_duration(config.lifecycle.interval) > 0:
            tasks.append(asyncio.create_task(lifecycle.periodic(svc, parse_duration(config.lifecycle.interval))))
        yield
        for task in tasks:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await resolver.close()
        await svc.close()

    app.cleanup_ctx.append(lifetime)
    setup_routes(app)
    return app


async def _flush_loop(svc: Services) -> None:
    """Batched writes of access times and counters (never one write per request)."""
    while True:
        await asyncio.sleep(FLUSH_INTERVAL)
        try:
            await svc.catalog.meta.flush()
        except Exception:
            log.exception("flushing access records failed; will retry")


def request_parser_is_native() -> bool:
    """True when aiohttp parses requests with its C (llhttp) parser. The pure-Python
    fallback is laxer, and parser differences with a front proxy feed request smuggling
    (threat-model T15), so the daemon says so loudly at start."""
    from aiohttp import http_parser

    return http_parser.HttpRequestParser is not http_parser.HttpRequestParserPy


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
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
