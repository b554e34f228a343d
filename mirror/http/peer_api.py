"""The peer route group (`/_peer/v1/*`, wire.py): what other mirror nodes may ask.

Every handler first admits the request with `PeerAuth.check` (peers/auth.py): unsigned,
stale, replayed, badly signed, untrusted or revoked requests are refused with 401/403
in the Hub's error format before anything is looked up, so a LAN client without a node
key learns nothing here, gated or not (threat-model P6c). JSON answers are signed over
the request's nonce; chunk records and followed fills are checked by content instead.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from mirror.errors import BadRequest, MirrorError
from mirror.http.middleware import QUIET
from mirror.keys import NodeKey
from mirror.peers import wire
from mirror.peers.auth import PeerAuth, sign_response
from mirror.peers.membership import Peers
from mirror.peers.service import PeerService

log = logging.getLogger("mirror.peers")

PEER_SERVICE = web.AppKey("peer_service", PeerService)
PEER_AUTH = web.AppKey("peer_auth", PeerAuth)
PEER_KEY = web.AppKey("peer_key", NodeKey)
PEER_TABLE = web.AppKey("peer_table", Peers)


async def _admit(request: web.Request, *, unaddressed: bool = False) -> tuple[str, str, bytes]:
    body = await request.read() if request.body_exists else b""
    if len(body) > wire.MAX_BODY:
        raise BadRequest("peer request body too large")
    key, nonce = await request.app[PEER_AUTH].check(request.method, request.headers.get("Host", ""), request.raw_path,
                                                    request.headers, body, unaddressed=unaddressed)
    return key, nonce, body


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise BadRequest("peer request body is not JSON") from None


def _signed(request: web.Request, nonce: str, obj: Any) -> web.Response:
    data = json.dumps(obj, separators=(",", ":")).encode()
    return web.Response(body=data, content_type="application/json", headers=sign_response(request.app[PEER_KEY], nonce, data))


async def hello(request: web.Request) -> web.Response:
    request[QUIET] = True
    _key, nonce, _ = await _admit(request, unaddressed=True)
    return _signed(request, nonce, await request.app[PEER_SERVICE].hello(request.app[PEER_TABLE].clock.now()))


async def have(request: web.Request) -> web.Response:
    _key, nonce, body = await _admit(request)
    return _signed(request, nonce, await request.app[PEER_SERVICE].have(_json_body(body)))


async def manifest(request: web.Request) -> web.Response:
    key, _nonce, _ = await _admit(request)
    man = await request.app[PEER_SERVICE].manifest(request.match_info["identity"])
    body = man.canonical()
    request.app[PEER_TABLE].served(key, len(body))
    return web.Response(body=body, content_type="text/plain", headers={
        wire.H_MANIFEST_SIGNER: man.signer, wire.H_MANIFEST_SIG: man.signature.hex()})


async def chunks(request: web.Request) -> web.StreamResponse:
    key, _nonce, body = await _admit(request)
    service = request.app[PEER_SERVICE]
    ids = service.chunk_ids(_json_body(body))
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await resp.prepare(request)
    sent = 0
    try:
        async for cid, frame in service.frames(ids):
            await resp.write(wire.chunk_record(cid, frame))
            if frame is not None:
                await resp.write(frame)
                sent += len(frame)
    finally:
        request.app[PEER_TABLE].served(key, sent)
    await resp.write_eof()
    return resp


async def fill(request: web.Request) -> web.StreamResponse:
    key, _nonce, body = await _admit(request)
    source, start, end = await request.app[PEER_SERVICE].fill(_json_body(body), key)
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    resp.content_length = end - start
    await resp.prepare(request)
    sent = 0
    try:
        async for piece in source.iter(start, end):
            await resp.write(piece)
            sent += len(piece)
    except MirrorError as exc:
        log.warning("peer fill stream of %s stopped after %d bytes: %s", source.kind, sent, exc.message)
        if request.transport is not None:
            request.transport.abort()
        return resp
    finally:
        request.app[PEER_TABLE].served(key, sent)
    await resp.write_eof()
    return resp


async def changes(request: web.Request) -> web.Response:
    _key, nonce, _ = await _admit(request)
    q = request.query
    try:
        since, limit = int(q.get("since", "0")), int(q.get("limit", "500"))
    except ValueError:
        raise BadRequest("changes: since and limit are integers") from None
    return _signed(request, nonce, await request.app[PEER_SERVICE].changes_since(since, limit))


async def revision(request: web.Request) -> web.Response:
    _key, nonce, _ = await _admit(request)
    q = request.query
    return _signed(request, nonce, await request.app[PEER_SERVICE].revision(q.get("repo_type", ""), q.get("repo_id", ""), q.get("commit", "")))


async def ref(request: web.Request) -> web.Response:
    _key, nonce, _ = await _admit(request)
    q = request.query
    return _signed(request, nonce, await request.app[PEER_SERVICE].ref(q.get("repo_type", ""), q.get("repo_id", ""), q.get("revision", "")))


async def channels(request: web.Request) -> web.Response:
    _key, nonce, _ = await _admit(request)
    q = request.query
    try:
        after, release_after = int(q.get("after", "0")), int(q.get("releases", "0"))
    except ValueError:
        raise BadRequest("channels: after and releases are integers") from None
    return _signed(request, nonce, await request.app[PEER_SERVICE].channels(after, release_after))


def peer_routes() -> list[web.RouteDef]:
    p = wire.PREFIX
    return [
        web.get(f"{p}/hello", hello),
        web.post(f"{p}/have", have),
        web.get(f"{p}/manifest/{{identity}}", manifest),
        web.post(f"{p}/chunks", chunks),
        web.post(f"{p}/fill", fill),
        web.get(f"{p}/changes", changes),
        web.get(f"{p}/revision", revision),
        web.get(f"{p}/ref", ref),
        web.get(f"{p}/channels", channels),
    ]
