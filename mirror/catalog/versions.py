"""Catalog facts of per-version metrics (tables of migration 9, schema_channels.py):
values reported for a (repo, commit) (`version_metrics`), what the mirror served of it in
minute buckets (`version_traffic`), and the distinct clients that fetched it
(`version_clients`, by a hash of the client key, never the key itself).

Writes come in batches: a report of many values is one transaction, and the traffic
counted in memory between two flushes (channels/metrics.py) is one upsert per bucket
and per client. Time windows are `(since, until]` for reported values; a minute bucket
counts when its minute overlaps the window; a client counts when the span between its
first and last request overlaps it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from mirror.catalog.db import Database

# The most values one query returns (a compare of two versions reads two such lists).
MAX_VALUES = 100_000


@dataclass(frozen=True, slots=True)
class Report:
    """One reported value of a named metric for a version."""

    repo: int
    commit: str
    name: str
    value: float
    client: str = ""
    at: float = 0.0
    reporter: str = ""


@dataclass(frozen=True, slots=True)
class MetricSummary:
    name: str
    n: int
    mean: float
    stddev: float | None  # sample standard deviation; None below two values
    min: float
    max: float
    last: float  # the value reported last (by its time)
    first_at: float
    last_at: float


@dataclass(frozen=True, slots=True)
class Traffic:
    requests: int = 0
    errors: int = 0
    bytes: int = 0


# (repo, commit, minute) -> (requests, errors, bytes) and (repo, commit, client) -> (first_at, last_at)
TrafficDeltas = dict[tuple[int, str, int], list[int]]
ClientSightings = dict[tuple[int, str, str], list[float]]


class VersionCatalog:
    def __init__(self, db: Database, now: Callable[[], float]) -> None:
        self.db = db
        self._now = now

    # --- reported values -----------------------------------------------------------------

    async def add_reports(self, reports: Sequence[Report]) -> None:
        """All of them or none (one transaction)."""
        if not reports:
            return
        async with self.db.transaction() as c:
            await c.executemany(
                "INSERT INTO version_metrics(repo, commit_sha, name, value, client, at, reporter) VALUES (?,?,?,?,?,?,?)",
                [(r.repo, r.commit, r.name, r.value, r.client, r.at, r.reporter) for r in reports],
            )

    async def values(self, repo: int, commit: str, name: str, since: float | None = None, until: float | None = None,
                     limit: int = MAX_VALUES) -> list[float]:
        """Values of `name` reported with `at` in (since, until] (no bound when None),
        the newest `limit` of them, oldest first."""
        rows = await self.db.fetchall(
            "SELECT value FROM (SELECT value, at, id FROM version_metrics WHERE repo = ? AND commit_sha = ? AND name = ? "
            "AND at > ? AND at <= ? ORDER BY at DESC, id DESC LIMIT ?) ORDER BY at, id",
            (repo, commit, name, -math.inf if since is None else since, math.inf if until is None else until, limit),
        )
        return [float(r["value"]) for r in rows]

    async def mean(self, repo: int, commit: str, name: str, since: float, until: float) -> tuple[float, int] | None:
        """(mean, n) of the values of `name` reported in (since, until]; None without any."""
        row = await self.db.fetchone(
            "SELECT AVG(value) AS mean, COUNT(*) AS n FROM version_metrics "
            "WHERE repo = ? AND commit_sha = ? AND name = ? AND at > ? AND at <= ?",
            (repo, commit, name, since, until),
        )
        if row is None or not row["n"]:
            return None
        return float(row["mean"]), int(row["n"])

    async def names(self, repo: int, commit: str) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT DISTINCT name FROM version_metrics WHERE repo = ? AND commit_sha = ? ORDER BY name", (repo, commit))
        return [r["name"] for r in rows]

    async def summaries(self, repo: int, commit: str) -> list[MetricSummary]:
        """One line per metric name reported for the version, by name."""
        rows = await self.db.fetchall(
            "WITH m AS (SELECT name, COUNT(*) AS n, AVG(value) AS mean, MIN(value) AS lo, MAX(value) AS hi, "
            "           MIN(at) AS first_at, MAX(at) AS last_at FROM version_metrics "
            "           WHERE repo = ?1 AND commit_sha = ?2 GROUP BY name) "
            "SELECT m.*, "
            " (SELECT SUM((v.value - m.mean) * (v.value - m.mean)) FROM version_metrics v "
            "  WHERE v.repo = ?1 AND v.commit_sha = ?2 AND v.name = m.name) AS ss, "
            " (SELECT v.value FROM version_metrics v WHERE v.repo = ?1 AND v.commit_sha = ?2 AND v.name = m.name "
            "  ORDER BY v.at DESC, v.id DESC LIMIT 1) AS last "
            "FROM m ORDER BY m.name",
            (repo, commit),
        )
        return [
            MetricSummary(r["name"], int(r["n"]), float(r["mean"]),
                          math.sqrt(max(0.0, r["ss"]) / (r["n"] - 1)) if r["n"] >= 2 else None,
                          float(r["lo"]), float(r["hi"]), float(r["last"]), float(r["first_at"]), float(r["last_at"]))
            for r in rows
        ]

    # --- what the mirror served ------------------------------------------------------------

    async def add_traffic(self, traffic: TrafficDeltas, clients: ClientSightings) -> None:
        """Add counted traffic to its minute buckets and record client sightings, in one
        transaction."""
        if not traffic and not clients:
            return
        async with self.db.transaction() as c:
            await c.executemany(
                "INSERT INTO version_traffic(repo, commit_sha, minute, requests, errors, bytes) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(repo, commit_sha, minute) DO UPDATE SET requests = requests + excluded.requests, "
                "errors = errors + excluded.errors, bytes = bytes + excluded.bytes",
                [(repo, commit, minute, *counts) for (repo, commit, minute), counts in traffic.items()],
            )
            await c.executemany(
                "INSERT INTO version_clients(repo, commit_sha, client, first_at, last_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT(repo, commit_sha, client) DO UPDATE SET first_at = MIN(first_at, excluded.first_at), "
                "last_at = MAX(last_at, excluded.last_at)",
                [(repo, commit, client, first, last) for (repo, commit, client), (first, last) in clients.items()],
            )

    async def traffic(self, repo: int, commit: str, first_minute: int | None = None,
                      last_minute: int | None = None) -> Traffic:
        """Sums over the buckets first_minute..last_minute (inclusive; all when None)."""
        row = await self.db.fetchone(
            "SELECT COALESCE(SUM(requests), 0) AS r, COALESCE(SUM(errors), 0) AS e, COALESCE(SUM(bytes), 0) AS b "
            "FROM version_traffic WHERE repo = ? AND commit_sha = ? AND minute >= ? AND minute <= ?",
            (repo, commit, -(1 << 62) if first_minute is None else first_minute,
             1 << 62 if last_minute is None else last_minute),
        )
        assert row is not None
        return Traffic(int(row["r"]), int(row["e"]), int(row["b"]))

    async def clients(self, repo: int, commit: str, since: float | None = None, until: float | None = None) -> set[str]:
        """The client hashes seen between since and until (all when None)."""
        rows = await self.db.fetchall(
            "SELECT client FROM version_clients WHERE repo = ? AND commit_sha = ? AND last_at > ? AND first_at <= ?",
            (repo, commit, -math.inf if since is None else since, math.inf if until is None else until),
        )
        return {r["client"] for r in rows}
