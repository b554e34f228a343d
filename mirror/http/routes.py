"""The route table: every URL the daemon answers, on one screen, in groups.

Groups: Hub API (metadata), files (`resolve`), health (`/healthz`, `/readyz`), peer (`/_peer/*`, a route group
of its own so peer authentication wraps exactly it); and the slots later issues fill
from the composition root (app.py): admin (`/_admin/*`), metrics (`/metrics`) and the
web dashboard (`/ui`, http/ui.py). Every route carries the action of the permission
table (auth/permissions.py) it performs.

Each Hub operation has one handler; the repo-id shapes (`ns/name` and `name`) and repo
types are expanded into route lines here. Type prefixes and literal suffixes come first,
because aiohttp takes the first route that matches. `web.get` also answers HEAD.
"""

from __future__ import annotations

from typing import Iterable

from aiohttp import web

from mirror.http import health, hub_api, hub_files

_TYPE = "{type:models|datasets|spaces}"
_PREFIX = "{prefix:datasets|spaces}"
_IDS = ("{ns}/{name}", "{name}")

Routes = list[web.RouteDef]


def health_routes() -> Routes:
    return [web.get("/healthz", health.healthz), web.get("/readyz", health.readyz)]


def hub_api_routes() -> Routes:
    out = [
        web.get("/api/agent-harnesses", hub_api.agent_harnesses),
        web.get("/api/whoami-v2", hub_api.whoami),
    ]
    for rid in _IDS:
        api = f"/api/{_TYPE}/{rid}"
        out += [
            web.get(f"{api}/revision/{{rev:.+}}", hub_api.repo_info),
            web.get(f"{api}/tree/{{rev}}", hub_api.tree),
            web.get(f"{api}/tree/{{rev}}/{{path:.+}}", hub_api.tree),
            web.post(f"{api}/paths-info/{{rev}}", hub_api.paths_info),
            web.get(f"{api}/refs", hub_api.refs),
            web.get(f"{api}/commits/{{rev}}", hub_api.commits),
            web.get(f"{api}/xet-read-token/{{rev}}", hub_api.xet_read_token),
        ]
    out += [web.get(f"/api/{_TYPE}/{rid}", hub_api.repo_info) for rid in _IDS]
    return out


def file_routes() -> Routes:
    out = [web.get(f"/{_PREFIX}/{rid}/resolve/{{rev}}/{{path:.+}}", hub_files.resolve_file) for rid in _IDS]
    out += [web.get(f"/{rid}/resolve/{{rev}}/{{path:.+}}", hub_files.resolve_file) for rid in _IDS]
    return out


# An admin route: its definition, its action (auth/permissions.py), and whether it
# changes state (then `[auth] admin_totp` asks for a two-factor code).
AdminRoute = tuple[web.RouteDef, str, bool]


def setup_routes(
    app: web.Application,
    *,
    admin: Iterable[AdminRoute] = (),
    peer: Iterable[web.RouteDef] = (),
    metrics: Iterable[web.RouteDef] = (),
    ui: Iterable[tuple[web.RouteDef, str]] = (),
) -> dict[object, tuple[str, bool]]:
    """Install the groups and return each handler's (action, state_changing), what the
    auth middleware checks (http/auth.py; a route without an entry is refused). Fixed
    prefixes (health, metrics, peer, admin, ui) go before the Hub's patterns, whose `{name}`
    would otherwise match them. The dashboard's routes are all read-only pages (`ui.read`)
    but its sign-in form and stylesheet (`ui.public`)."""
    actions: dict[object, tuple[str, bool]] = {}
    admin, ui = list(admin), list(ui)
    groups = [
        (health_routes(), "health"), (list(metrics), "metrics.read"), (list(peer), "peer.api"),
        ([r for r, _a, _w in admin], ""), ([r for r, _a in ui], ""), (hub_api_routes(), "hub.read"),
        (file_routes(), "files.read"),
    ]
    for routes, action in groups:
        app.router.add_routes(routes)
        for r in routes:
            actions[r.handler] = (action, False)  # type: ignore[attr-defined]
    for r, action, writes in admin:
        actions[r.handler] = (action, writes)  # type: ignore[attr-defined]
    for r, action in ui:
        actions[r.handler] = (action, False)  # type: ignore[attr-defined]
    return actions
