"""Catalog figures: what the catalog says about the store, read for /metrics at most
once per `TTL` seconds.

Counters that describe the store (bytes fetched and served, audit events such as
lifecycle actions and sync runs, alias changes such as canary rollbacks) are read from
the catalog, so they survive restarts and include what CLI commands did beside the
daemon. A scrape never costs more than one refresh per `TTL`: scrapes in between, and
concurrent ones, get the cached figures. The append-only tables are tallied
incrementally (catalog/tallies.py): each refresh reads only the rows added since the
previous one.

A refresh that fails (a locked or full disk) keeps the previous figures and is logged
once per episode; the scrape goes on.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from mirror.catalog import Catalog, StoreStats
from mirror.catalog.tallies import AliasState
from mirror.clock import Clock
from mirror.errors import MirrorError
from mirror.lifecycle.evict import Evictor

log = logging.getLogger("mirror.metrics")

TTL = 5.0


@dataclass
class Figures:
    store: StoreStats | None = None
    counters: dict[str, int] = field(default_factory=dict)  # catalog counters (meta.py), pending included
    audit: dict[tuple[str, str], int] = field(default_factory=dict)  # (action, outcome) -> records
    alias_events: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (repo, alias, action) -> changes
    aliases: list[AliasState] = field(default_factory=list)
    scans: dict[tuple[str, bool], int] = field(default_factory=dict)  # (verdict, released) -> contents
    usage: tuple[int, int, int] | None = None  # (used, high, low) bytes, as eviction measures them
    at: float = 0.0  # monotonic time of the last good refresh (0: never)


class CatalogFigures:
    def __init__(self, catalog: Catalog, evictor: Evictor, clock: Clock, ttl: float = TTL) -> None:
        self.catalog = catalog
        self.evictor = evictor
        self.clock = clock
        self.ttl = ttl
        self.figures = Figures()
        self._audit_seq = 0
        self._alias_id = 0
        self._lock = asyncio.Lock()
        self._failing = False

    async def refresh(self) -> None:
        """Read the catalog again unless the figures are younger than the TTL."""
        if self._fresh():
            return
        async with self._lock:
            if self._fresh():  # another scrape refreshed them while this one waited
                return
            try:
                await self._read()
                if self._failing:
                    log.info("metrics: catalog figures are read again")
                self._failing = False
            except MirrorError as exc:
                if not self._failing:
                    log.warning("metrics: cannot read catalog figures (%s); serving the previous ones", exc.message)
                self._failing = True

    def _fresh(self) -> bool:
        return self.figures.at > 0 and self.clock.monotonic() - self.figures.at < self.ttl

    async def _read(self) -> None:
        cat = self.catalog
        f = self.figures
        store = await cat.content.stats()
        counters = await cat.meta.counters()
        audit, audit_seq = await cat.tallies.audit_counts(self._audit_seq)
        events, alias_id = await cat.tallies.alias_event_counts(self._alias_id)
        aliases = await cat.tallies.aliases()
        scans = await cat.tallies.scan_counts()
        try:
            usage: tuple[int, int, int] | None = await self.evictor.usage(self.evictor.policy)
        except MirrorError:
            usage = None  # a percentage watermark on a store without a local volume
        # Only now, with every read done, are the increments applied (a failed refresh
        # must not count the same rows twice at the next one).
        for k, n in audit.items():
            f.audit[k] = f.audit.get(k, 0) + n
        for ek, n in events.items():
            f.alias_events[ek] = f.alias_events.get(ek, 0) + n
        self._audit_seq, self._alias_id = audit_seq, alias_id
        f.store, f.counters, f.aliases, f.scans, f.usage = store, counters, aliases, scans, usage
        f.at = self.clock.monotonic()
