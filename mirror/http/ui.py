"""The web dashboard's route group (`/ui`): thin handlers that parse the query, ask the
dashboard's read model (ui/dashboard.py) and render a page (ui/render.py). Every page
needs the action `ui.read` (admins and auditors; anonymous callers only with `[auth]
anonymous_ui`); the sign-in form and the stylesheet need `ui.public` (anyone).

A browser cannot send `Authorization: Bearer`: it signs in once by posting a mirror token
to `/ui/login`, which the gate checks like any request (refusals are audited), and then
carries it in an HttpOnly, SameSite=Strict cookie scoped to `/ui` (http/caller.py reads
it there only). Pages send no script and a Content-Security-Policy that allows none;
every value in them is escaped by the templates. For a browser (`Accept: text/html`)
errors under `/ui` are pages too: a 401 is the sign-in form.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from mirror.admin.revisions import parse_spec
from mirror.auth.tokens import looks_like_mirror_token
from mirror.caller import Caller
from mirror.errors import AccessDenied, BadRequest, MirrorError, UsageError
from mirror.http import parse
from mirror.http.auth import GATE
from mirror.http.caller import CALLER, UI_COOKIE
from mirror.http.context import AUDIT
from mirror.model import RepoKey
from mirror.ui.dashboard import Dashboard
from mirror.ui.render import Renderer

DASHBOARD = web.AppKey("dashboard", Dashboard)
RENDERER = web.AppKey("ui_renderer", Renderer)

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
                "X-Frame-Options": "DENY", "Cache-Control": "no-store"}
HOURS = (1, 6, 24)
_HEADINGS = {400: "Bad request", 401: "Sign in", 403: "Not allowed", 404: "Not found", 409: "Conflict"}


def ui_routes() -> list[tuple[web.RouteDef, str]]:
    """(route, action) of the group; app.py installs them through routes.setup_routes."""
    pages = [
        web.get("/ui", overview), web.get("/ui/repos", repos), web.get("/ui/repo", repo),
        web.get("/ui/revision", revision), web.get("/ui/file", file), web.get("/ui/releases", releases),
        web.get("/ui/alias", alias), web.get("/ui/peers", peers), web.get("/ui/sync", sync),
        web.get("/ui/lifecycle", lifecycle), web.get("/ui/audit", audit),
    ]
    public = [web.get("/ui/login", login_form), web.post("/ui/login", login), web.post("/ui/logout", logout),
              web.get("/ui/static/{name}", static)]
    return [(r, "ui.read") for r in pages] + [(r, "ui.public") for r in public]


# --- pages ----------------------------------------------------------------------------


async def overview(request: web.Request) -> web.Response:
    hours = request.query.get("hours", "6")
    if hours not in {str(h) for h in HOURS}:
        raise BadRequest(f"'hours' must be one of {', '.join(map(str, HOURS))}")
    data = await request.app[DASHBOARD].overview(int(hours))
    return _page(request, "overview.html", "Overview", "overview", o=data)


async def repos(request: web.Request) -> web.Response:
    return _page(request, "repos.html", "Repos", "repos", repos=await request.app[DASHBOARD].repos())


async def repo(request: web.Request) -> web.Response:
    key = _repo(request)
    return _page(request, "repo.html", str(key), "repos", v=await request.app[DASHBOARD].repo(key))


async def revision(request: web.Request) -> web.Response:
    key, rev = _repo(request), _rev(request)
    data = await request.app[DASHBOARD].revision(key, rev)
    return _page(request, "revision.html", f"{key}@{data['view'].commit[:12]}", "repos", d=data)


async def file(request: web.Request) -> web.Response:
    key, rev = _repo(request), _rev(request)
    path = parse.file_path(request.query.get("path", ""))
    data = await request.app[DASHBOARD].file(key, rev or "main", path)
    return _page(request, "file.html", path, "repos", d=data)


async def releases(request: web.Request) -> web.Response:
    data = await request.app[DASHBOARD].channel_overview()
    return _page(request, "releases.html", "Releases", "releases", repos=data)


async def alias(request: web.Request) -> web.Response:
    key, name = _repo(request), _text(request, "alias", required=True)
    data = await request.app[DASHBOARD].alias(key, name)
    return _page(request, "alias.html", f"{key} {name}", "releases", d=data)


async def peers(request: web.Request) -> web.Response:
    return _page(request, "peers.html", "Peers", "peers", p=request.app[DASHBOARD].peer_table())


async def sync(request: web.Request) -> web.Response:
    events = await request.app[DASHBOARD].events("sync")
    return _page(request, "events.html", "Sync runs", "sync", events=events, heading="Sync runs", filters=False,
                 blurb="mirror sync, mirror pull and mirror sync --from runs (audit actions sync.*), newest first.")


async def lifecycle(request: web.Request) -> web.Response:
    return _page(request, "lifecycle.html", "Lifecycle", "lifecycle", d=await request.app[DASHBOARD].lifecycle())


async def audit(request: web.Request) -> web.Response:
    action, actor = _text(request, "action"), _text(request, "actor")
    events = await request.app[DASHBOARD].events("audit", action=action, actor=actor)
    return _page(request, "events.html", "Audit log", "audit", events=events, heading="Audit log", filters=True,
                 action=action, actor=actor, blurb="The newest 200 records of the hash-chained audit log.")


# --- signing in -------------------------------------------------------------------------


async def login_form(request: web.Request) -> web.Response:
    return _login_page(request, "", _next(request.query.get("next", "")), 200)


async def login(request: web.Request) -> web.StreamResponse:
    """Check a pasted mirror token with the gate (as `ui.read`: a refusal is audited) and
    keep it in the session cookie. Refused across sites: a page elsewhere must not sign a
    browser in with its own token."""
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        raise AccessDenied("sign-in from another site refused")
    form = await request.post()
    token, nxt = str(form.get("token", "")).strip(), _next(str(form.get("next", "")))
    if not looks_like_mirror_token(token):
        return _login_page(request, "Paste a mirror token (it starts with mm_).", nxt, 400)
    try:
        caller = await request.app[GATE].admit(Caller(hub_token=token, address=request.remote or ""), "ui.read",
                                               target="/ui/login")
    except MirrorError as exc:
        return _login_page(request, exc.message, nxt, exc.status)
    request.app[AUDIT].record(caller.actor, "ui.login", "/ui", address=caller.address)
    resp = web.Response(status=303, headers={**PAGE_HEADERS, "Location": nxt})
    resp.set_cookie(UI_COOKIE, token, path="/ui", httponly=True, samesite="Strict", secure=request.secure)
    return resp


async def logout(request: web.Request) -> web.StreamResponse:
    resp = web.Response(status=303, headers={**PAGE_HEADERS, "Location": "/ui/login"})
    resp.del_cookie(UI_COOKIE, path="/ui")
    return resp


async def static(request: web.Request) -> web.Response:
    found = request.app[RENDERER].static.get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    body, ctype = found
    return web.Response(body=body, content_type=ctype,
                        headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"})


# --- error pages --------------------------------------------------------------------------


def error_page(request: web.Request, status: int, message: str, code: str | None,
               headers: dict[str, str]) -> web.StreamResponse | None:
    """A browser's error under `/ui` as a page with the same status and error headers
    (the sign-in form for a 401); anything else keeps the JSON error (None)."""
    path = request.rel_url.path
    if (path != "/ui" and not path.startswith("/ui/")) or "text/html" not in request.headers.get("Accept", ""):
        return None
    extra = dict(headers)
    if code:
        extra["X-Error-Code"] = code
    if status == 401:
        resp = _login_page(request, message, _next(request.rel_url.path_qs), status)
    else:
        resp = _page(request, "error.html", _HEADINGS.get(status, "Error"), "", status=status,
                     heading=_HEADINGS.get(status, "Error"), message=message, login=status == 403)
        resp.set_status(status)
    resp.headers.update(extra)
    return resp


# --- helpers --------------------------------------------------------------------------------


def _page(request: web.Request, template: str, title: str, active: str, **context: Any) -> web.Response:
    caller = request.get(CALLER)
    who = f"{caller.principal} ({caller.role})" if isinstance(caller, Caller) and caller.principal else ""
    html = request.app[RENDERER].page(template, title=title, active=active, who=who,
                                      signed_in=UI_COOKIE in request.cookies, now=time.time(), **context)
    return web.Response(text=html, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)


def _login_page(request: web.Request, message: str, nxt: str, status: int) -> web.Response:
    resp = _page(request, "login.html", "Sign in", "", message=message, next=nxt)
    resp.set_status(status)
    return resp


def _next(value: str) -> str:
    """Where to go after signing in: a dashboard path of this site, else the overview."""
    ok = (value == "/ui" or value.startswith(("/ui/", "/ui?"))) and value.isascii() and value.isprintable()
    return value if ok and "//" not in value and "\\" not in value and len(value) <= 1000 else "/ui"


def _repo(request: web.Request) -> RepoKey:
    try:
        key, rev = parse_spec(_text(request, "repo", required=True, limit=300))
    except UsageError as exc:
        raise BadRequest(exc.message) from None
    if rev is not None:
        raise BadRequest("name the revision in 'rev', not in 'repo'")
    return key


def _rev(request: web.Request) -> str | None:
    rev = request.query.get("rev")
    return parse.revision(rev) if rev else None


def _text(request: web.Request, name: str, *, required: bool = False, limit: int = 64) -> str:
    value = request.query.get(name, "")
    if required and not value:
        raise BadRequest(f"'{name}' is required")
    if len(value) > limit or not value.isprintable():
        raise BadRequest(f"'{name}' must be at most {limit} printable characters")
    return value

