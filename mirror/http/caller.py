"""The caller middleware: parses who is asking once per request into a `Caller`
(mirror/caller.py) that handlers pass down; nothing below the edge reads raw headers.

The Hub token comes as `Authorization: Bearer <token>` (how `huggingface_hub` sends
`HF_TOKEN`); a malformed value is treated as no token, never echoed. `X-Client-Id`
(canary stickiness) is kept only when it is short printable ASCII.

The web dashboard's browsers cannot send that header: after signing in (http/ui.py) they
carry a mirror token in the `mirror_ui` cookie, which counts only for `/ui` paths. A
cookie is never a credential anywhere else, so a page on another site cannot use it
against the admin API or the Hub routes.
"""

from __future__ import annotations

import re
from typing import Awaitable, Callable

from aiohttp import web

from mirror.caller import Caller

CALLER = web.RequestKey("caller", Caller) if hasattr(web, "RequestKey") else "mirror.caller"  # type: ignore[attr-defined]

_CLIENT_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}", re.ASCII)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bearer_token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        token = auth[7:].strip()
        if token and token.isascii() and token.isprintable() and len(token) < 1024:
            return token
    return None


UI_COOKIE = "mirror_ui"


def ui_cookie_token(request: web.Request) -> str | None:
    """The mirror token of a signed-in dashboard browser, on `/ui` paths only."""
    path = request.rel_url.path
    if path != "/ui" and not path.startswith("/ui/"):
        return None
    token = request.cookies.get(UI_COOKIE, "")
    if token.startswith("mm_") and token.isascii() and token.isprintable() and " " not in token and len(token) < 1024:
        return token
    return None


def parse_caller(request: web.Request) -> Caller:
    client_id = request.headers.get("X-Client-Id", "")
    return Caller(
        hub_token=bearer_token(request) or ui_cookie_token(request),
        address=request.remote or "",
        client_id=client_id if _CLIENT_ID.fullmatch(client_id) else "",
    )


@web.middleware
async def caller_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[CALLER] = parse_caller(request)  # type: ignore[index]
    return await handler(request)


def caller_of(request: web.Request) -> Caller:
    return request[CALLER]  # type: ignore[no-any-return,index]
