"""Peer answers are read whole: a JSON answer or a manifest that arrives in several
socket reads (a 1 GiB file's manifest does) is not cut at the first one, and a body
over the limit is still refused (found by scripts/bench_peers.py: peers sent "not a v1
manifest" for every big file)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from mirror.peers.client import _read_body


async def _slow_body(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    await resp.prepare(request)
    for i in range(5):
        await resp.write(bytes([65 + i]) * 40_000)
        await asyncio.sleep(0.02)  # each piece in its own socket read
    await resp.write_eof()
    return resp


async def test_a_body_in_several_reads_is_read_whole_and_limited(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    app = web.Application()
    app.router.add_get("/m", _slow_body)
    client = await aiohttp_client(app)
    async with client.get("/m") as resp:
        first = await resp.content.read(1 << 20)
        assert len(first) < 200_000  # what a single read gives: the bug this guards
    async with client.get("/m") as resp:
        body = await _read_body(resp.content, 1 << 20)
    assert body == b"".join(bytes([65 + i]) * 40_000 for i in range(5))
    async with client.get("/m") as resp:
        cut = await _read_body(resp.content, 100_000)
    assert len(cut) == 100_001  # over the limit: the caller refuses it

