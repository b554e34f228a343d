"""The admin route group (`/_admin/v1/*`, and `POST /_admin/metrics`): served on the main listener, or only on the
admin listener when `[server] admin_listen` is set (app.py decides which).

One table: each route with the permission-table action it performs (auth/permissions.py)
and whether it changes state (with `[auth] admin_totp`, an admin then also needs a
fresh `X-Mirror-OTP` code). The auth middleware (http/auth.py) enforces both before a
handler runs; the handlers (http/admin_cache.py, http/admin_auth.py,
http/admin_metrics.py) are thin calls into the node's components and answer JSON.
Bodies are JSON objects.

`GET /_admin/v1/ping` answers `{"ok": true}`, so an operator (and the tests) can tell
which listener carries the admin routes.
"""

from __future__ import annotations

from aiohttp import web

from mirror.http import admin_auth as a
from mirror.http import admin_cache as c
from mirror.http import admin_releases as r
from mirror.http import admin_metrics as m
from mirror.http.routes import AdminRoute

V1 = "/_admin/v1"


async def ping(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def admin_routes() -> list[AdminRoute]:
    """(route, action of the permission table, whether it changes state)."""
    return [
        (web.get(f"{V1}/ping", ping), "health", False),
        # the cache and the node
        (web.get(f"{V1}/repos", c.repos), "cache.read", False),
        (web.get(f"{V1}/stats", c.stats), "cache.read", False),
        (web.get(f"{V1}/peers", c.peers), "cache.read", False),
        (web.post(f"{V1}/pull", c.pull), "pull.request", True),
        (web.post(f"{V1}/gc", c.gc), "cache.write", True),
        (web.post(f"{V1}/evict", c.evict), "cache.write", True),
        (web.post(f"{V1}/pins", c.add_pin), "cache.write", True),
        (web.delete(f"{V1}/pins", c.remove_pin), "cache.write", True),
        (web.post(f"{V1}/keys/trust", c.trust_key), "config.manage", True),
        (web.post(f"{V1}/keys/revoke", c.revoke_key), "config.manage", True),
        # access control
        (web.get(f"{V1}/tokens", a.list_tokens), "tokens.manage", False),
        (web.post(f"{V1}/tokens", a.create_token), "tokens.manage", True),
        (web.delete(f"{V1}/tokens/{{token}}", a.revoke_token), "tokens.manage", True),
        (web.get(f"{V1}/grants", a.list_grants), "tokens.manage", False),
        (web.post(f"{V1}/grants", a.add_grant), "tokens.manage", True),
        (web.delete(f"{V1}/grants", a.remove_grant), "tokens.manage", True),
        (web.post(f"{V1}/local-only", a.local_only), "config.manage", True),
        # per-version metrics (POST /_admin/metrics is the short form reporters use)
        (web.post("/_admin/metrics", m.report), "metrics.report", True),
        (web.post(f"{V1}/metrics", m.report), "metrics.report", True),
        (web.get(f"{V1}/metrics", m.show), "releases.read", False),
        (web.get(f"{V1}/metrics/compare", m.compare), "releases.read", False),
        # the audit log
        (web.get(f"{V1}/audit", a.read_audit), "audit.read", False),
        (web.get(f"{V1}/audit/verify", a.verify_audit), "audit.read", False),
        # releases and aliases
        (web.get(f"{V1}/releases", r.list_releases), "releases.read", False),
        (web.get(f"{V1}/releases/show", r.show_release), "releases.read", False),
        (web.post(f"{V1}/releases", r.create_release), "releases.write", True),
        (web.delete(f"{V1}/releases", r.delete_release), "releases.write", True),
        (web.get(f"{V1}/aliases", r.list_aliases), "releases.read", False),
        (web.get(f"{V1}/aliases/get", r.get_alias), "releases.read", False),
        (web.get(f"{V1}/aliases/history", r.alias_history), "releases.read", False),
        (web.get(f"{V1}/aliases/at", r.alias_at), "releases.read", False),
        (web.post(f"{V1}/aliases", r.set_alias), "releases.write", True),
        (web.delete(f"{V1}/aliases", r.delete_alias), "releases.write", True),
        (web.post(f"{V1}/aliases/rollback", r.rollback_alias), "releases.write", True),
        (web.post(f"{V1}/aliases/canary", r.start_canary), "releases.write", True),
        (web.post(f"{V1}/aliases/promote", r.promote_alias), "releases.write", True),
        (web.post(f"{V1}/aliases/abort", r.abort_alias), "releases.write", True),
    ]
