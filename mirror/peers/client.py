"""The peer client: signed requests to other mirror nodes (wire.py), with deadlines.

Every request is signed with this node's key; every JSON answer must carry the
responder's signature of our nonce and its body, by the key we expect (the peer's key
learned from its `hello`, itself proven by that signature). Failures are `PeerError`
(transport, status, deadline) or `BadSignature` (an answer we cannot attribute); the
caller decides what they cost the peer (membership.py).

Deadlines: small requests (hello, have, revision) finish within `timeout`; a chunk
batch within `timeout` plus its expected bytes at `MIN_RATE` (a peer trickling bytes is
cut, threat-model P6a); every body read waits at most `transfer_timeout` for the next
byte; a chunk record longer than the largest frame is refused before it is read (P6b).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator
from urllib.parse import quote, urlencode

import aiohttp
from yarl import URL

from mirror.clock import Clock
from mirror.config import PeersConfig
from mirror.errors import BadSignature, PeerError
from mirror.keys import NodeKey
from mirror.manifest import Manifest, parse
from mirror.peers import wire
from mirror.peers.auth import check_response, sign_request
from mirror.store.chunkstore import MAX_FRAME

MIN_RATE = 1 << 20  # bytes/s a chunk batch must sustain
MAX_MANIFEST = 16 << 20


@dataclass(frozen=True, slots=True)
class Hello:
    public_key: str
    url: str
    serial: int
    latency: float


def _authority(base: str) -> str:
    u = URL(base)
    host = u.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{u.port}" if u.explicit_port else host


class PeerClient:
    def __init__(self, key: NodeKey, config: PeersConfig, clock: Clock) -> None:
        self.key = key
        self.config = config
        self.clock = clock
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, limit_per_host=16),
                trust_env=False,
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, connect=self.config.timeout, sock_read=self.config.transfer_timeout),
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _prepare(self, base: str, method: str, path_qs: str, body: bytes, to: str) -> tuple[URL, dict[str, str], str]:
        """URL and signed headers of a request meant for the node whose key is `to`."""
        headers = sign_request(self.key, method, _authority(base), wire.PREFIX + path_qs, body, self.clock.now(), to)
        headers["Host"] = _authority(base)
        if body:
            headers["Content-Type"] = "application/json"
        # Sent exactly as signed: yarl must not re-encode the path or the query.
        return URL(base.rstrip("/") + wire.PREFIX + path_qs, encoded=True), headers, headers[wire.H_NONCE]

    def _session_or_fail(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise PeerError("peer client is not started")
        return self._session

    async def _read(self, base: str, method: str, path_qs: str, body: bytes, to: str, *, limit: int,
                    deadline: float) -> tuple[bytes, Any, str]:
        """One whole (bounded) answer: (body, headers, the request's nonce); PeerError
        unless it is a 200 of at most `limit` bytes within `deadline` seconds."""
        url, headers, nonce = self._prepare(base, method, path_qs, body, to)
        try:
            async with asyncio.timeout(deadline):
                async with self._session_or_fail().request(method, url, data=body or None, headers=headers, allow_redirects=False) as resp:
                    data = await _read_body(resp.content, limit)
                    status, rh = resp.status, resp.headers
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise PeerError(f"peer {base}: {_why(exc)}") from None
        if status != 200:
            raise PeerError(f"peer {base} answered {status} to {path_qs.split('?')[0]}: {_error_text(data)}", peer_status=status)
        if len(data) > limit:
            raise PeerError(f"peer {base}: answer larger than {limit} bytes")
        return data, rh, nonce

    async def _json(self, base: str, method: str, path_qs: str, obj: Any = None, *, expect_key: str | None,
                    limit: int = wire.MAX_BODY) -> tuple[Any, str]:
        body = json.dumps(obj, separators=(",", ":")).encode() if obj is not None else b""
        data, rh, nonce = await self._read(base, method, path_qs, body, expect_key or "", limit=limit, deadline=self.config.timeout)
        key = check_response(rh, nonce, data)
        if expect_key is not None and key != expect_key:
            raise BadSignature(f"peer {base}: answer signed by {key[:16]}, not by the peer's key {expect_key[:16]}")
        try:
            return json.loads(data), key
        except ValueError:
            raise PeerError(f"peer {base}: answer is not JSON") from None

    # --- calls ----------------------------------------------------------------------------

    async def hello(self, base: str) -> Hello:
        started = time.perf_counter()
        data, key = await self._json(base, "GET", "/hello", expect_key=None)
        latency = time.perf_counter() - started
        if not isinstance(data, dict) or data.get("public_key") != key or data.get("protocol") != wire.VERSION:
            raise PeerError(f"peer {base}: not a model-mirror peer v{wire.VERSION}")
        return Hello(key, str(data.get("url", "")), int(data.get("serial", 0)), latency)

    async def have(self, base: str, key: str, identities: list[str], chunks: list[str] = []) -> tuple[dict[str, Any], set[str]]:
        data, _ = await self._json(base, "POST", "/have", {"identities": identities, "chunks": chunks}, expect_key=key)
        ids = data.get("identities") if isinstance(data, dict) else None
        held = data.get("chunks") if isinstance(data, dict) else None
        if not isinstance(ids, dict) or not isinstance(held, list):
            raise PeerError(f"peer {base}: malformed have answer")
        return ids, {c for c in held if isinstance(c, str)}

    async def manifest(self, base: str, key: str, identity: str, *, trusted: frozenset[str], size: int | None) -> Manifest:
        """The peer's manifest of `identity`, checked before a chunk is asked for: its
        bytes canonical, signed by a key in `trusted`, bound to `identity` and `size`
        (threat-model P2, P3). BadSignature otherwise; PeerError when not delivered."""
        body, rh, _nonce = await self._read(base, "GET", "/manifest/" + quote(identity, safe=":"), b"", key,
                                            limit=MAX_MANIFEST, deadline=self.config.timeout + self.config.transfer_timeout)
        signer, sig = rh.get(wire.H_MANIFEST_SIGNER, ""), rh.get(wire.H_MANIFEST_SIG, "")
        if not wire.KEY_RE.fullmatch(signer) or not wire.SIG_RE.fullmatch(sig):
            raise BadSignature(f"peer {base}: manifest {identity} is not signed")
        man = parse(body, signer, bytes.fromhex(sig))
        man.verify(trusted, expected_identity=identity)
        if size is not None and man.size != size:
            raise BadSignature(f"manifest {identity} is for {man.size} bytes, the listing says {size}")
        return man

    async def chunks(self, base: str, key: str, ids: list[str], expected_bytes: int) -> AsyncIterator[tuple[str, bytes | None]]:
        """Frames of `ids`, in order (None for a chunk the peer does not hold)."""
        body = json.dumps({"ids": ids}).encode()
        url, headers, _nonce = self._prepare(base, "POST", "/chunks", body, key)
        deadline = self.config.timeout + expected_bytes / MIN_RATE
        try:
            async with asyncio.timeout(deadline):
                async with self._session_or_fail().post(url, data=body, headers=headers, allow_redirects=False) as resp:
                    if resp.status != 200:
                        raise PeerError(f"peer {base} answered {resp.status} for chunks: {_error_text(await resp.content.read(4096))}",
                                        peer_status=resp.status)
                    for cid in ids:
                        head = await resp.content.readexactly(wire.RECORD.size)
                        rid, length = wire.RECORD.unpack(head)
                        if rid.hex() != cid:
                            raise BadSignature(f"peer {base} sent chunk {rid.hex()[:16]} where {cid[:16]} was asked")
                        if length == wire.ABSENT:
                            yield cid, None
                            continue
                        if length > MAX_FRAME:
                            raise BadSignature(f"peer {base} sent a chunk record of {length} bytes (largest frame {MAX_FRAME})")
                        yield cid, await resp.content.readexactly(length)
        except asyncio.IncompleteReadError:
            raise PeerError(f"peer {base}: chunk batch ended early") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise PeerError(f"peer {base}: chunk batch: {_why(exc)}") from None

    async def follow(self, base: str, key: str, target: dict[str, Any], start: int) -> AsyncIterator[bytes]:
        """The bytes of the peer's own fill of a file from `start`, as they arrive."""
        body = json.dumps({**target, "start": start}).encode()
        url, headers, _nonce = self._prepare(base, "POST", "/fill", body, key)
        try:
            async with self._session_or_fail().post(url, data=body, headers=headers, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise PeerError(f"peer {base} answered {resp.status} to follow a fill: {_error_text(await resp.content.read(4096))}",
                                    peer_status=resp.status)
                async for piece in resp.content.iter_any():
                    yield piece
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise PeerError(f"peer {base}: followed fill broke: {_why(exc)}") from None

    async def changes(self, base: str, key: str, since: int, limit: int = 500) -> dict[str, Any]:
        data, _ = await self._json(base, "GET", "/changes?" + urlencode({"since": since, "limit": limit}), expect_key=key,
                                   limit=64 << 20)
        return data  # type: ignore[no-any-return]

    async def revision(self, base: str, key: str, repo_type: str, repo_id: str, commit: str) -> dict[str, Any]:
        q = urlencode({"repo_type": repo_type, "repo_id": repo_id, "commit": commit})
        data, _ = await self._json(base, "GET", "/revision?" + q, expect_key=key, limit=64 << 20)
        return data  # type: ignore[no-any-return]

    async def channels(self, base: str, key: str, after: int, release_after: int) -> Any:
        """A page of the peer's releases, aliases and alias history (channels/page.py)."""
        q = urlencode({"after": after, "releases": release_after})
        data, _ = await self._json(base, "GET", "/channels?" + q, expect_key=key, limit=16 << 20)
        return data

    async def ref(self, base: str, key: str, repo_type: str, repo_id: str, revision: str) -> dict[str, Any]:
        q = urlencode({"repo_type": repo_type, "repo_id": repo_id, "revision": revision})
        data, _ = await self._json(base, "GET", "/ref?" + q, expect_key=key)
        return data  # type: ignore[no-any-return]


async def _read_body(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body, or its first `limit + 1` bytes when it is longer (the caller
    refuses it then). `StreamReader.read(n)` returns what has arrived, up to n bytes:
    one call cuts any body larger than a socket read (a big manifest) short."""
    buf = bytearray()
    while len(buf) <= limit:
        piece = await content.read(limit + 1 - len(buf))
        if not piece:
            break
        buf += piece
    return bytes(buf)


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"[:200]


def _error_text(body: bytes) -> str:
    try:
        msg = json.loads(body).get("error")
        return str(msg)[:200] if msg else body[:200].decode("utf-8", "replace")
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")
