"""Per-version metrics over HTTP (channels/metrics.py):

    POST /_admin/metrics, /_admin/v1/metrics   report values (action metrics.report)
        {"repo": "org/m", "repo_type"?: "model", "revision": "v1.2.0", "name": "accuracy",
         "value": 0.97, "client"?: "eval-3", "timestamp"?: unix seconds}
        or {"metrics": [ up to MAX_BATCH such objects ]}: all recorded or none
        -> 201 {"recorded": n, "commit": sha, "commits": [sha, ...]}
    GET /_admin/v1/metrics?repo=&revision=[&repo_type=]          the version's summary
    GET /_admin/v1/metrics/compare?repo=&a=&b=[&metric=][&repo_type=]   Welch's t-test

Reads are `releases.read`. A developer reports and reads only repos within its grants
(and no repo the repo rules refuse): the gate is asked again with the repo. The
reporter recorded is the caller's audit name; the body's `client` is free text. Each
version reported is audited (`metrics.record`), then the canary controller is told, so
a gate waiting for this value decides now.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mirror.errors import BadRequest
from mirror.http.admin_io import audit, body, json_ok, node, repo_spec, text
from mirror.http.auth import GATE
from mirror.http.caller import caller_of
from mirror.model import RepoKey

MAX_BATCH = 1000


async def _version(request: web.Request, key: RepoKey, rev: str | None, client: str | None = None) -> tuple[int, str]:
    """The version a request names, once the caller may see its repo. A report's alias
    names the side of a canary its client is served: the body's `client` (the
    X-Client-Id the client sends), else the reporter's own sticky key."""
    caller = caller_of(request)
    await request.app[GATE].admit(caller, "hub.read", key, target=str(key))
    sticky = "" if client is None else (f"id:{client}" if client else caller.client_key)
    return await node(request).channels.version_of(key, rev, sticky)


async def report(request: web.Request) -> web.Response:
    data = await body(request)
    items: Any = data["metrics"] if "metrics" in data else [data]
    if not isinstance(items, list) or not items or len(items) > MAX_BATCH:
        raise BadRequest(f"'metrics' must be a list of 1 to {MAX_BATCH} report objects")
    vm = node(request).version_metrics
    reporter = caller_of(request).actor
    versions: dict[tuple[RepoKey, str | None, str], tuple[int, str]] = {}
    reports = []
    for i, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise BadRequest("a report must be a JSON object")
            key, rev = repo_spec(item)
            if rev is None:
                raise BadRequest("'revision' is required (a commit, branch, tag, release or alias)")
            client = text(item, "client", default="", limit=128)
            if (key, rev, client) not in versions:
                versions[key, rev, client] = await _version(request, key, rev, client)
            repo, commit = versions[key, rev, client]
            if "value" not in item:
                raise BadRequest("'value' is required")
            reports.append(vm.report(repo, commit, text(item, "name", limit=64), item["value"],
                                     client=text(item, "client", default="", limit=128),
                                     at=item.get("timestamp"), reporter=reporter))
        except BadRequest as exc:
            if "metrics" not in data:
                raise
            raise BadRequest(f"metrics[{i}]: {exc.message}") from None
    await vm.record_all(reports)
    # (repo, commit) -> its repo key and the names reported for it
    groups: dict[tuple[int, str], tuple[RepoKey, list[str]]] = {}
    for (key, _rev, _client), version in versions.items():
        groups.setdefault(version, (key, []))
    for r in reports:
        groups[r.repo, r.commit][1].append(r.name)
    for (_repo, commit), (key, names) in groups.items():
        audit(request, "metrics.record", f"{key}@{commit}", names=sorted(set(names))[:50], values=len(names))
    for repo, commit in groups:
        await node(request).canary.after_report(repo, commit)
    commits = sorted({commit for _repo, commit in groups})
    return web.json_response({"recorded": len(reports), "commit": commits[0] if len(commits) == 1 else None,
                              "commits": commits}, status=201)


def _query(request: web.Request, *names: str) -> dict[str, str]:
    q = request.rel_url.query
    return {n: q[n] for n in names if n in q}


async def show(request: web.Request) -> web.Response:
    key, rev = repo_spec(_query(request, "repo", "repo_type", "revision"))
    if rev is None:
        raise BadRequest("'revision' is required")
    repo, commit = await _version(request, key, rev)
    out = await node(request).version_metrics.summary(repo, commit)
    return json_ok({"repo": key.repo_id, "repo_type": key.repo_type, "revision": rev, **out})


async def compare(request: web.Request) -> web.Response:
    q = _query(request, "repo", "repo_type", "a", "b", "metric")
    key, _ = repo_spec(q)
    a, b = text(q, "a"), text(q, "b")
    metric = q.get("metric") or None
    _repo, a_commit = await _version(request, key, a)
    repo, b_commit = await _version(request, key, b)
    out = await node(request).version_metrics.compare(repo, a_commit, b_commit, metric)
    return json_ok({"repo": key.repo_id, "repo_type": key.repo_type, "a_revision": a, "b_revision": b, **out})
