"""Fault switches and counters of the fake Hub, shared by the Hub and CDN origins.

Switches are plain attributes (`latency`, `bandwidth`, `ignore_range`) or queued one-shot rules
(`cut_after`, `fail_status`, `reset_connections`, `corrupt`). Counters see every request except the `/_fake/` control API.
All state sits behind one lock so tests may flip switches while the server thread runs.
"""

from __future__ import annotations

import fnmatch
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from aiohttp import web


class _Request(NamedTuple):
    method: str
    path: str
    query: str
    headers: dict[str, str]


class Seen(_Request):
    """One request as received: raw (still percent-encoded) path, raw query, lowercased headers.

    `origin` ("hub" or "cdn") is an attribute outside the tuple, so 4-way unpacking still works.
    """

    origin: str = "hub"


@dataclass(slots=True)
class FailRule:
    status: int
    remaining: int | None
    retry_after: int | None
    paths_glob: str | None
    error_code: str | None


@dataclass(slots=True)
class CorruptRule:
    key: str
    mode: str
    remaining: int | None


class FaultSwitches:
    """Mixin for FakeHub: fault knobs and request/byte counters."""

    def __init__(self) -> None:
        self._flock = threading.Lock()
        self.latency: float = 0.0
        self.bandwidth: float | None = None
        self.ignore_range = False
        self._cuts: list[list[int]] = []  # [n_bytes, remaining]
        self._fails: list[FailRule] = []
        self._resets: list[FailRule] = []
        self._corruptions: list[CorruptRule] = []
        self.reset_counters()

    # -- switches --------------------------------------------------------------------------

    def cut_after(self, n_bytes: int, times: int = 1) -> None:
        """Abort the next `times` file-body streams longer than `n_bytes` (either origin) after
        `n_bytes` body bytes: the connection is closed without completing the response."""
        with self._flock:
            self._cuts.append([n_bytes, times])

    def fail_status(self, status: int, times: int | None = None, retry_after: int | None = None,
                    paths_glob: str | None = None, error_code: str | None = None) -> None:
        """Answer `status` (JSON error) to matching requests; `times=None` means until cleared.

        `paths_glob` is an fnmatch pattern over the decoded request path, e.g. `*/resolve/*`.
        """
        with self._flock:
            self._fails.append(FailRule(status, times, retry_after, paths_glob, error_code))

    def reset_connections(self, times: int | None = None, paths_glob: str | None = None) -> None:
        """Drop the connection of matching requests before any answer (as a reset by the
        peer); `times=None` means until cleared. `paths_glob` as for `fail_status`."""
        with self._flock:
            self._resets.append(FailRule(0, times, None, paths_glob, None))

    def corrupt(self, path_or_sha: str, mode: str = "flip", times: int | None = None) -> None:
        """Serve bad bytes for a file named by repo path, git oid or sha256.

        "flip" keeps the length but inverts the first byte of every chunk sent; "html" answers a
        200 `text/html` page instead of the file.
        """
        if mode not in ("flip", "html"):
            raise ValueError(f"unknown corrupt mode {mode!r}")
        with self._flock:
            self._corruptions.append(CorruptRule(path_or_sha, mode, times))

    def clear_faults(self) -> None:
        """Remove every queued rule and reset latency, bandwidth and ignore_range."""
        with self._flock:
            self._cuts.clear()
            self._fails.clear()
            self._resets.clear()
            self._corruptions.clear()
        self.latency, self.bandwidth, self.ignore_range = 0.0, None, False

    # -- counters --------------------------------------------------------------------------

    def reset_counters(self) -> None:
        with self._flock:
            self.requests: list[Seen] = []
            self.bytes_sent = 0
            self._bytes_by_id: Counter[str] = Counter()
            self.cdn_saw_authorization = False

    def count(self, method: str | None = None, path_contains: str | None = None,
              origin: str | None = None) -> int:
        """Requests seen so far, filtered by method, substring of the raw path, and origin."""
        with self._flock:
            return sum(1 for r in self.requests
                       if (method is None or r.method == method.upper())
                       and (path_contains is None or path_contains in r.path)
                       and (origin is None or r.origin == origin))

    def bytes_sent_for(self, sha_or_oid: str) -> int:
        """File body bytes sent for one file: by sha256 (any file) or git blob oid (regular files)."""
        with self._flock:
            return self._bytes_by_id[sha_or_oid]

    # -- hooks for the server --------------------------------------------------------------

    def _record(self, request: web.BaseRequest, origin: str) -> None:
        seen = Seen(request.method, request.rel_url.raw_path, request.rel_url.raw_query_string,
                    {k.lower(): v for k, v in request.headers.items()})
        seen.origin = origin
        with self._flock:
            self.requests.append(seen)
            if origin == "cdn" and "Authorization" in request.headers:
                self.cdn_saw_authorization = True

    def _take_fail(self, path: str, rules: list[FailRule] | None = None) -> FailRule | None:
        rules = self._fails if rules is None else rules
        with self._flock:
            for rule in rules:
                if rule.paths_glob is None or fnmatch.fnmatchcase(path, rule.paths_glob):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining <= 0:
                            rules.remove(rule)
                    return rule
        return None

    def _take_reset(self, path: str) -> bool:
        return self._take_fail(path, self._resets) is not None

    def _take_cut(self, length: int) -> int | None:
        """The cut point for a body of `length` bytes; only bodies longer than it use up a cut."""
        with self._flock:
            if not self._cuts or self._cuts[0][0] >= length:
                return None
            n_bytes = self._cuts[0][0]
            self._cuts[0][1] -= 1
            if self._cuts[0][1] <= 0:
                self._cuts.pop(0)
            return n_bytes

    def _take_corrupt(self, keys: Iterable[str]) -> str | None:
        keys = set(keys)
        with self._flock:
            for rule in self._corruptions:
                if rule.key in keys:
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining <= 0:
                            self._corruptions.remove(rule)
                    return rule.mode
        return None

    def _count_bytes(self, ids: Iterable[str], n: int) -> None:
        with self._flock:
            self.bytes_sent += n
            for i in set(ids):
                self._bytes_by_id[i] += n
