"""The dashboard's figures: which numbers each chart of a page draws (ui/charts.py draws
them). Templates call these by name (ui/render.py registers them)."""

from __future__ import annotations

import time
from typing import Any, Sequence

from markupsafe import Markup

from mirror.admin.inspect import RepoSummary
from mirror.catalog.channels import AliasRow
from mirror.ui.charts import Mark, Part, Series, legend, line_chart, stacked_bar
from mirror.ui.history import Bucket
from mirror.units import human_bytes

_SERIES_CSS = {"served": "c-served", "upstream": "c-upstream", "peer_in": "c-peer-in", "peer_out": "c-peer-out"}


def savings_parts(stats: dict[str, Any]) -> list[Part]:
    """Logical bytes as stored + saved by compression + saved by dedup."""
    logical, unique, stored = stats["logical_bytes"], stats["unique_raw_bytes"], stats["stored_bytes"]
    return [
        Part("stored on disk", stored, "c-stored", "stored"),
        Part("saved by compression", max(0, unique - stored), "c-compression", "compression"),
        Part("saved by dedup", max(0, logical - unique), "c-dedup", "dedup"),
    ]


def savings_chart(stats: dict[str, Any]) -> Markup:
    parts = savings_parts(stats)
    bar = stacked_bar(parts, total=stats["logical_bytes"], height=28, fmt=human_bytes, chart_id="savings-chart",
                      label="logical bytes: stored, saved by compression, saved by dedup")
    return Markup(bar + legend(parts, human_bytes))


def repo_bar(repo: RepoSummary) -> Markup:
    """A repo's stored bytes against its logical bytes (the rest was saved)."""
    saved = max(0, repo.logical_bytes - repo.stored_bytes)
    return stacked_bar([Part("stored", repo.stored_bytes, "c-stored"), Part("saved", saved, "c-saved")],
                       total=max(repo.logical_bytes, repo.stored_bytes), height=12, fmt=human_bytes,
                       label=f"{repo.key}: stored against logical bytes")


def traffic_chart(buckets: Sequence[Bucket], series: Sequence[tuple[str, str]]) -> Markup:
    lines = [Series(key, label, [b.bytes[i] for b in buckets], _SERIES_CSS.get(key, "c-served"))
             for i, (key, label) in enumerate(series)]
    ticks = [clock(b.start) for b in buckets[:: max(1, len(buckets) // 4)]]
    if buckets:
        ticks.append(clock(buckets[-1].end))
    return line_chart(lines, ticks, fmt=human_bytes, chart_id="traffic-chart", label="bytes by source over time")


def canary_bar(row: AliasRow) -> Markup:
    w = row.weight if row.canary is not None else 0.0
    return stacked_bar([Part(f"stable {row.commit[:12]}", 100.0 - w, "c-stable", "stable"),
                        Part(f"canary {(row.canary or '')[:12]}", w, "c-canary", "canary")],
                       total=100.0, height=14, fmt=lambda v: f"{v:g}%", label=f"alias {row.name}: canary share")


def store_gauge(used: int, high: int, low: int) -> Markup:
    return stacked_bar([Part("used", used, "c-stored", "used")], total=max(used, high) * 1.05 or 1,
                       marks=[Mark("low watermark", low), Mark("high watermark", high)], height=20, fmt=human_bytes,
                       chart_id="store-gauge", label="store usage against the watermarks")


def clock(t: float) -> str:
    """'14:05 UTC': chart ticks (UTC, so every reader sees the same times)."""
    return time.strftime("%H:%M", time.gmtime(t)) + " UTC"
