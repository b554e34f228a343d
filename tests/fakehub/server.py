"""FakeHub: the Hub origin and its CDN origin as two aiohttp servers, their routes and lifetime.

Routes follow docs/hf-protocol.md: repo info, tree (paginated with an absolute `Link`), paths-info,
refs, commits, whoami, xet-read-token, and resolve (regular files served directly, or via the Hub's
same-origin `/api/resolve-cache/` 307; LFS files 302 to the CDN origin with a signed URL).
Routing uses `match_info` on the encoded path, so `refs%2Fpr%2F1` stays one segment.
One middleware per origin records the request, applies latency and `fail_status`, and renders
`HubError` (and aiohttp's own 4xx) as the Hub does: JSON `{"error"}`, `X-Error-Message`, `X-Error-Code`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from .handlers import Handlers
from .state import MiB, HubError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error_response(err: HubError) -> web.Response:
    headers = {"X-Error-Message": err.message.encode("ascii", "backslashreplace").decode(), **err.headers}
    if err.code:
        headers["X-Error-Code"] = err.code
    return web.json_response({"error": err.message}, status=err.status, headers=headers)


class FakeHub(Handlers):
    """Hub origin (`url`) and CDN origin (`cdn_url`) on 127.0.0.1, in memory, with fault knobs."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, cdn_port: int = 0,
                 lfs_threshold: int = 10 * MiB):
        super().__init__(lfs_threshold=lfs_threshold)
        self.host, self.port, self.cdn_port = host, port, cdn_port
        self._runners: dict[str, web.AppRunner] = {}
        self._sites: dict[str, web.TCPSite] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    @contextmanager
    def running(cls, **kwargs: Any) -> Iterator[FakeHub]:
        hub = cls(**kwargs)
        hub.start_in_thread()
        try:
            yield hub
        finally:
            hub.stop()

    async def start(self) -> None:
        """Start both origins on the current loop (ports 0 mean free ports)."""
        from .control import add_control_routes

        hub_app = web.Application(middlewares=[self._middleware("hub")], client_max_size=64 * MiB)
        add_control_routes(hub_app, self)
        self._add_hub_routes(hub_app.router)
        cdn_app = web.Application(middlewares=[self._middleware("cdn")])
        cdn_app.router.add_get("/{sha:[0-9a-f]{64}}", self._h_cdn)
        for name, app in (("hub", hub_app), ("cdn", cdn_app)):
            self._runners[name] = web.AppRunner(app, access_log=None, handler_cancellation=True,
                                                shutdown_timeout=1.0)
            await self._runners[name].setup()
        await self.aup()
        self.port, self.cdn_port = (self._runners[n].addresses[0][1] for n in ("hub", "cdn"))
        self.url, self.cdn_url = f"http://{self.host}:{self.port}", f"http://{self.host}:{self.cdn_port}"

    async def close(self) -> None:
        await self.adown()  # drop open connections first, so cleanup never waits on a slow stream
        for runner in self._runners.values():
            await runner.cleanup()
        self._sites.clear()

    def start_in_thread(self) -> None:
        """Run both origins on a private loop in a daemon thread; returns once they listen."""
        loop = self._loop = asyncio.new_event_loop()
        ready, failure = threading.Event(), []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # reported to the starting thread below
                failure.append(exc)
                return
            finally:
                ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="fakehub", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure or not self.url:
            raise RuntimeError("FakeHub failed to start") from (failure[0] if failure else None)

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = None

    async def adown(self, which: str = "all") -> None:
        """Close the listening sockets and drop open connections, so connections are refused."""
        for name in ("hub", "cdn") if which == "all" else (which,):
            site = self._sites.pop(name, None)
            if site is not None:
                await site.stop()
            server = self._runners[name].server
            for conn in server.connections if server else []:
                conn.force_close()

    async def aup(self, which: str = "all") -> None:
        """Listen again, on the same ports as before."""
        for name in ("hub", "cdn") if which == "all" else (which,):
            if name not in self._sites:
                port = self.port if name == "hub" else self.cdn_port
                site = web.TCPSite(self._runners[name], self.host, port, reuse_address=True)
                await site.start()
                self._sites[name] = site

    def down(self, which: str = "all") -> None:
        """`which` is "all", "hub" or "cdn". Call from the test thread, not from the loop."""
        assert self._loop is not None, "down() needs start_in_thread(); use adown() on the loop"
        asyncio.run_coroutine_threadsafe(self.adown(which), self._loop).result(10)

    def up(self, which: str = "all") -> None:
        assert self._loop is not None, "up() needs start_in_thread(); use aup() on the loop"
        asyncio.run_coroutine_threadsafe(self.aup(which), self._loop).result(10)

    # -- plumbing --------------------------------------------------------------------------

    def _middleware(self, origin: str) -> Any:
        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path.startswith("/_fake/") and origin == "hub":
                return await handler(request)
            self._record(request, origin)
            if self.latency:
                await asyncio.sleep(self.latency)
            if self._take_reset(request.path):
                if request.transport is not None:
                    request.transport.abort()
                return web.Response(status=204)  # never sent: the connection is gone
            rule = self._take_fail(request.path)
            if rule is not None:
                headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
                return _error_response(HubError(rule.status, rule.error_code, f"Injected fault {rule.status}", headers))
            try:
                return await handler(request)
            except HubError as err:
                return _error_response(err)
            except web.HTTPException as exc:  # unknown routes and methods get a Hub-style body too
                if exc.status < 400:
                    raise
                return _error_response(HubError(exc.status, None, exc.reason, {"Allow": exc.headers.get("Allow", "")}
                                                if exc.status == 405 else None))

        return middleware

    def _add_hub_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/api/agent-harnesses", self._h_harnesses)
        r.add_get("/api/whoami-v2", self._h_whoami)
        t, rt = "{t:models|datasets|spaces|kernels}", "{rt:datasets|spaces|kernels}"
        repos = ("{ns}/{name}", "{name}")
        for repo in repos:
            r.add_get(f"/api/resolve-cache/{t}/{repo}/{{sha:[0-9a-f]{{40}}}}/{{path:.+}}", self._h_resolve)
        # Suffix routes first: `/api/models/gpt2/refs` must not read as repo `gpt2/refs`.
        for repo in repos:
            api = f"/api/{t}/{repo}"
            r.add_get(api + "/revision/{rev:.+}", self._h_info)
            r.add_get(api + "/tree/{rev}", self._h_tree)
            r.add_get(api + "/tree/{rev}/{path:.+}", self._h_tree)
            r.add_post(api + "/paths-info/{rev:.+}", self._h_paths_info)
            r.add_get(api + "/refs", self._h_refs)
            r.add_get(api + "/commits/{rev:.+}", self._h_commits)
            r.add_get(api + "/xet-read-token/{rev:.+}", self._h_xet_token)
        for repo in repos:
            r.add_get(f"/api/{t}/{repo}", self._h_info)
        for prefix in (f"/{rt}", ""):  # typed prefixes before the bare `/{ns}/{name}` form
            for repo in repos:
                r.add_get(f"{prefix}/{repo}/resolve/{{rev}}/{{path:.+}}", self._h_resolve)
