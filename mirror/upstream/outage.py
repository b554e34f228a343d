"""Outages: upstream hosts that recently could not take a connection.

A host (scheme-less `host:port`) is marked when a connection to it is refused, finds no
route or host, or times out while connecting. For `TTL` seconds after that, requests to
it fail at once with `UpstreamCannotConnect` instead of each waiting for its own connect
failure or timeout (issue 14, defect 15): with upstream down, a burst of requests costs
one connect attempt per host per window, and clients get their 502 before they give up.

Invariants: only connect-level failures mark a host (an answer of any status, or a body
that breaks off, does not); any answer from a host clears its mark; a mark expires by
the injected clock, never by a background task.
"""

from __future__ import annotations

import logging

from mirror.clock import Clock
from mirror.errors import UpstreamCannotConnect

log = logging.getLogger("mirror.upstream")

# Seconds a failed connect is remembered: long enough that a burst of requests does not
# wait for a connect timeout each, short enough that a recovered upstream is used again
# almost at once.
TTL = 3.0


class Outages:
    def __init__(self, clock: Clock, ttl: float = TTL) -> None:
        self.clock = clock
        self.ttl = ttl
        self._down: dict[str, tuple[float, str]] = {}  # host -> (until, reason)

    def check(self, host: str) -> None:
        """Raise `UpstreamCannotConnect` if `host` failed to connect within the TTL."""
        mark = self._down.get(host)
        if mark is None:
            return
        until, reason = mark
        if self.clock.monotonic() >= until:
            return
        raise UpstreamCannotConnect(f"upstream unreachable ({reason}, moments ago); not retried for a few seconds")

    def last_failure(self, host: str) -> str | None:
        """Why the last connect to `host` failed, if it did and none succeeded since
        (whatever the TTL: this is what `/readyz` reports, not what fails fast)."""
        mark = self._down.get(host)
        return mark[1] if mark is not None else None

    def mark(self, host: str, reason: str) -> None:
        now = self.clock.monotonic()
        old = self._down.get(host)
        if old is None or old[0] <= now:  # one line per outage, not one per request
            log.warning("upstream %s unreachable (%s); failing fast for %.0fs", host, reason, self.ttl)
        if len(self._down) > 1000:  # redirect targets vary: keep only live marks
            self._down = {h: m for h, m in self._down.items() if m[0] > now}
        self._down[host] = (now + self.ttl, reason)

    def clear(self, host: str) -> None:
        if self._down.pop(host, None) is not None:
            log.info("upstream %s reachable again", host)
