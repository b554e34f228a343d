"""VersionMetrics: what is known about how a version (repo, commit) does, for people
(`mirror metrics show|compare`) and for canary gates (channels/canary.py).

Two sources:

- reported values: an eval job or a serving fleet reports `name=value` for a version
  (`POST /_admin/metrics`, `mirror metrics record`). Names are `[A-Za-z_][A-Za-z0-9_.:-]*`
  (64 at most); `mirror_*` is reserved for the built-ins;
- what the mirror sees: every file request it serves (`observe`, on the hot path: a few
  dictionary updates in memory, no I/O) counts toward its version's requests, errors
  (status >= 500), bytes and distinct clients. `flush` writes the counts every
  FLUSH_INTERVAL seconds (node.py); if the disk refuses, they wait for the next try,
  within MAX_PENDING buckets and clients (beyond that new ones are dropped and counted).

A gate reads `aggregate(repo, commit, name, since, until)`: the mean and count of the
values reported with a time in (since, until], or a built-in over the same window:

    mirror_requests    file requests served          mirror_errors  those that failed (5xx)
    mirror_error_rate  errors / requests             mirror_bytes   bytes sent
    mirror_clients     distinct clients (by the hash of Caller.client_key)

Built-ins count the traffic not yet flushed too, so a gate sees the last seconds.
None means no data in the window (a gate's "missing metric"); built-ins have no data
without a request in the window (no clients, for mirror_clients).

`compare` tests two versions' values of each metric both have with Welch's t-test
(stats.py); higher is better unless the name ends like a cost (LOWER_IS_BETTER).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import statistics
from typing import Any, Sequence

from mirror.catalog.versions import ClientSightings, Report, Traffic, TrafficDeltas, VersionCatalog
from mirror.channels.stats import welch
from mirror.clock import Clock
from mirror.errors import BadRequest


log = logging.getLogger("mirror.metrics")

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}", re.ASCII)
RESERVED = "mirror_"
BUILTINS = ("mirror_requests", "mirror_errors", "mirror_error_rate", "mirror_bytes", "mirror_clients")
LOWER_IS_BETTER = ("latency", "_ms", "_seconds", "loss", "error", "errors", "error_rate")
ALPHA = 0.05  # p below this is a significant difference
FUTURE_SKEW = 300.0  # a report may be this many seconds ahead of this node's clock
MAX_CLIENT = 128
MAX_PENDING = 50_000  # unflushed traffic buckets, and unflushed clients, at most


def check_name(name: str, *, builtin_ok: bool = False) -> str:
    """A metric name a report may use (or, with `builtin_ok`, a gate may read)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise BadRequest(f"metric name {str(name)[:80]!r} must match [A-Za-z_][A-Za-z0-9_.:-]* (64 characters at most)")
    if name.startswith(RESERVED):
        if builtin_ok and name in BUILTINS:
            return name
        if builtin_ok:
            raise BadRequest(f"unknown built-in metric {name!r} (built-ins: {', '.join(BUILTINS)})")
        raise BadRequest(f"metric names starting with {RESERVED!r} are the mirror's own ({', '.join(BUILTINS)})")
    return name


def lower_is_better(name: str) -> bool:
    return name.endswith(LOWER_IS_BETTER)


def client_hash(key: str) -> str:
    """What version_clients stores of a client key (it may hold an address)."""
    return hashlib.sha256(b"model-mirror client\0" + key.encode("utf-8", "replace")).hexdigest()[:16]


class VersionMetrics:
    def __init__(self, catalog: VersionCatalog, clock: Clock, *, max_pending: int = MAX_PENDING) -> None:
        self.catalog = catalog
        self.clock = clock
        self.max_pending = max_pending
        self._traffic: TrafficDeltas = {}
        self._clients: ClientSightings = {}
        self._dropped = 0
        # Held by a flush and by a read of the built-ins: a read sees each count once,
        # either in the catalog or in memory.
        self._lock = asyncio.Lock()

    # --- reported values ---------------------------------------------------------------

    def report(self, repo: int, commit: str, name: str, value: float, *, client: str = "", at: float | None = None,
               reporter: str = "") -> Report:
        """A checked report (BadRequest says what is wrong), not yet recorded."""
        check_name(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BadRequest(f"{name}: the value must be a finite number, got {str(value)[:40]!r}")
        if not isinstance(client, str) or len(client) > MAX_CLIENT or not client.isprintable():
            raise BadRequest(f"the client must be a string of at most {MAX_CLIENT} printable characters")
        now = self.clock.now()
        if at is None:
            at = now
        elif isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at) or at < 0:
            raise BadRequest(f"the timestamp must be unix seconds, got {str(at)[:40]!r}")
        elif at > now + FUTURE_SKEW:
            raise BadRequest(f"the timestamp {at:.0f} is {at - now:.0f}s ahead of this mirror's clock "
                             f"(at most {FUTURE_SKEW:.0f}s allowed)")
        return Report(repo, commit, name, float(value), client, float(at), reporter)

    async def record(self, repo: int, commit: str, name: str, value: float, *, client: str = "",
                     at: float | None = None, reporter: str = "") -> None:
        await self.record_all([self.report(repo, commit, name, value, client=client, at=at, reporter=reporter)])

    async def record_all(self, reports: Sequence[Report]) -> None:
        """Checked reports (`report`), all or none."""
        await self.catalog.add_reports(reports)

    # --- what the mirror serves ----------------------------------------------------------

    def observe(self, repo: int, commit: str, client_key: str, status: int, nbytes: int) -> None:
        """Count one served file request. Memory only; called on every request."""
        now = self.clock.now()
        bucket = (repo, commit, int(now // 60))
        counts = self._traffic.get(bucket)
        if counts is None:
            if len(self._traffic) >= self.max_pending:
                self._dropped += 1
                return
            counts = self._traffic[bucket] = [0, 0, 0]
        counts[0] += 1
        if status >= 500:
            counts[1] += 1
        counts[2] += max(0, nbytes)
        who = (repo, commit, client_hash(client_key))
        seen = self._clients.get(who)
        if seen is not None:
            seen[1] = max(seen[1], now)
        elif len(self._clients) < self.max_pending:
            self._clients[who] = [now, now]
        else:
            self._dropped += 1

    async def flush(self) -> None:
        """Write the counted traffic. On a refused write (StorageError) the counts stay
        for the next flush, and the error is raised for the caller to report."""
        async with self._lock:
            if not self._traffic and not self._clients:
                return
            traffic, clients = self._traffic, self._clients
            self._traffic, self._clients = {}, {}
            try:
                await self.catalog.add_traffic(traffic, clients)
            except Exception:
                self._keep(traffic, clients)
                raise
            if self._dropped:
                log.warning("per-version traffic: %d observations dropped (more than %d unflushed buckets or clients)",
                            self._dropped, self.max_pending)
                self._dropped = 0

    def _keep(self, traffic: TrafficDeltas, clients: ClientSightings) -> None:
        """Put unwritten counts back beside those observed since (within the bound)."""
        for bucket, (r, e, b) in traffic.items():
            cur = self._traffic.get(bucket)
            if cur is not None:
                cur[0], cur[1], cur[2] = cur[0] + r, cur[1] + e, cur[2] + b
            elif len(self._traffic) < self.max_pending:
                self._traffic[bucket] = [r, e, b]
            else:
                self._dropped += r
        for who, (first, last) in clients.items():
            seen = self._clients.get(who)
            if seen is not None:
                seen[0], seen[1] = min(seen[0], first), max(seen[1], last)
            elif len(self._clients) < self.max_pending:
                self._clients[who] = [first, last]
            else:
                self._dropped += 1

    async def _traffic_in(self, repo: int, commit: str, since: float | None, until: float | None) -> Traffic:
        """A version's traffic in (since, until] (None: unbounded), stored and unflushed,
        each count once. A minute bucket counts when its minute overlaps the window."""
        first = None if since is None else math.floor(since / 60)
        last = None if until is None else math.floor(until / 60)
        async with self._lock:
            stored = await self.catalog.traffic(repo, commit, first, last)
            req, err, nbytes = stored.requests, stored.errors, stored.bytes
            for (r, cm, minute), (n, e, b) in self._traffic.items():
                if (r, cm) == (repo, commit) and (first is None or minute >= first) and (last is None or minute <= last):
                    req, err, nbytes = req + n, err + e, nbytes + b
        return Traffic(req, err, nbytes)

    async def _clients_in(self, repo: int, commit: str, since: float | None, until: float | None) -> set[str]:
        lo = -math.inf if since is None else since
        hi = math.inf if until is None else until
        async with self._lock:
            seen = await self.catalog.clients(repo, commit, since, until)
            seen |= {c for (r, cm, c), (first, last) in self._clients.items()
                     if (r, cm) == (repo, commit) and last > lo and first <= hi}
        return seen

    async def _builtin(self, repo: int, commit: str, name: str, since: float, until: float) -> tuple[float, int] | None:
        if name == "mirror_clients":
            clients = await self._clients_in(repo, commit, since, until)
            return (float(len(clients)), len(clients)) if clients else None
        traffic = await self._traffic_in(repo, commit, since, until)
        if not traffic.requests:
            return None
        value = {"mirror_requests": traffic.requests, "mirror_errors": traffic.errors,
                 "mirror_error_rate": traffic.errors / traffic.requests, "mirror_bytes": traffic.bytes}[name]
        return float(value), traffic.requests

    # --- reads ---------------------------------------------------------------------------

    async def aggregate(self, repo: int, commit: str, name: str, since: float, until: float) -> tuple[float, int] | None:
        """(value, n) of a metric for a version over (since, until], or None without
        data. A reported metric: the mean of its values and their count. A built-in: the
        figure over the window and the requests it comes from (clients: their count)."""
        check_name(name, builtin_ok=True)
        if name in BUILTINS:
            return await self._builtin(repo, commit, name, since, until)
        return await self.catalog.mean(repo, commit, name, since, until)

    async def summary(self, repo: int, commit: str) -> dict[str, Any]:
        """Every reported metric of the version (n, mean, stddev, min, max, last,
        first_at, last_at) and the built-ins over all time (the error rate is None
        without traffic)."""
        metrics = {
            s.name: {"n": s.n, "mean": s.mean, "stddev": s.stddev, "min": s.min, "max": s.max, "last": s.last,
                     "first_at": s.first_at, "last_at": s.last_at}
            for s in await self.catalog.summaries(repo, commit)
        }
        traffic = await self._traffic_in(repo, commit, None, None)
        clients = await self._clients_in(repo, commit, None, None)
        builtins = {"mirror_requests": traffic.requests, "mirror_errors": traffic.errors,
                    "mirror_error_rate": traffic.errors / traffic.requests if traffic.requests else None,
                    "mirror_bytes": traffic.bytes, "mirror_clients": len(clients)}
        return {"commit": commit, "metrics": metrics, "builtins": builtins}

    async def compare(self, repo: int, a_commit: str, b_commit: str, metric: str | None = None) -> dict[str, Any]:
        """Each metric reported for both versions (or just `metric`), side by side, with
        Welch's t (positive: A's mean is higher), its two-sided p-value and a verdict."""
        have_a = set(await self.catalog.names(repo, a_commit))
        have_b = set(await self.catalog.names(repo, b_commit))
        names = [check_name(metric)] if metric is not None else sorted(have_a & have_b)
        rows = []
        for name in names:
            a = await self.catalog.values(repo, a_commit, name)
            b = await self.catalog.values(repo, b_commit, name)
            rows.append(compare_values(name, a, b))
        out: dict[str, Any] = {"a": a_commit, "b": b_commit, "alpha": ALPHA, "metrics": rows}
        if metric is None:
            out["only_a"], out["only_b"] = sorted(have_a - have_b), sorted(have_b - have_a)
        return out


def _side(values: Sequence[float]) -> dict[str, Any]:
    return {"n": len(values), "mean": statistics.fmean(values) if values else None,
            "stddev": statistics.stdev(values) if len(values) >= 2 else None}


def compare_values(name: str, a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """One metric of two versions: both sides, Welch's t and p, which is better."""
    lower = lower_is_better(name)
    row: dict[str, Any] = {"metric": name, "a": _side(a), "b": _side(b), "better_is": "lower" if lower else "higher",
                           "t": None, "p": None, "df": None, "better": None, "reason": ""}
    short = [side for side, v in (("A", a), ("B", b)) if len(v) < 2]
    if short:
        row["reason"] = f"fewer than 2 values for {' and '.join(short)}"
        row["verdict"] = "not enough data"
        return row
    test = welch(a, b)
    row.update(t=test.t, p=test.p, df=test.df, reason=test.reason)
    if test.p is None or test.p >= ALPHA:
        row["verdict"] = "no significant difference"
        return row
    a_higher = row["a"]["mean"] > row["b"]["mean"]
    row["better"] = "a" if a_higher != lower else "b"
    row["verdict"] = f"{row['better'].upper()} is better ({'lower' if lower else 'higher'} is better)"
    return row
