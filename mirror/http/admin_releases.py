"""Admin API handlers for releases and aliases (`/_admin/v1/releases`, `/_admin/v1/aliases`):
thin calls into the node's `Releases` and `Channels`, the components the `mirror release` and
`mirror alias` commands use, answering the same JSON as their `--json`. Reads take the repo
in the query (`?repo=org/m&repo_type=model&alias=prod`), changes a JSON body; changes are
audited and recorded in the alias history by the components themselves, under the
caller's name.
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from mirror.caller import Caller
from mirror.catalog.channels import Change
from mirror.channels import render
from mirror.channels.plan import CanaryPlan, Gate
from mirror.errors import BadRequest
from mirror.http.admin_io import body, flag, json_ok, node, repo_spec, strings, text
from mirror.http.caller import caller_of
from mirror.model import RepoKey
from mirror.units import parse_duration


def _repo(data: dict[str, Any]) -> RepoKey:
    key, rev = repo_spec({k: v for k, v in data.items() if k in ("repo", "repo_type")})
    assert rev is None
    return key


def _number(data: dict[str, Any], name: str, default: float | None = None) -> float:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"{name!r} must be a number")
    return float(value)


def _object(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise BadRequest(f"{name!r} must be a JSON object")
    return value


async def _changed(request: web.Request, key: RepoKey, name: str, change: Change | None) -> web.Response:
    row = await node(request).catalog.channels.alias(await node(request).channels.repo(key), name)
    return json_ok(render.change_json(key, change, row))


def _caller(request: web.Request) -> Caller:
    return caller_of(request)


# --- releases -------------------------------------------------------------------------------


async def list_releases(request: web.Request) -> web.Response:
    key = _repo(dict(request.query))
    return json_ok([render.release_json(key, r) for r in await node(request).releases.list_releases(key)])


async def show_release(request: web.Request) -> web.Response:
    q = dict(request.query)
    key = _repo(q)
    releases = node(request).releases
    rel = await releases.get(key, text(q, "version", limit=64))
    return json_ok(render.release_json(key, rel, await releases.aliases_of(rel)))


async def create_release(request: web.Request) -> web.Response:
    data = await body(request)
    key = _repo(data)
    rel = await node(request).releases.create(
        key, text(data, "version", limit=64), text(data, "revision", limit=255), _caller(request),
        params=_object(data, "params"), datasets=strings(data, "datasets"), meta=_object(data, "meta"),
        note=text(data, "note", default="", limit=4000), force=flag(data, "force", False),
    )
    return web.json_response(render.release_json(key, rel), status=201)


async def delete_release(request: web.Request) -> web.Response:
    data = await body(request)
    key = _repo(data)
    rel = await node(request).releases.delete(key, text(data, "version", limit=64), _caller(request))
    return json_ok({**render.release_json(key, rel), "deleted": True})


# --- aliases --------------------------------------------------------------------------------


async def list_aliases(request: web.Request) -> web.Response:
    key = _repo(dict(request.query))
    return json_ok([render.alias_json(key, r) for r in await node(request).channels.list_aliases(key)])


async def get_alias(request: web.Request) -> web.Response:
    q = dict(request.query)
    key = _repo(q)
    return json_ok(render.alias_json(key, await node(request).channels.get(key, text(q, "alias", limit=64))))


async def alias_history(request: web.Request) -> web.Response:
    q = dict(request.query)
    key = _repo(q)
    limit = q.get("limit", "100")
    if not limit.isdigit() or not 1 <= int(limit) <= 100_000:
        raise BadRequest("'limit' must be 1..100000")
    events = await node(request).channels.history(key, text(q, "alias", limit=64), int(limit))
    return json_ok([render.event_json(e) for e in events])


async def alias_at(request: web.Request) -> web.Response:
    q = dict(request.query)
    key = _repo(q)
    try:
        when = float(q.get("time", ""))
    except ValueError:
        raise BadRequest("'time' must be unix seconds") from None
    if not math.isfinite(when):
        raise BadRequest("'time' must be unix seconds")
    ev = await node(request).channels.at(key, text(q, "alias", limit=64), when)
    return json_ok(render.at_json(key, q["alias"], when, ev))


async def set_alias(request: web.Request) -> web.Response:
    data = await body(request)
    key, name = _repo(data), text(data, "alias", limit=64)
    change = await node(request).channels.set(key, name, text(data, "revision", limit=255), _caller(request),
                                              reason=text(data, "reason", limit=1000), force=flag(data, "force", False))
    return await _changed(request, key, name, change)


async def rollback_alias(request: web.Request) -> web.Response:
    data = await body(request)
    key, name = _repo(data), text(data, "alias", limit=64)
    change = await node(request).channels.rollback(key, name, _caller(request), reason=text(data, "reason", limit=1000))
    return await _changed(request, key, name, change)


async def delete_alias(request: web.Request) -> web.Response:
    data = await body(request)
    key, name = _repo(data), text(data, "alias", limit=64)
    change = await node(request).channels.delete(key, name, _caller(request), reason=text(data, "reason", limit=1000))
    return await _changed(request, key, name, change)


async def start_canary(request: web.Request) -> web.Response:
    data = await body(request)
    key, name = _repo(data), text(data, "alias", limit=64)
    every = data.get("every", "60s")
    seconds = parse_duration(str(every)) if isinstance(every, (str, int, float)) and not isinstance(every, bool) else -1
    plan = CanaryPlan(_number(data, "percent"), _number(data, "step", 0.0), seconds, _number(data, "max", 100.0),
                      tuple(Gate.parse(g) for g in strings(data, "gates")),
                      int(_number(data, "failure_limit", 1)), text(data, "on_missing_metrics", default="hold", limit=20))
    change = await node(request).channels.canary(key, name, text(data, "to", limit=255), plan, _caller(request),
                                                 reason=text(data, "reason", default="", limit=1000))
    return await _changed(request, key, name, change)


async def promote_alias(request: web.Request) -> web.Response:
    return await _end_canary(request, "promote")


async def abort_alias(request: web.Request) -> web.Response:
    return await _end_canary(request, "abort")


async def _end_canary(request: web.Request, what: str) -> web.Response:
    data = await body(request)
    key, name = _repo(data), text(data, "alias", limit=64)
    change = await getattr(node(request).channels, what)(key, name, _caller(request),
                                                         reason=text(data, "reason", default="", limit=1000))
    return await _changed(request, key, name, change)
