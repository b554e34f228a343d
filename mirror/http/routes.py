"""The route table: every URL the daemon answers, on one screen.

Each Hub operation has one handler; the repo-id shapes (`ns/name` and `name`) and repo
types are expanded into route lines here. Type prefixes and literal suffixes come first,
because aiohttp takes the first route that matches. `add_get` also answers HEAD.
"""

from __future__ import annotations

from aiohttp import web

from mirror.http import health, hub_api, hub_files

_TYPE = "{type:models|datasets|spaces}"
_PREFIX = "{prefix:datasets|spaces}"
_IDS = ("{ns}/{name}", "{name}")


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/healthz", health.healthz)
    r.add_get("/api/agent-harnesses", hub_api.agent_harnesses)
    r.add_get("/api/whoami-v2", hub_api.whoami)
    for rid in _IDS:
        api = f"/api/{_TYPE}/{rid}"
        r.add_get(f"{api}/revision/{{rev:.+}}", hub_api.repo_info)
        r.add_get(f"{api}/tree/{{rev}}", hub_api.tree)
        r.add_get(f"{api}/tree/{{rev}}/{{path:.+}}", hub_api.tree)
        r.add_post(f"{api}/paths-info/{{rev}}", hub_api.paths_info)
        r.add_get(f"{api}/refs", hub_api.refs)
        r.add_get(f"{api}/commits/{{rev}}", hub_api.commits)
        r.add_get(f"{api}/xet-read-token/{{rev}}", hub_api.xet_read_token)
    for rid in _IDS:
        r.add_get(f"/api/{_TYPE}/{rid}", hub_api.repo_info)
    for rid in _IDS:
        r.add_get(f"/{_PREFIX}/{rid}/resolve/{{rev}}/{{path:.+}}", hub_files.resolve_file)
    for rid in _IDS:
        r.add_get(f"/{rid}/resolve/{{rev}}/{{path:.+}}", hub_files.resolve_file)
