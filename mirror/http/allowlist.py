"""The address allowlist (`[server] allow`): which client addresses may talk to the
daemon at all.

The middleware sits right after the access log, so a refused request still gets its
access line, and nothing else runs for it: no caller parsing, no token lookup, no route
handler. It covers every route group on every TCP listener (Hub API, files, peer,
admin, and `/healthz` too: a load balancer's health checks must come from an allowed
address). An empty list allows everyone.

A refused caller gets 403 `AddressNotAllowed` in the Hub error format, and an audit
record (`auth.denied`, actor `address:<ip>`). A scanner outside the list could otherwise
grow the append-only audit log without bound, so denials are recorded within a budget
(a token bucket, `DENIALS_PER_MINUTE` with the same burst); past it they are counted, and
the next recorded denial carries the count as `suppressed`. The access log keeps one
line per request either way.

Addresses: IPv4 and IPv6 CIDRs; an IPv4-mapped IPv6 address (a dual-stack listener's
view of an IPv4 client) is matched as the IPv4 address it carries. A request on the
admin unix socket has no address: the socket's file mode (0600) is its gate, so the
list does not apply there. A TCP request whose address cannot be parsed is refused.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from typing import Awaitable, Callable, Iterable

from aiohttp import web

from mirror.errors import AddressNotAllowed
from mirror.http.context import AUDIT
from mirror.http.middleware import error_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DENIALS_PER_MINUTE = 60


class DenialBudget:
    """A token bucket of audit records for refused addresses: `take()` is the number of
    denials suppressed since the last recorded one when this one may be recorded, else
    None (this one is counted)."""

    def __init__(self, per_minute: int = DENIALS_PER_MINUTE, now: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(per_minute)
        self.tokens = self.burst
        self.now = now
        self.last = now()
        self.suppressed = 0

    def take(self) -> int | None:
        t = self.now()
        self.tokens = min(self.burst, self.tokens + (t - self.last) * self.rate)
        self.last = t
        if self.tokens < 1.0:
            self.suppressed += 1
            return None
        self.tokens -= 1.0
        count, self.suppressed = self.suppressed, 0
        return count


class Allowlist:
    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks: tuple[Network, ...] = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
        self.budget = DenialBudget()

    def __bool__(self) -> bool:
        return bool(self.networks)

    def permits(self, address: str | None) -> bool:
        """Whether `address` (a textual IP, as `request.remote` gives it) is in a listed
        network. An empty list permits everything; an unparsable address nothing."""
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(c.version == net.version and c in net for c in candidates for net in self.networks)


ALLOWLIST = web.AppKey("allowlist", Allowlist)


def _on_unix_socket(request: web.Request) -> bool:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    return sock is not None and sock.family == socket.AF_UNIX


@web.middleware
async def allowlist_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    allow = request.app[ALLOWLIST]
    if not allow or allow.permits(request.remote) or _on_unix_socket(request):
        return await handler(request)
    address = request.remote or "-"
    suppressed = allow.budget.take()
    audit = request.app.get(AUDIT)
    if suppressed is not None and audit is not None:
        detail: dict[str, object] = {"reason": "address not allowed"}
        if suppressed:
            detail["suppressed"] = suppressed
        audit.record(actor=f"address:{address}", action="auth.denied", target=request.rel_url.path[:300],
                     outcome="denied", **detail)
    exc = AddressNotAllowed("this address is not allowed to use this mirror")
    return error_response(exc.status, exc.message, exc.error_code)
