"""Counts: the accumulators the hot paths bump, read at scrape time.

Why not prometheus_client's `Counter` and `Histogram` on the request path: every call
goes through a few layers and takes a lock per value (an observation takes two).
Measured on this 2-core machine, about 3 us per increment and 3-9 us per observation:
some 30 us per warm small-file request in all, 5% of the request, where the
observability budget is 3% (scripts/bench_observability.py). Here an event is a few
additions under at most one lock. Exposition stays prometheus_client's: obs/metrics.py
turns these into its metric families at scrape time.

`Buckets` is a histogram's state (cumulative buckets are built only when scraped) and
`Tally` counts by label values; neither locks, so both are for the event loop (HTTP,
file sources, upstream traces, scrapes). `Reads` gathers what worker threads report
(chunk reads) under one lock.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Sequence

from prometheus_client.utils import floatToGoString


class Buckets:
    """Observations counted into fixed upper bounds (`le`), with their count and sum.
    Not thread-safe: the event loop's, or guarded by its owner's lock (`Reads`)."""

    __slots__ = ("bounds", "_counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self._counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value: `le` is inclusive
        self.sum += value

    def cumulative(self) -> tuple[list[tuple[str, float]], float]:
        """([(le, observations <= le)...] ending with +Inf, sum), as exposed."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self._counts, strict=True):
            running += n
            out.append((floatToGoString(bound), float(running)))
        return out, self.sum


class Reads:
    """Chunk reads reported by worker threads: seconds each, raw bytes, blake3 checks
    and failures, under one lock."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self._seconds = Buckets(bounds)
        self.bytes = 0
        self.checks = 0
        self.failures = 0
        self._lock = threading.Lock()

    def done(self, seconds: float, nbytes: int, verified: bool | None) -> None:
        """One read: `verified` True (checked and good), False (checked and corrupt),
        None (not checked)."""
        with self._lock:
            self._seconds.observe(seconds)
            self.bytes += nbytes
            if verified is not None:
                self.checks += 1
                self.failures += not verified

    def snapshot(self) -> tuple[list[tuple[str, float]], float, int, int, int]:
        """(cumulative buckets, sum of seconds, bytes, checks, failures)."""
        with self._lock:
            buckets, total = self._seconds.cumulative()
            return buckets, total, self.bytes, self.checks, self.failures


class Tally:
    """Counts by label values; event loop only (no lock)."""

    __slots__ = ("counts",)

    def __init__(self, keys: Sequence[tuple[str, ...]] = ()) -> None:
        self.counts: dict[tuple[str, ...], float] = {k: 0.0 for k in keys}  # series that exist from zero

    def add(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        self.counts[key] = self.counts.get(key, 0.0) + amount

    def get(self, key: tuple[str, ...]) -> float:
        return self.counts.get(key, 0.0)

    def items(self) -> list[tuple[tuple[str, ...], float]]:
        return sorted(self.counts.items())
