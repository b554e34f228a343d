"""Traffic history: bytes by source over the last hours, for the dashboard's chart.

The catalog keeps cumulative byte counters (`served_bytes` to clients, `upstream_bytes`
and `peer_bytes` written by fills: catalog/meta.py, surviving restarts) and the peer
table counts the bytes this node sent to each peer; none of them keeps a time series.
`TrafficHistory` samples those totals every `interval` seconds (one a minute in the
daemon) into a bounded ring of `keep` samples (24 hours), in memory only: a restart
starts a new history, while the totals themselves stay in the catalog.

A chart is made of differences between consecutive samples, put in the time bucket of
the later one; the page adds a live reading, so the last bucket runs up to now. A total
that went down (a peer left the table) counts as nothing, never as negative traffic.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from itertools import pairwise

from mirror.catalog.meta import MetaCatalog
from mirror.clock import Clock
from mirror.errors import MirrorError
from mirror.peers.membership import Peers

log = logging.getLogger("mirror.ui")

# (key, what the chart's legend says); totals are kept in this order.
SERIES: tuple[tuple[str, str], ...] = (
    ("served", "served to clients"),
    ("upstream", "fetched from upstream"),
    ("peer_in", "fetched from peers"),
    ("peer_out", "sent to peers"),
)
_COUNTERS = ("served_bytes", "upstream_bytes", "peer_bytes")

INTERVAL = 60.0
KEEP = 24 * 60


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # wall clock
    totals: tuple[int, ...]  # cumulative bytes, in SERIES order


@dataclass(frozen=True, slots=True)
class Bucket:
    start: float
    end: float
    bytes: tuple[int, ...]  # bytes moved in [start, end), in SERIES order


class TrafficHistory:
    def __init__(self, counters: MetaCatalog, peers: Peers, clock: Clock, *, interval: float = INTERVAL,
                 keep: int = KEEP) -> None:
        if interval <= 0 or keep < 2:
            raise ValueError("a history needs a positive interval and room for two samples")
        self.counters = counters
        self.peers = peers
        self.clock = clock
        self.interval = interval
        self._ring: deque[Sample] = deque(maxlen=keep)

    async def read(self) -> Sample:
        """The totals now (not kept)."""
        counters = await self.counters.counters()
        sent = sum(p.bytes_out for p in self.peers.all())
        return Sample(self.clock.now(), (*(int(counters.get(name, 0)) for name in _COUNTERS), sent))

    async def sample(self) -> Sample:
        """Read the totals and keep them (the oldest sample goes when the ring is full)."""
        s = await self.read()
        self._ring.append(s)
        return s

    def samples(self) -> list[Sample]:
        return list(self._ring)

    async def forever(self) -> None:
        """The daemon's sampler: one sample now, then one every `interval` seconds. A
        catalog that cannot be read skips that sample (one log line per episode)."""
        failing = False
        while True:
            try:
                await self.sample()
                failing = False
            except MirrorError as exc:
                if not failing:
                    log.warning("traffic history: cannot read the counters (%s); will retry", exc.message)
                failing = True
            await asyncio.sleep(self.interval)

    def buckets(self, live: Sample, seconds: float, count: int) -> list[Bucket]:
        """`count` equal buckets covering the `seconds` up to `live.at` (a reading taken
        now, see `read`), each with the bytes of every series moved in it."""
        if seconds <= 0 or count < 1:
            raise ValueError("buckets need a positive span and count")
        end = live.at
        start = end - seconds
        width = seconds / count
        sums = [[0] * len(SERIES) for _ in range(count)]
        points = [s for s in self._ring if s.at <= end]
        if not points or live.at > points[-1].at:
            points.append(live)
        for prev, cur in pairwise(points):
            if cur.at <= start:
                continue
            i = min(count - 1, int((cur.at - start) / width))
            for j, (a, b) in enumerate(zip(prev.totals, cur.totals)):
                sums[i][j] += max(0, b - a)
        return [Bucket(start + i * width, start + (i + 1) * width, tuple(sums[i])) for i in range(count)]

    def covers(self) -> float:
        """Seconds of history held (0 until two samples exist)."""
        return self._ring[-1].at - self._ring[0].at if len(self._ring) >= 2 else 0.0
