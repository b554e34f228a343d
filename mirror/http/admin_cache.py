"""Admin API handlers for the cache and the node (`/_admin/v1/...`): repos, stats, pull,
gc, evict, pins, peers, trusted keys. Each is a thin call into the component the CLI
command of the same name uses, so the two cannot drift; every state-changing one is
audited under the caller's name (http/admin_io.py `audit`).

`POST pull` names its repo in the body, not the path, so the auth middleware could not
check the repo rules and a developer's grants for it: the handler asks the gate again
with the repo (the same decision a resolve request gets, service-token grant included).
"""

from __future__ import annotations

import dataclasses

from aiohttp import web

from mirror.admin.inspect import list_repos, store_stats
from mirror.admin.pins import pin, unpin
from mirror.config import SyncRepo
from mirror.errors import BadRequest
from mirror.http.admin_io import as_http, audit, body, flag, json_ok, node, repo_spec, strings, text
from mirror.http.auth import GATE
from mirror.http.caller import caller_of
from mirror.keys import parse_public_key


async def repos(request: web.Request) -> web.Response:
    return json_ok([r.to_json() for r in await list_repos(node(request).catalog)])


async def stats(request: web.Request) -> web.Response:
    return json_ok(await store_stats(node(request).catalog))


async def peers(request: web.Request) -> web.Response:
    return json_ok(node(request).peers.snapshot())


async def pull(request: web.Request) -> web.Response:
    """Warm one revision (`mirror pull`): answers when it is done, with the sync report."""
    data = await body(request)
    key, rev = repo_spec(data)
    include, exclude = strings(data, "include"), strings(data, "exclude")
    caller = await request.app[GATE].admit(caller_of(request), "pull.request", key, target=str(key))
    spec = SyncRepo(key.repo_id, key.repo_type, (rev or "",), tuple(include), tuple(exclude))
    report = await node(request).syncer.run(repos=[spec], caller=caller)
    audit(request, "cache.pull", str(key), "ok" if report.ok else "error", revision=rev or "", failures=len(report.failures))
    return json_ok(report.to_json())


async def gc(request: web.Request) -> web.Response:
    dry_run = flag(await body(request), "dry_run", False)
    with as_http():
        rep = await node(request).lifecycle.collector.gc(dry_run=dry_run)
    if not dry_run:
        audit(request, "cache.gc", "store", chunk_files=rep.chunk_files_deleted, bytes_freed=rep.bytes_freed)
    return json_ok(dataclasses.asdict(rep))


async def evict(request: web.Request) -> web.Response:
    dry_run = flag(await body(request), "dry_run", False)
    with as_http():
        rep = await node(request).lifecycle.evictor.evict(dry_run=dry_run)
    if not dry_run:
        audit(request, "cache.evict", "store", revisions=rep.evicted[:100], freed_estimate=rep.freed_estimate)
    return json_ok({**dataclasses.asdict(rep), "dry_run": dry_run})


async def add_pin(request: web.Request) -> web.Response:
    data = await body(request)
    key, rev = repo_spec(data)
    label = text(data, "label", default="", limit=200)
    commit = await pin(node(request).catalog, key, rev, label)
    audit(request, "cache.pin", f"{key}@{commit}", label=label)
    return json_ok({"repo": key.repo_id, "repo_type": key.repo_type, "commit": commit, "pinned": True,
                    "label": label or (rev or "")})


async def remove_pin(request: web.Request) -> web.Response:
    key, rev = repo_spec(await body(request))
    commit, removed = await unpin(node(request).catalog, key, rev)
    if removed:
        audit(request, "cache.unpin", f"{key}@{commit}")
    return json_ok({"repo": key.repo_id, "repo_type": key.repo_type, "commit": commit, "pinned": False,
                    "was_pinned": removed})


async def trust_key(request: web.Request) -> web.Response:
    data = await body(request)
    with as_http():
        key = parse_public_key(text(data, "public_key", limit=100))
    label = text(data, "label", default="", limit=200)
    n = node(request)
    await n.catalog.meta.trust(key, label)
    await n.trust.refresh(force=True)
    audit(request, "keys.trust", key, label=label)
    return json_ok({"public_key": key, "trusted": True, "label": label})


async def revoke_key(request: web.Request) -> web.Response:
    with as_http():
        key = parse_public_key(text(await body(request), "public_key", limit=100))
    n = node(request)
    if key == n.key.public_hex:
        raise BadRequest(f"{key} is this node's own key; it cannot be revoked")
    fresh = await n.catalog.meta.revoke(key)
    await n.trust.refresh(force=True)
    audit(request, "keys.revoke", key, fresh=fresh)
    return json_ok({"public_key": key, "revoked": True, "already": not fresh})
