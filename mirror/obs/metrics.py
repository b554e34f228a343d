"""Metrics: a node's Prometheus registry and the figures its process counts.

One `Metrics` per node, on its own `CollectorRegistry` (never prometheus_client's global
one: the tests run several nodes in one process). It holds:

- the process's own counts (obs/counts.py: cheap enough for the request path), fed by
  the wrappers the composition root puts around components (obs/wrappers.py: file
  sources, chunk reads, the upstream origin and session) and by the HTTP edge
  (http/metrics.py: requests, latency); `collect` exposes them;
- other collectors read at scrape time (`watch`: obs/collectors.py), whose figures that
  describe the store come from the catalog and so survive restarts;
- `render(accept)`: the exposition, by prometheus_client, in the format the scraper asks
  for (Prometheus text, or OpenMetrics), with its process metrics (RSS, CPU, files).

Process counts start at zero with the process; Prometheus' `rate()` and `increase()`
handle the reset. Labels are bounded: route groups, status codes, sources, checks and
outcomes are fixed sets in the code; repos appear only on aliases (few, chosen by an
operator), peers only as configured or discovered nodes.
"""

from __future__ import annotations

from typing import Iterator, Protocol

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from mirror import __version__
from mirror.obs.counts import Buckets, Reads, Tally

# Seconds. HTTP spans a cached 4 KiB file (~1 ms) to a multi-GiB download (minutes).
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
# One chunk (256 KiB - 4 MiB) read, decoded and verified: about 1 ms when healthy; the
# alert threshold (50 ms) is a bucket boundary.
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
UPSTREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# What the labels may be; each series exists from zero.
SOURCES = ("store", "fill", "direct")
UPSTREAM_OUTCOMES = ("2xx", "3xx", "4xx", "429", "5xx", "unreachable", "error")


class Watched(Protocol):
    """A collector whose figures are gathered asynchronously before each scrape."""

    async def refresh(self) -> None: ...


class Metrics(Collector):
    def __init__(self) -> None:
        # The HTTP edge (http/metrics.py): requests by (group, code), latency by group.
        self.requests = Tally()
        self.first_byte: dict[str, Buckets] = {}
        self.duration: dict[str, Buckets] = {}
        # File bodies by source (obs/wrappers.py MeteredFiles): opened, bytes handed out.
        self.file_requests = Tally([(s,) for s in SOURCES])
        self.file_bytes = Tally([(s,) for s in SOURCES])
        # Whole-file hash checks (VerdictOrigin) and chunk reads (TimedChunks).
        self.file_checks = Tally([("ok",), ("failed",)])
        self.reads = Reads(STORE_BUCKETS)
        # The upstream Hub (upstream_trace).
        self.upstream = Tally([(o,) for o in UPSTREAM_OUTCOMES])
        self.upstream_latency = Buckets(UPSTREAM_BUCKETS)
        self.registry = CollectorRegistry()
        self.registry.register(self)
        ProcessCollector(registry=self.registry)
        self._watched: list[Watched] = []

    def watch(self, collector: Collector) -> None:
        """Register a collector read at scrape time; one with a `refresh` coroutine is
        refreshed before each scrape."""
        self.registry.register(collector)
        if hasattr(collector, "refresh"):
            self._watched.append(collector)  # type: ignore[arg-type]

    def http_done(self, group: str, status: int, first_byte: float, total: float) -> None:
        """One answered request: its route group, status, and seconds to headers and to the end."""
        self.requests.add((group, str(status)))
        fb = self.first_byte.get(group)
        if fb is None:
            fb = self.first_byte[group] = Buckets(HTTP_BUCKETS)
            self.duration[group] = Buckets(HTTP_BUCKETS)
        fb.observe(first_byte)
        self.duration[group].observe(total)

    async def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition and its content type, for a scraper that sent `accept`."""
        for w in self._watched:
            await w.refresh()
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("mirror_build_info", "The running build", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield _counter("mirror_http_requests", "Requests answered, by route group and status code",
                       ["group", "code"], self.requests)
        yield _histograms("mirror_http_request_duration_seconds", "Whole response time, by route group", self.duration)
        yield _histograms("mirror_http_first_byte_seconds", "Time until the response headers were sent (its first "
                          "byte), by route group", self.first_byte)
        yield _counter("mirror_file_requests", "File bodies opened, by source: store (a hit), fill (a miss being "
                       "cached), direct (streamed uncached)", ["source"], self.file_requests)
        yield _counter("mirror_file_sent_bytes", "File body bytes handed to clients, by source", ["source"],
                       self.file_bytes)
        buckets, seconds, nbytes, checks, failures = self.reads.snapshot()
        checked = CounterMetricFamily("mirror_integrity_checks", "Integrity checks: the whole-file sha256/sha1 of "
                                      "fills and direct streams, the blake3 of chunks read from the store",
                                      labels=["check"])
        failed = CounterMetricFamily("mirror_integrity_failures", "Integrity checks that failed", labels=["check"])
        ok, bad = self.file_checks.get(("ok",)), self.file_checks.get(("failed",))
        checked.add_metric(["file_hash"], ok + bad)
        failed.add_metric(["file_hash"], bad)
        checked.add_metric(["chunk_blake3"], checks)
        failed.add_metric(["chunk_blake3"], failures)
        yield from (checked, failed)
        reads = HistogramMetricFamily("mirror_store_read_seconds", "One chunk read from the store, decoded and "
                                      "verified")
        reads.add_metric([], buckets, seconds)
        yield reads
        yield CounterMetricFamily("mirror_store_read_bytes", "Raw bytes read from the chunk store", value=nbytes)
        yield _counter("mirror_upstream_requests", "Requests sent upstream, by outcome: status class, 429, unreachable "
                       "(no connection) or error", ["outcome"], self.upstream)
        up = HistogramMetricFamily("mirror_upstream_request_seconds", "Upstream time to response headers")
        up.add_metric([], *self.upstream_latency.cumulative())
        yield up


def _counter(name: str, text: str, labels: list[str], tally: Tally) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, text, labels=labels)
    for key, n in tally.items():
        fam.add_metric(list(key), n)
    return fam


def _histograms(name: str, text: str, by_group: dict[str, Buckets]) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, text, labels=["group"])
    for group, b in sorted(by_group.items()):
        fam.add_metric([group], *b.cumulative())
    return fam
