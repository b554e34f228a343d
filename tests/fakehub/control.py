"""The `/_fake/` JSON control API, for a FakeHub running in another process (benchmarks).

    POST /_fake/commit   {repo_id, repo_type?, branch?, message?, files: {path: spec | null}}
                         spec: {"random": size, "seed": n} | {"text": "..."} | {"path": "/on/disk"}
                         -> {"sha": "<40 hex>"}
    POST /_fake/call     {"method": name, "args": [...], "kwargs": {...}} for the data methods in CALLABLE
    POST /_fake/faults   {"latency": s, "bandwidth": bps, "ignore_range": b, "xet": b, ...,
                          "cut_after": {...}, "fail_status": {...}, "reset_connections": {...}, "corrupt": {...},
                          "clear": true, "down_for": seconds}
    GET  /_fake/counters -> {"requests": [[method, path, query, origin], ...], "bytes_sent", ...}
    POST /_fake/reset    counters reset and faults cleared
Control requests are neither counted nor subject to faults.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .state import FileSource

if TYPE_CHECKING:
    from .server import FakeHub

CALLABLE = {"create_repo", "add_token", "grant", "tag", "create_branch", "set_ref", "create_pr_ref", "head"}
SETTABLE = {"latency", "bandwidth", "ignore_range", "xet", "small_file_resolve_cache", "tree_page_size",
            "tree_expand_page_size", "commits_page_size", "cdn_signature", "lfs_threshold",
            "resolve_header_overrides"}
RULES = {"cut_after", "fail_status", "reset_connections", "corrupt"}


def _file(spec: dict[str, Any] | None) -> bytes | FileSource | None:
    if spec is None:
        return None
    if "random" in spec:
        return FileSource.random(int(spec["random"]), int(spec.get("seed", 0)))
    if "text" in spec:
        return str(spec["text"]).encode()
    if "path" in spec:
        return FileSource.from_path(spec["path"])
    raise web.HTTPBadRequest(text=f"unknown file spec {spec!r}")


def add_control_routes(app: web.Application, hub: FakeHub) -> None:
    async def commit(request: web.Request) -> web.Response:
        body = await request.json()
        files = {path: _file(spec) for path, spec in body["files"].items()}
        kwargs = {k: body[k] for k in ("repo_type", "branch", "message", "author") if k in body}
        loop = asyncio.get_running_loop()  # hashing a big file must not stall the servers
        sha = await loop.run_in_executor(None, lambda: hub.commit(body["repo_id"], files, **kwargs))
        return web.json_response({"sha": sha})

    async def call(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("method") not in CALLABLE:
            raise web.HTTPBadRequest(text=f"method must be one of {sorted(CALLABLE)}")
        result = getattr(hub, body["method"])(*body.get("args", []), **body.get("kwargs", {}))
        return web.json_response({"result": result if isinstance(result, str | int | None) else None})

    async def faults(request: web.Request) -> web.Response:
        body = await request.json()
        unknown = set(body) - SETTABLE - RULES - {"clear", "down_for"}
        if unknown:
            raise web.HTTPBadRequest(text=f"unknown fault keys {sorted(unknown)}")
        if body.get("clear"):
            hub.clear_faults()
        for key in SETTABLE & set(body):
            setattr(hub, key, body[key])
        for key in RULES & set(body):
            getattr(hub, key)(**body[key])
        if body.get("down_for"):
            asyncio.get_running_loop().create_task(_down_for(hub, float(body["down_for"])))
        return web.json_response({"ok": True})

    async def counters(request: web.Request) -> web.Response:
        with hub._flock:
            reqs = [[r.method, r.path, r.query, r.origin] for r in hub.requests]
            by_file = dict(hub._bytes_by_id)
        return web.json_response({"requests": reqs, "bytes_sent": hub.bytes_sent, "bytes_sent_by_file": by_file,
                                  "cdn_saw_authorization": hub.cdn_saw_authorization})

    async def reset(request: web.Request) -> web.Response:
        hub.reset_counters()
        hub.clear_faults()
        return web.json_response({"ok": True})

    app.router.add_post("/_fake/commit", commit)
    app.router.add_post("/_fake/call", call)
    app.router.add_post("/_fake/faults", faults)
    app.router.add_get("/_fake/counters", counters)
    app.router.add_post("/_fake/reset", reset)


async def _down_for(hub: FakeHub, seconds: float) -> None:
    await asyncio.sleep(0.05)  # let the control response leave before its connection drops
    await hub.adown()
    await asyncio.sleep(seconds)
    await hub.aup()
