"""The auth middleware: applies the gate (auth/gate.py) to every routed request, with
the action its route carries (http/routes.py `ACTIONS`), the repo it names (strictly
parsed; a malformed one is left for the handler to refuse) and, for admin writes, the
two-factor header `X-Mirror-OTP`. The admitted `Caller` replaces the parsed one."""

from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web

from mirror.auth.gate import Gate
from mirror.errors import MirrorError
from mirror.http import parse
from mirror.http.caller import CALLER, caller_of
from mirror.model import RepoKey

GATE = web.AppKey("gate", Gate)
# handler -> (action, state_changing); filled by routes.setup_routes.
ROUTE_ACTIONS = web.AppKey("route_actions", dict)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _repo(request: web.Request) -> RepoKey | None:
    mi = request.match_info
    if "name" not in mi:
        return None
    try:
        return parse.repo_key(request)
    except MirrorError:
        return None  # the handler answers 400 for it


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route
    spec = request.app[ROUTE_ACTIONS].get(route.handler) if route is not None else None
    if spec is None:
        return await handler(request)  # no route matched: aiohttp's 404/405, nothing to guard
    action, state_changing = spec
    caller = await request.app[GATE].admit(caller_of(request), action, _repo(request), target=request.rel_url.path[:300],
                                           state_changing=state_changing, otp=request.headers.get("X-Mirror-OTP"))
    request[CALLER] = caller  # type: ignore[index]
    return await handler(request)
