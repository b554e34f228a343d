"""HubClient: the only module that talks to the upstream Hub.

Contract:
- JSON calls return the decoded body and a few allowlisted headers; Hub errors are raised
  as the matching domain error (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`,
  `GatedRepo`), 429 as `Overloaded`, other 4xx as `UpstreamRejected` (the client gets
  upstream's status), 5xx as `UpstreamError`, a connection that cannot be made as
  `UpstreamCannotConnect`, and other connection failures or timeouts as
  `UpstreamUnavailable`. No upstream header is ever relayed to a client except through
  these return values.
- A host that could not take a connection is not tried again for a few seconds
  (`outage.Outages`): requests fail at once instead of each waiting for a timeout.
- Redirects are followed by hand (`redirects.Hop`): bounded hops, http(s) only, no
  loopback/private targets unless configured (`RedirectRefused`, naming the setting),
  and the caller's token is dropped as soon as a hop leaves the upstream host.
- File bodies are requested with `Accept-Encoding: identity` and never decompressed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping, Sequence
from urllib.parse import urljoin, urlsplit

import aiohttp

from mirror import __version__
from mirror.clock import Clock, SystemClock
from mirror.config import UpstreamConfig
from mirror.errors import (
    EntryNotFound,
    GatedRepo,
    MirrorError,
    Overloaded,
    RedirectRefused,
    RepoNotFound,
    RevisionNotFound,
    UpstreamCannotConnect,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from mirror.upstream.outage import Outages
from mirror.upstream.redirects import check_redirect_target

log = logging.getLogger("mirror.upstream")

_ERRORS: dict[str, type[MirrorError]] = {
    "RepoNotFound": RepoNotFound,
    "RevisionNotFound": RevisionNotFound,
    "EntryNotFound": EntryNotFound,
    "GatedRepo": GatedRepo,
}
# An upstream X-Error-Code passed on with an `UpstreamRejected` must look like one.
_ERROR_CODE = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}", re.ASCII)


@dataclass
class JsonReply:
    data: Any
    status: int
    link_next: str | None
    commit: str | None


class UpstreamBody:
    """An open upstream file response: status, sizes, and an async byte iterator."""

    def __init__(self, resp: aiohttp.ClientResponse, read_timeout: float) -> None:
        self._resp = resp
        self.status = resp.status
        self.content_length = resp.content_length
        self.content_range = resp.headers.get("Content-Range")
        self._read_timeout = read_timeout

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Yield the body as it arrives: each piece is everything received so far."""
        # The session's sock_read timeout bounds the silence between two pieces.
        try:
            content = self._resp.content
            while True:
                data = await content.readany()
                if not data:
                    return
                # Take whatever else already arrived too: fewer, larger pieces downstream.
                more = content.read_nowait()
                yield data + more if more else data
        except asyncio.TimeoutError:
            raise UpstreamUnavailable("upstream body stalled") from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise UpstreamUnavailable(f"upstream body broke: {type(exc).__name__}") from None

    def close(self) -> None:
        self._resp.close()


def _raise_for(resp: aiohttp.ClientResponse, body: bytes) -> None:
    code = resp.headers.get("X-Error-Code", "")
    message = resp.headers.get("X-Error-Message", "")
    if not message:
        try:
            parsed = json.loads(body)
            message = parsed.get("error", "") if isinstance(parsed, dict) else ""
            if not isinstance(message, str):
                message = str(message)
        except ValueError:
            message = ""
    message = message or f"upstream answered {resp.status}"
    extra = {}
    if resp.headers.get("X-Repo-Commit"):
        extra["X-Repo-Commit"] = resp.headers["X-Repo-Commit"]
    if code in _ERRORS:
        err = _ERRORS[code](message, **extra)
        err.status = resp.status if resp.status in (401, 403, 404) else err.status
        raise err
    if resp.status == 429:
        ra = resp.headers.get("Retry-After", "1")
        raise Overloaded(f"upstream rate limit: {message}", int(ra) if ra.isascii() and ra.isdigit() else 1)
    if resp.status in (401, 403, 404):
        err = RepoNotFound(message)
        err.status = resp.status
        raise err
    if resp.status >= 500:
        raise UpstreamError(f"upstream error {resp.status}")
    if 400 <= resp.status < 500 and resp.status != 408:
        # Upstream judged the request itself (a bad parameter, a conflict): its answer,
        # not a gateway failure. 408 is a transient timeout and stays an UpstreamError.
        raise UpstreamRejected(resp.status, message[:500], code if _ERROR_CODE.fullmatch(code) else None)
    raise UpstreamError(f"upstream answered {resp.status}: {message[:200]}")


def _connect_failure(exc: aiohttp.ClientConnectorError) -> str:
    if isinstance(exc.os_error, ConnectionRefusedError):
        return "connection refused"
    return f"cannot connect ({type(exc.os_error).__name__})"


class HubClient:
    def __init__(self, config: UpstreamConfig, clock: Clock | None = None, *,
                 traces: Sequence[aiohttp.TraceConfig] = ()) -> None:
        """`traces` observe the session's requests (aiohttp client tracing: metrics)."""
        self.config = config
        self._traces = list(traces)
        self.base = config.url.rstrip("/")
        self._host = urlsplit(self.base).netloc
        self._session: aiohttp.ClientSession | None = None
        self.outages = Outages(clock or SystemClock())

    def unreachable(self) -> str | None:
        """Why the last connect to the upstream Hub failed, or None when it worked (or
        none was tried yet)."""
        return self.outages.last_failure(self._host)

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, connect=self.config.connect_timeout, sock_read=self.config.read_timeout)
        connector = aiohttp.TCPConnector(limit=max(8, self.config.max_concurrent * 2), ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(
            timeout=timeout,
            connector=connector,
            auto_decompress=True,
            headers={"User-Agent": f"model-mirror/{__version__}"},
            trust_env=False,
            # A deep read buffer: file bodies arrive in large pieces, not 64 KiB ones.
            read_bufsize=4 << 20,
            trace_configs=self._traces or None,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("HubClient not started")
        return self._session

    def _headers(self, token: str | None, url: str) -> dict[str, str]:
        if token and urlsplit(url).netloc == self._host:
            return {"Authorization": f"Bearer {token}"}
        return {}

    async def _request(
        self,
        method: str,
        url: str,
        token: str | None,
        *,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        decompress: bool = True,
    ) -> aiohttp.ClientResponse:
        """Send a request and follow redirects by hand; return the final response."""
        hops = 0
        while True:
            host = urlsplit(url).netloc
            self.outages.check(host)
            hdrs = dict(headers or {})
            hdrs.update(self._headers(token, url))
            try:
                resp = await self.session.request(
                    method, url, headers=hdrs, data=data, allow_redirects=False, auto_decompress=decompress
                )
            except aiohttp.ConnectionTimeoutError:  # before TimeoutError, which it also is
                self.outages.mark(host, "connect timed out")
                raise UpstreamCannotConnect("upstream unreachable: connect timed out") from None
            except asyncio.TimeoutError:
                raise UpstreamUnavailable("upstream timed out") from None
            except aiohttp.ClientConnectorError as exc:
                reason = _connect_failure(exc)
                self.outages.mark(host, reason)
                raise UpstreamCannotConnect(f"upstream unreachable: {reason}") from None
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                # Dropped before any answer (aiohttp already retried a reused connection
                # once): nothing was received, so fail fast too; one reset does not make
                # the host "down", so no outage mark.
                raise UpstreamCannotConnect(f"upstream reset the connection before answering: {type(exc).__name__}") from None
            except (aiohttp.ClientError, OSError) as exc:
                raise UpstreamUnavailable(f"upstream unreachable: {type(exc).__name__}") from None
            self.outages.clear(host)
            if resp.status not in (301, 302, 303, 307, 308):
                return resp
            location = resp.headers.get("Location", "")
            resp.release()
            hops += 1
            if hops > self.config.max_redirects or not location:
                raise UpstreamError("upstream redirect loop or empty Location")
            target = urljoin(url, location)
            try:
                await check_redirect_target(target, allow_private=self.config.allow_private_redirects, base_host=self._host)
            except RedirectRefused as exc:
                # The operator's log names the target; the client's error does not (T12).
                log.warning("refused redirect to %r: %s", urlsplit(target).hostname or target[:100], exc.message)
                raise
            if resp.status == 303:
                method, data = "GET", None
            url = target

    async def get_json(self, path: str, token: str | None, params: Mapping[str, str] | list[tuple[str, str]] | None = None) -> JsonReply:
        url = self._url(path, params)
        return await self._json("GET", url, token)

    async def get_json_url(self, url: str, token: str | None) -> JsonReply:
        """GET an absolute upstream URL (a `Link rel=next` the upstream gave us)."""
        if urlsplit(url).netloc != self._host:
            raise UpstreamError("upstream pagination link points at another host")
        return await self._json("GET", url, token)

    async def _json(self, method: str, url: str, token: str | None, data: Any = None) -> JsonReply:
        try:
            resp = await asyncio.wait_for(
                self._request(method, url, token, headers={"Accept": "application/json"}, data=data),
                self.config.metadata_timeout,
            )
            async with resp:
                body = await asyncio.wait_for(resp.read(), self.config.metadata_timeout)
        except asyncio.TimeoutError:
            raise UpstreamUnavailable("upstream timed out") from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(f"upstream broke: {type(exc).__name__}") from None
        if resp.status >= 400:
            _raise_for(resp, body)
        try:
            parsed = json.loads(body)
        except ValueError:
            raise UpstreamError("upstream answered with malformed JSON") from None
        link = resp.links.get("next")
        nxt = str(link["url"]) if link and link.get("url") else None
        return JsonReply(parsed, resp.status, nxt, resp.headers.get("X-Repo-Commit"))

    async def open_file(self, path: str, token: str | None, start: int = 0, end: int | None = None) -> UpstreamBody:
        """Open the bytes of a resolve URL path, from `start` (inclusive) to `end`
        (exclusive, None = to the end). The caller checks status and Content-Range."""
        headers = {"Accept-Encoding": "identity"}
        if start or end is not None:
            headers["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        resp = await self._request("GET", self._url(path, None), token, headers=headers, decompress=False)
        if resp.status >= 400:
            try:
                body = await asyncio.wait_for(resp.read(), self.config.metadata_timeout)
            except (asyncio.TimeoutError, aiohttp.ClientError):
                body = b""
            finally:
                resp.release()
            _raise_for(resp, body)
        return UpstreamBody(resp, self.config.read_timeout)

    def _url(self, path: str, params: Mapping[str, str] | list[tuple[str, str]] | None) -> str:
        url = self.base + path
        if params:
            from urllib.parse import urlencode

            url += "?" + urlencode(list(params.items()) if isinstance(params, Mapping) else params)
        return url
