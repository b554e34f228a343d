"""A real S3 protocol server for the tests, and a proxy in front of it that injects faults.

`MotoS3.shared()` starts moto's server mode (`moto[server]`: a real HTTP server speaking
S3; it accepts SigV4-signed requests) in a subprocess on a free 127.0.0.1 port, once per
test session, and stops it at exit. `bucket()` creates a fresh bucket (one per test).
`client(bucket)` opens the project's `S3Client` on it with test credentials.

`FaultProxy(target)` is an aiohttp reverse proxy on 127.0.0.1 (its own thread and loop)
that forwards every request to moto unchanged, except the next N matching requests:
`fail(n, status, code)` answers an S3 error (503 SlowDown, 500 InternalError...),
`fail(..., echo=True)` quotes the request's Authorization header in the answer (a
server that leaks what it got), `stall(n, seconds)` holds the request that long before answering, `drop(n)` closes the
connection without an answer. `requests` records (method, path, query, status), and
`sent` the bytes of request bodies (what was uploaded). `after(method, query, action)`
runs `action()` (in a thread) once, after forwarding the next request of that method
whose query string contains `query` and before answering it: a change made in the
bucket between two steps of a client (a pack overwritten between its upload and its
read-back check).
"""

from __future__ import annotations

import asyncio
import atexit
import io
import itertools
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from aiohttp import ClientSession, ClientTimeout, web

from mirror.config import S3Config
from mirror.s3.client import S3Client
from mirror.s3.credentials import Credentials
from mirror.s3.url import S3Url

if TYPE_CHECKING:
    from mirror.store.backend import ChunkBackend

# What the tests sign with; moto accepts any key. Distinctive, so a test can grep logs for it.
ACCESS_KEY = "AKIATESTMIRRORKEY01"
SECRET_KEY = "mirror-test-secret-7Qx9PL2vZkR4"
CREDENTIALS = Credentials(ACCESS_KEY, SECRET_KEY)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoS3:
    _shared: "MotoS3 | None" = None
    _lock = threading.Lock()
    _names = itertools.count()

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)

    @classmethod
    def shared(cls) -> "MotoS3":
        """The session's server, started on first use."""
        with cls._lock:
            if cls._shared is None:
                cls._shared = cls()
                atexit.register(cls._shared.stop)
            return cls._shared

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def bucket(self, hint: str = "t") -> str:
        """A new, empty bucket (names are unique within the session)."""
        name = f"{hint[:20].lower()}-{next(self._names)}-{time.monotonic_ns() % 10**9}"
        req = urllib.request.Request(f"{self.url}/{name}", method="PUT")
        urllib.request.urlopen(req, timeout=10).close()
        return name

    def settings(self, endpoint: str | None = None, **kw: object) -> S3Config:
        return S3Config(endpoint=endpoint or self.url, region="us-east-1", **kw)  # type: ignore[arg-type]

    def client(self, bucket: str, prefix: str = "", *, endpoint: str | None = None, **kw: object) -> S3Client:
        url = S3Url(bucket, prefix)
        return S3Client(url, self.settings(endpoint, **kw), credentials=CREDENTIALS)

    def keys(self, bucket: str) -> list[str]:
        """Every key in the bucket (a plain ListObjectsV2, no client of ours)."""
        import re

        with urllib.request.urlopen(f"{self.url}/{bucket}?list-type=2&max-keys=1000", timeout=10) as r:
            return re.findall(r"<Key>([^<]+)</Key>", r.read().decode())

    def uploads(self, bucket: str) -> list[str]:
        """Multipart uploads begun and neither completed nor aborted."""
        import re

        with urllib.request.urlopen(f"{self.url}/{bucket}?uploads", timeout=10) as r:
            return re.findall(r"<UploadId>([^<]+)</UploadId>", r.read().decode())


@dataclass
class _Rule:
    kind: str  # fail | stall | drop
    left: int
    status: int = 503
    code: str = "SlowDown"
    seconds: float = 0.0
    method: str | None = None
    echo: bool = False  # the error's Message quotes the request's Authorization header
    path: str | None = None  # only requests whose path contains this


_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "server", "date"}


class FaultProxy:
    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.rules: list[_Rule] = []
        self.requests: list[tuple[str, str, str, int]] = []
        self.echoed: list[str] = []
        self.sent = 0
        self._after: list[tuple[str, str, object]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- faults ------------------------------------------------------------------------

    def fail(self, n: int, status: int = 503, code: str = "SlowDown", method: str | None = None,
             echo: bool = False, path: str | None = None) -> None:
        with self._lock:
            self.rules.append(_Rule("fail", n, status, code, method=method, echo=echo, path=path))

    def stall(self, n: int, seconds: float, method: str | None = None) -> None:
        with self._lock:
            self.rules.append(_Rule("stall", n, seconds=seconds, method=method))

    def drop(self, n: int, method: str | None = None) -> None:
        with self._lock:
            self.rules.append(_Rule("drop", n, method=method))

    def after(self, method: str, query: str, action: "Callable[[], object]") -> None:
        with self._lock:
            self._after.append((method, query, action))

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.requests.clear()
            self._after.clear()
            self.sent = 0

    def count(self, method: str | None = None, status: int | None = None) -> int:
        with self._lock:
            return sum(1 for m, _p, _q, s in self.requests
                       if (method is None or m == method) and (status is None or s == status))

    def _take(self, method: str, path: str = "") -> _Rule | None:
        with self._lock:
            for rule in self.rules:
                if (rule.left > 0 and (rule.method is None or rule.method == method)
                        and (rule.path is None or rule.path in path)):
                    rule.left -= 1
                    return rule
            return None

    def _hook(self, request: web.Request) -> "Callable[[], object] | None":
        with self._lock:
            for i, (method, query, action) in enumerate(self._after):
                if method == request.method and query in request.query_string:
                    del self._after[i]
                    return action  # type: ignore[return-value]
        return None

    def _record(self, request: web.Request, status: int) -> None:
        with self._lock:
            self.requests.append((request.method, request.path, request.query_string, status))

    # --- the server --------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._session = ClientSession(timeout=ClientTimeout(total=60), auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        with self._lock:
            self.sent += len(body)
        rule = self._take(request.method, request.path)
        if rule is not None and rule.kind == "drop":
            self._record(request, 0)
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)  # never sent: the connection is gone
        if rule is not None and rule.kind == "stall":
            await asyncio.sleep(rule.seconds)
        if rule is not None and rule.kind == "fail":
            self._record(request, rule.status)
            message = "injected by the test proxy"
            if rule.echo:
                message = request.headers.get("Authorization", "")
                self.echoed.append(message)
            xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{rule.code}</Code>'
                   f"<Message>{message}</Message></Error>")
            return web.Response(status=rule.status, body=xml.encode(), content_type="application/xml")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._session.request(request.method, self.target + request.path_qs, headers=headers,
                                         data=io.BytesIO(body) if body else None, allow_redirects=False) as up:
            data = await up.read()
            self._record(request, up.status)
            hook = self._hook(request)
            if hook is not None:
                await asyncio.get_running_loop().run_in_executor(None, hook)
            out = {k: v for k, v in up.headers.items() if k.lower() not in _HOP}
            if request.method == "HEAD":  # the object's size, which a HEAD answer carries
                resp = web.StreamResponse(status=up.status, headers=out)
                resp.content_length = int(up.headers.get("Content-Length", "0"))
                await resp.prepare(request)
                return resp
            return web.Response(status=up.status, body=data, headers=out)

    def close(self) -> None:
        async def stop() -> None:
            await self._runner.cleanup()
            await self._session.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- backends for tests/test_backend_conformance.py (joined by tests/conftest.py) --------


def s3_backend(tmp: Path) -> "ChunkBackend":
    """An S3Backend on a fresh bucket of the session's server."""
    from mirror.store.s3backend import S3Backend

    moto = MotoS3.shared()
    return S3Backend(moto.client(moto.bucket("conf"), "mirror"))


def cached_s3_backend(tmp: Path) -> "ChunkBackend":
    """The bucket behind a local cache of 64 KiB (small enough to evict during the suite)."""
    from mirror.store.cached import CachedBackend
    from mirror.store.layout import open_layout
    from mirror.store.localfs import LocalBackend

    return CachedBackend(s3_backend(tmp), LocalBackend(open_layout(tmp / "cache")), 64 << 10)  # type: ignore[arg-type]


S3_BACKENDS = {"s3": s3_backend, "s3-cached": cached_s3_backend}
