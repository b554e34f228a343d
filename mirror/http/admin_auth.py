"""Admin API handlers for access control and the audit log (`/_admin/v1/...`): tokens,
service-token grants, local-only namespaces, audit reading and verification. The same
components as `mirror token|grant|ungrant|local-only|audit` (auth/tokens.py, the token
catalog, audit/log.py); every change is audited under the caller's name.

A token is returned once, by `POST tokens`; lists never hold a secret. Revoking the last
active admin token is refused (auth/tokens.py), over HTTP without a way round it.
"""

from __future__ import annotations

import re

from aiohttp import web

from mirror.auth.permissions import ROLES
from mirror.auth.tokens import GRANT_RE
from mirror.errors import BadRequest
from mirror.http.admin_io import as_http, audit, body, flag, json_ok, node, strings, text
from mirror.units import parse_duration

_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}", re.ASCII)
_MAX_AUDIT = 10_000


async def list_tokens(request: web.Request) -> web.Response:
    return json_ok([r.public() for r in await node(request).catalog.tokens.all()])


async def create_token(request: web.Request) -> web.Response:
    data = await body(request)
    name, role = text(data, "name", limit=64), text(data, "role", limit=20)
    grants = strings(data, "grants")
    expires = data.get("expires")
    if expires is not None:
        if isinstance(expires, bool) or not isinstance(expires, (str, int, float)):
            raise BadRequest("'expires' is a duration such as '90d' or a number of seconds")
        with as_http():
            expires = parse_duration(expires) if isinstance(expires, str) else float(expires)
        if not expires > 0:
            raise BadRequest("'expires' must be a positive duration")
    with as_http():
        token, row = await node(request).tokens.create(name, role, expires_in=expires, grants=grants)
    audit(request, "token.create", row.name, role=row.role, id=row.id, grants=list(row.grants), expires_at=row.expires_at)
    return json_ok({"token": token, **row.public()})


async def revoke_token(request: web.Request) -> web.Response:
    with as_http():
        row = await node(request).tokens.revoke(request.match_info["token"])
    audit(request, "token.revoke", row.name, id=row.id, role=row.role)
    return json_ok({**row.public(), "revoked": True})


def _grant_args(data: dict[str, object]) -> tuple[str, str]:
    repo, to = text(data, "repo", limit=200), text(data, "to", limit=64)
    if not GRANT_RE.fullmatch(repo):
        raise BadRequest(f"bad repo {repo!r}: a repo, a namespace or a glob like 'org/*'")
    return repo, (f"role:{to}" if to in ROLES else f"token:{to}")


async def list_grants(request: web.Request) -> web.Response:
    rows = await node(request).catalog.tokens.grants()
    return json_ok([{"repo": r, "to": g, "created_at": at, "created_by": by} for r, g, at, by in rows])


async def add_grant(request: web.Request) -> web.Response:
    repo, grantee = _grant_args(await body(request))
    n = node(request)
    if grantee.startswith("token:"):
        with as_http():
            await n.tokens.find(grantee[6:])
    actor = audit(request, "grant.add", repo, to=grantee)
    added = await n.catalog.tokens.grant(repo, grantee, actor)
    return json_ok({"repo": repo, "to": grantee, "added": added,
                    "service_token_configured": bool(n.config.upstream.service_token_file)})


async def remove_grant(request: web.Request) -> web.Response:
    repo, grantee = _grant_args(await body(request))
    removed = await node(request).catalog.tokens.ungrant(repo, grantee)
    audit(request, "grant.remove", repo, to=grantee, removed=removed)
    return json_ok({"repo": repo, "to": grantee, "removed": removed})


async def local_only(request: web.Request) -> web.Response:
    data = await body(request)
    namespace, local = text(data, "namespace", limit=96), flag(data, "local", True)
    if not _NAMESPACE.fullmatch(namespace):
        raise BadRequest(f"bad namespace {namespace!r}")
    n = node(request)
    await n.catalog.tokens.set_local(namespace, local)
    audit(request, "policy.local_only", namespace, local=local)
    names = sorted({*n.config.auth.local_only, *await n.catalog.tokens.local_namespaces()})
    return json_ok({"local_only": names})


async def read_audit(request: web.Request) -> web.Response:
    q = request.query
    try:
        since = float(q["since"]) if q.get("since") else None
        limit = int(q.get("limit") or 1000)
    except ValueError:
        raise BadRequest("'since' is a unix time in seconds and 'limit' a whole number") from None
    if not 1 <= limit <= _MAX_AUDIT:
        raise BadRequest(f"'limit' must be between 1 and {_MAX_AUDIT}")
    for name in ("actor", "action"):
        if len(q.get(name, "")) > 200:
            raise BadRequest(f"{name!r} is too long")
    return json_ok(await node(request).audit.read(since=since, actor=q.get("actor") or None,
                                                  action=q.get("action") or None, limit=limit))


async def verify_audit(request: web.Request) -> web.Response:
    n = node(request)
    return json_ok((await n.audit.verify(await n.catalog.meta.trusted())).to_json())
