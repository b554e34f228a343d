"""Eviction: keep the store under its disk budget by dropping whole revisions.

When usage passes `high_watermark`, unpinned revisions are dropped least recently used
first until the bytes they free (chunks no kept revision needs any more, counted once)
bring usage to `low_watermark`. A watermark is a share of the data volume (`90%`, via
statvfs) or an absolute size of the store (`500G`, hot frames plus packs). A revision
used within `gc_grace` is never dropped (a reader in another process may be streaming
it). A store in a bucket (`[store] backend = "s3"`) has no volume for a share to be
of: with percentage watermarks nothing is evicted and the report says why (its local
copies are bounded by `[store] cache_size`); sizes bound what the node keeps there. Dropping forgets the listing and access rows and is audited (`lifecycle.evict`, by
the caller's `actor`: 'lifecycle' for the daemon's rounds); the bytes go at the next GC.
A later request simply fetches the file again.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from mirror.audit.actor import LIFECYCLE
from mirror.audit.log import AuditLog
from mirror.catalog import Catalog
from mirror.clock import Clock
from mirror.errors import StorageError
from mirror.flock import FileLock
from mirror.lifecycle.policy import Policy, Watermark, flush_access, load_graph, repo_names
from mirror.store.chunkstore import ChunkStore

log = logging.getLogger("mirror.lifecycle")

_BUCKET_PERCENT = ("nothing to evict by percentage watermarks: the store is a bucket, not a local volume, and its "
                   "local copies are bounded by [store] cache_size; give sizes (e.g. \"500G\") to bound what this "
                   "node keeps in the bucket")


@dataclass
class EvictReport:
    used: int = 0
    high: int = 0
    low: int = 0
    evicted: list[str] = field(default_factory=list)
    freed_estimate: int = 0
    note: str = ""  # why nothing was considered, when nothing could be


class Evictor:
    """Eviction under the watermarks (module docstring: the rules)."""

    def __init__(self, catalog: Catalog, store: ChunkStore, clock: Clock, policy: Policy, lock: FileLock,
                 audit: AuditLog) -> None:
        self.catalog = catalog
        self.audit = audit
        self.store = store
        self.clock = clock
        self.policy = policy
        self.lock = lock

    async def usage(self, policy: Policy) -> tuple[int, int, int]:
        """(used, high, low) bytes, both marks in the same measure."""
        if policy.high.percent is not None or policy.low.percent is not None:
            cap = self.store.capacity()
            if cap is None:
                raise StorageError("a percentage watermark needs a chunk store on a local volume; give a size")
            total, free = cap
            used = total - free

            def mark(w: Watermark) -> int:
                return int(w.percent * total) if w.percent is not None else (w.size or 0)

            return used, mark(policy.high), mark(policy.low)
        return await self.catalog.lifecycle.stored_bytes(), policy.high.size or 0, policy.low.size or 0

    async def evict(self, *, policy: Policy | None = None, dry_run: bool = False, actor: str = LIFECYCLE) -> EvictReport:
        policy = policy or self.policy
        with self.lock.held():
            return await self._evict(policy, dry_run, actor)

    async def _evict(self, policy: Policy, dry_run: bool, actor: str) -> EvictReport:
        if self.store.shared and self.store.capacity() is None and (policy.high.percent is not None
                                                                     or policy.low.percent is not None):
            return EvictReport(note=_BUCKET_PERCENT)
        await flush_access(self.catalog)
        used, high, low = await self.usage(policy)
        rep = EvictReport(used, high, low)
        if used <= high:
            return rep
        lc = self.catalog.lifecycle
        graph = await load_graph(self.catalog)
        rows = await lc.chunk_rows()
        archived = await lc.archived()

        def size(cid: str) -> int:
            loc = archived.get(cid)
            return loc.stored_len if loc is not None else rows.get(cid, (0, 0, 0))[1]

        # Reference counts: manifests by revision, chunks by live manifest.
        man_refs: Counter[str] = Counter(i for ids in graph.rev_manifests.values() for i in ids)
        chunk_refs: Counter[str] = Counter(c for i in man_refs for c in set(graph.manifest_chunks.get(i, ())))
        now = self.clock.now()
        candidates = sorted(
            (r for r in graph.revisions.values() if not r.pinned and now - r.last_used >= policy.gc_grace),
            key=lambda r: (r.last_used, r.repo, r.sha),
        )
        need = used - low
        names: dict[int, str] | None = None
        for r in candidates:
            if rep.freed_estimate >= need:
                break
            freed = 0
            for ident in graph.rev_manifests.get((r.repo, r.sha), ()):
                man_refs[ident] -= 1
                if man_refs[ident] == 0:
                    for cid in set(graph.manifest_chunks.get(ident, ())):
                        chunk_refs[cid] -= 1
                        if chunk_refs[cid] == 0:
                            freed += size(cid)
            rep.freed_estimate += freed
            rep.evicted.append(r.sha)
            idle_days = (now - r.last_used) / 86400
            detail = f"repo {r.repo} commit {r.sha}: idle {idle_days:.1f} d, frees ~{freed} bytes (usage {used} > {high})"
            log.info("evict %s", detail)
            if not dry_run:
                await lc.evict_revision(r.repo, r.sha, detail)
                self.catalog.repos.forget_listing(r.repo, r.sha)
                names = names if names is not None else await repo_names(self.catalog)
                self.audit.record(actor, "lifecycle.evict", f"{names.get(r.repo, r.repo)}@{r.sha}",
                                  idle_days=round(idle_days, 1), frees_bytes=freed, used_bytes=used, high_bytes=high)
        return rep
