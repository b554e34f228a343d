"""The node collector: metric families read at scrape time, from the node's live state
(fills, peers, the process's own file counters) and from the catalog figures
(obs/figures.py, refreshed just before each scrape, at most once per TTL).

    live      mirror_fills_in_flight, mirror_fills_limit, mirror_cache_hit_ratio,
              mirror_peer_up / _state / _latency_seconds / _received_bytes_total /
              _sent_bytes_total / _failures_total (label peer = its URL)
    catalog   mirror_store_* (files, logical, stored, unique and referenced raw bytes,
              chunks, used bytes and the watermarks), mirror_fetched_bytes_total{origin},
              mirror_served_bytes_total, mirror_audit_events_total{action,outcome}
              (lifecycle actions, sync runs, quarantines...), mirror_alias_* (canary
              weight, failed gate analyses, holding; changes by action), mirror_scans,
              mirror_quarantined_files

Catalog counters survive restarts; process counters (obs/metrics.py) do not.
"""

from __future__ import annotations

from typing import Iterator, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mirror.obs.figures import CatalogFigures
from mirror.obs.metrics import Metrics
from mirror.peers.membership import Peers

# Catalog counters (catalog/meta.py) that count bytes fetched, by origin name.
_FETCHED = {"upstream": "upstream_bytes", "peer": "peer_bytes"}
PEER_STATES = ("unknown", "up", "down", "untrusted", "refused")
CANARY_OUTCOMES = ("canary-gate-failed", "canary-promote", "canary-rollback")


class FillCount(Protocol):
    max_fills: int

    def in_flight(self) -> int: ...


class NodeCollector(Collector):
    def __init__(self, metrics: Metrics, figures: CatalogFigures, fetcher: FillCount, peers: Peers) -> None:
        self.metrics = metrics
        self.figures = figures
        self.fetcher = fetcher
        self.peers = peers

    async def refresh(self) -> None:
        await self.figures.refresh()

    def describe(self) -> list[Metric]:
        return []  # families vary with the state (peers, aliases); nothing to check at register

    def collect(self) -> Iterator[Metric]:
        yield from self._live()
        yield from self._peers()
        yield from self._store()
        yield from self._events()

    def _live(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("mirror_fills_in_flight", "Cache fills fetching now", value=self.fetcher.in_flight())
        yield GaugeMetricFamily("mirror_fills_limit", "Fills allowed at once ([server] max_cold_fetches); "
                                "more are shed with 429", value=self.fetcher.max_fills)
        opened = self.metrics.file_requests
        total = sum(n for _k, n in opened.items())
        yield GaugeMetricFamily("mirror_cache_hit_ratio", "Share of file bodies served from the store since the "
                                "process started (rate of mirror_file_requests_total for a window)",
                                value=opened.get(("store",)) / total if total else 0.0)

    def _peers(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("mirror_peer_up", "1 when the peer is used (state up)", labels=["peer"])
        state = GaugeMetricFamily("mirror_peer_state", "The peer's state (one series per state, 1 for the current)",
                                  labels=["peer", "state"])
        latency = GaugeMetricFamily("mirror_peer_latency_seconds", "Round trip of the last health check",
                                    labels=["peer"])
        received = CounterMetricFamily("mirror_peer_received_bytes", "Bytes received from the peer", labels=["peer"])
        sent = CounterMetricFamily("mirror_peer_sent_bytes", "Bytes served to the peer", labels=["peer"])
        failures = CounterMetricFamily("mirror_peer_failures", "Failed requests to the peer", labels=["peer"])
        for p in self.peers.all():
            up.add_metric([p.url], 1.0 if p.state == "up" else 0.0)
            for s in PEER_STATES:
                state.add_metric([p.url, s], 1.0 if p.state == s else 0.0)
            if p.latency_ms is not None:
                latency.add_metric([p.url], p.latency_ms / 1000)
            received.add_metric([p.url], p.bytes_in)
            sent.add_metric([p.url], p.bytes_out)
            failures.add_metric([p.url], p.failures)
        yield from (up, state, latency, received, sent, failures)

    def _store(self) -> Iterator[Metric]:
        f = self.figures.figures
        if f.store is not None:
            st = f.store
            for name, text, value in (
                ("files", "File contents stored (manifests)", st.files),
                ("logical_bytes", "Bytes of the stored files as clients see them", st.logical_bytes),
                ("referenced_raw_bytes", "Raw bytes the stored files reference (dedup counts each use)",
                 st.referenced_raw_bytes),
                ("unique_raw_bytes", "Raw bytes of the distinct chunks (after dedup)", st.unique_raw_bytes),
                ("stored_bytes", "Bytes the chunks take on disk (after dedup and compression)", st.stored_bytes),
                ("chunks", "Distinct chunks stored", st.chunks),
            ):
                yield GaugeMetricFamily(f"mirror_store_{name}", text, value=value)
        if f.usage is not None:
            used, high, low = f.usage
            yield GaugeMetricFamily("mirror_store_used_bytes", "Bytes used as eviction measures them (the volume for "
                                    "a % watermark, the store for a size)", value=used)
            yield GaugeMetricFamily("mirror_store_high_watermark_bytes", "Eviction starts above this", value=high)
            yield GaugeMetricFamily("mirror_store_low_watermark_bytes", "Eviction stops below this", value=low)
        fetched = CounterMetricFamily("mirror_fetched_bytes", "Bytes fetched into cache fills, by origin",
                                      labels=["origin"])
        for origin, counter in _FETCHED.items():
            fetched.add_metric([origin], f.counters.get(counter, 0))
        yield fetched
        yield CounterMetricFamily("mirror_served_bytes", "File body bytes served to clients (all sources)",
                                  value=f.counters.get("served_bytes", 0))

    def _events(self) -> Iterator[Metric]:
        f = self.figures.figures
        audit = CounterMetricFamily("mirror_audit_events", "Audit records by action and outcome: lifecycle actions "
                                    "(lifecycle.*), sync runs (sync.*), quarantines, refusals...",
                                    labels=["action", "outcome"])
        for (action, outcome), n in sorted(f.audit.items()):
            audit.add_metric([action, outcome], n)
        yield audit
        weight = GaugeMetricFamily("mirror_alias_canary_weight", "Percent of clients an alias sends to its canary "
                                   "(0 without one)", labels=["repo", "alias"])
        canary = GaugeMetricFamily("mirror_alias_canary", "1 while the alias runs a canary", labels=["repo", "alias"])
        failing = GaugeMetricFamily("mirror_alias_canary_failures", "Failed gate analyses in a row",
                                    labels=["repo", "alias"])
        holding = GaugeMetricFamily("mirror_alias_canary_holding", "1 while the canary is held (missing metrics)",
                                    labels=["repo", "alias"])
        for a in f.aliases:
            weight.add_metric([a.repo, a.alias], a.weight)
            canary.add_metric([a.repo, a.alias], 1.0 if a.canary else 0.0)
            failing.add_metric([a.repo, a.alias], a.failures)
            holding.add_metric([a.repo, a.alias], 1.0 if a.holding else 0.0)
        yield from (weight, canary, failing, holding)
        changes = CounterMetricFamily("mirror_alias_changes", "Alias changes by action (set, rollback, canary-start, "
                                      "canary-step, canary-gate-failed, canary-hold, canary-promote, canary-rollback...)",
                                      labels=["repo", "alias", "action"])
        # Canary outcomes of every alias exist from zero, so that the first one is an
        # increase Prometheus sees (a series born at 1 has no increase to alert on).
        counts = {(a.repo, a.alias, action): 0 for a in f.aliases for action in CANARY_OUTCOMES}
        counts.update(f.alias_events)
        for (repo, alias, action), n in sorted(counts.items()):
            changes.add_metric([repo, alias, action], n)
        yield changes
        scans = GaugeMetricFamily("mirror_scans", "Scanned file contents by verdict (clean, unsafe, error)",
                                  labels=["verdict"])
        by_verdict: dict[str, int] = {"clean": 0, "unsafe": 0, "error": 0}
        for (verdict, _released), n in f.scans.items():
            by_verdict[verdict] = by_verdict.get(verdict, 0) + n
        for verdict, n in by_verdict.items():
            scans.add_metric([verdict], n)
        yield scans
        yield GaugeMetricFamily("mirror_quarantined_files", "File contents refused until an admin releases them",
                                value=sum(n for (verdict, released), n in f.scans.items() if verdict != "clean" and not released))
