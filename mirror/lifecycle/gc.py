"""Garbage collection: mark-and-sweep, no reference counts to drift (borg `compact`).

Roots are the listed revisions. Order, each step safe to interrupt (crash points in
brackets), a second run finishing what the first began:
  1. delete the catalog rows of manifests no revision references, older than
     `gc_grace`                                                    [gc.manifests_deleted]
  2. mark every chunk of every remaining manifest, hot or archived, plus the chunks
     readers in this process hold leases on
  3. delete unmarked hot chunk files older than `gc_grace`        [gc.file_deleted, per file]
  4. delete the rows (chunks, archived) of unmarked chunks        [gc.rows_deleted]
  5. packs: drop empty ones and orphans the catalog never recorded; repack those whose
     live share fell below REPACK_BELOW (new pack verified and recorded before the old
     one is deleted)                                              [gc.repacked]
  6. with a shared bucket: publish this node's reference set, then collect the bucket
     (mirror/s3/gc.py; a failure there is logged, the local steps stand)
With a shared store (`[store] backend = "s3"`: ChunkStore.shared) steps 3 and 4 concern
this node's local copies and catalog rows only: a chunk object in the bucket may be
another node's, and is deleted only by the cross-node protocol (mirror/s3/gc.py), which
this collector runs after its own steps when the store is shared.
A chunk's age is its row's `created_at` on the injected clock, or its file's mtime when
it has no row yet (an ingest in flight). See lifecycle/__init__.py for the lease rules.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from typing import Callable

from mirror import crashpoints
from mirror.audit.actor import LIFECYCLE
from mirror.audit.log import AuditLog
from mirror.catalog import Catalog
from mirror.clock import Clock
from mirror.flock import FileLock
from mirror.errors import MirrorError
from mirror.lifecycle.policy import Policy, flush_access
from mirror.s3.gc import BucketGcReport, SharedGc
from mirror.store.chunkstore import ChunkStore
from mirror.store.leases import LeaseTable
from mirror.store.packs import PackStore

log = logging.getLogger("mirror.lifecycle")

# A pack whose live bytes fall below this share of its size is rewritten.
REPACK_BELOW = 0.5
# Deleted manifests named in a run's audit record (the count is always there).
_AUDIT_IDS = 100
# Chunk files deleted per worker-thread call (each ends with its directory fsyncs), so a
# sweep of a large store reports progress and does not hold a thread for minutes.
_SWEEP_BATCH = 1024


@dataclass
class GcReport:
    dry_run: bool = False
    manifests_deleted: int = 0
    chunk_files_deleted: int = 0
    chunk_rows_deleted: int = 0
    bytes_freed: int = 0
    kept_young: int = 0
    kept_leased: int = 0
    packs_deleted: int = 0
    packs_repacked: int = 0
    dangling_manifests: int = 0
    bucket: BucketGcReport | None = None


class Collector:
    """Mark-and-sweep collection (module docstring: the steps and their crash points)."""

    def __init__(self, catalog: Catalog, store: ChunkStore, packs: PackStore, leases: LeaseTable, clock: Clock,
                 policy: Policy, lock: FileLock, audit: AuditLog, shared: SharedGc | None = None) -> None:
        """`shared`: with a bucket other nodes share, the cross-node protocol run after
        the local steps (mirror/s3/gc.py)."""
        self.shared = shared
        self.catalog = catalog
        self.audit = audit
        self.store = store
        self.packs = packs
        self.leases = leases
        self.clock = clock
        self.policy = policy
        self.lock = lock

    async def gc(self, *, policy: Policy | None = None, dry_run: bool = False, actor: str = LIFECYCLE,
                 progress: Callable[[int, int], None] | None = None) -> GcReport:
        """`progress(done, total)` follows the chunk files swept."""
        policy = policy or self.policy
        with self.lock.held():
            return await self._gc(policy, dry_run, actor, progress)

    def _audit(self, rep: GcReport, dead_manifests: list[str], actor: str) -> None:
        """One record per run that deleted anything; the deleted manifests' identities are
        listed up to _AUDIT_IDS (an eviction's record names the revisions themselves)."""
        if rep.dry_run or not any((rep.manifests_deleted, rep.chunk_files_deleted, rep.chunk_rows_deleted,
                                   rep.packs_deleted, rep.packs_repacked, rep.dangling_manifests)):
            return
        self.audit.record(actor, "lifecycle.gc", "store", manifests_deleted=rep.manifests_deleted,
                          manifests=dead_manifests[:_AUDIT_IDS], chunk_files_deleted=rep.chunk_files_deleted,
                          bytes_freed=rep.bytes_freed, chunk_rows_deleted=rep.chunk_rows_deleted,
                          packs_deleted=rep.packs_deleted, packs_repacked=rep.packs_repacked,
                          dangling_manifests=rep.dangling_manifests)

    async def _gc(self, policy: Policy, dry_run: bool, actor: str, progress: Callable[[int, int], None] | None) -> GcReport:
        await flush_access(self.catalog)
        lc = self.catalog.lifecycle
        loop = asyncio.get_running_loop()
        rep = GcReport(dry_run=dry_run)
        now, grace = self.clock.now(), policy.gc_grace
        leases = self.leases

        # 1. Unreachable manifests.
        referenced = {i for ids in (await lc.revision_manifests()).values() for i in ids}
        created = await lc.manifest_created()
        dead_manifests = sorted(i for i, t in created.items() if i not in referenced and now - t >= grace)
        rep.manifests_deleted = len(dead_manifests)
        if not dry_run:
            await lc.delete_manifests(dead_manifests)
            for i in dead_manifests:
                self.catalog.content.forget(i)
            crashpoints.hit("gc.manifests_deleted")

        # 2. Mark.
        mchunks = await lc.manifest_chunks()
        dead_set = set(dead_manifests)
        live = {c for i, cids in mchunks.items() if i not in dead_set for c in cids}
        held = leases.held() if leases is not None else frozenset()
        rows = await lc.chunk_rows()
        archived = await lc.archived()
        hot_ids = await loop.run_in_executor(None, lambda: list(self.store.iter_local_ids()))
        wall = time.time()

        def young(cid: str) -> bool:
            row = rows.get(cid)
            if row is not None:
                return now - row[2] < grace
            mtime = self.store.mtime(cid)
            return mtime is not None and wall - mtime < grace

        def unmarked(cid: str) -> bool:
            if cid in live:
                return False
            if cid in held:
                rep.kept_leased += 1
                return False
            if young(cid):
                rep.kept_young += 1
                return False
            return True

        dead_files = [c for c in hot_ids if unmarked(c)]
        dead_rows = sorted({c for c in rows if c not in live and c not in held and not young(c)} | {c for c in archived if c not in live and c not in held})

        # 3. Hot files.
        rep.bytes_freed = sum(rows.get(c, (0, 0, 0))[1] for c in dead_files)
        if not dry_run:
            # A reader that started after the mark holds a lease: its chunks stay.
            keep = leases.is_held if leases is not None else None
            for i in range(0, len(dead_files), _SWEEP_BATCH):
                part = dead_files[i:i + _SWEEP_BATCH]
                delete = functools.partial(self.store.drop_local_many, part, keep=keep, crashpoint="gc.file_deleted")
                rep.chunk_files_deleted += await loop.run_in_executor(None, delete)
                if progress is not None:
                    progress(i + len(part), len(dead_files))
        else:
            rep.chunk_files_deleted = len(dead_files)

        # 4. Rows.
        rep.chunk_rows_deleted = len(dead_rows)
        if not dry_run:
            await lc.delete_chunks(dead_rows)
            crashpoints.hit("gc.rows_deleted")
            # An ingest in another process may have referenced a chunk we just deleted
            # (it found the file present before the sweep). Drop such manifests so the file
            # is fetched again rather than served incomplete.
            rep.dangling_manifests = await self._drop_dangling(set(mchunks), set(dead_files))

        # 5. Packs.
        await self._packs(rep, dry_run)

        # 6. A shared bucket: publish what this node references, then collect it.
        if self.shared is not None and not dry_run:
            try:
                rep.bucket = await self.shared.run(policy.gc_grace)
            except MirrorError as exc:
                log.warning("bucket gc: %s; the bucket is collected at a later run", exc.message)
        log.info(
            "gc%s: %d manifests, %d chunk files (%d bytes), %d rows; kept %d young, %d leased; packs %d deleted, %d repacked",
            " (dry run)" if dry_run else "", rep.manifests_deleted, rep.chunk_files_deleted, rep.bytes_freed,
            rep.chunk_rows_deleted, rep.kept_young, rep.kept_leased, rep.packs_deleted, rep.packs_repacked,
        )
        self._audit(rep, dead_manifests, actor)
        return rep

    async def _drop_dangling(self, known: set[str], deleted: set[str]) -> int:
        if not deleted:
            return 0
        now_chunks = await self.catalog.lifecycle.manifest_chunks()
        dangling = [i for i, cids in now_chunks.items() if i not in known and any(c in deleted and not self.store.has(c) for c in cids)]
        await self.catalog.lifecycle.delete_manifests(dangling)
        for i in dangling:
            self.catalog.content.forget(i)
        return len(dangling)

    async def _packs(self, rep: GcReport, dry_run: bool) -> None:
        archive = self.packs
        lc = self.catalog.lifecycle
        loop = asyncio.get_running_loop()
        packs = await lc.packs()
        archived = await lc.archived()
        live: dict[int, list[tuple[str, int, int]]] = {p: [] for p in packs}
        for cid, loc in archived.items():
            live.setdefault(loc.pack, []).append((cid, loc.offset, loc.stored_len))
        recorded = {name for name, _ in packs.values()}
        orphans = [n for n in archive.names() if n not in recorded]
        if dry_run:
            rep.packs_deleted = len(orphans) + sum(1 for p in packs if not live[p])
            return
        for name in orphans:
            await loop.run_in_executor(None, archive.delete, name)
            rep.packs_deleted += 1
        archive.remove_stale_temps()
        for pack_id, (name, size) in sorted(packs.items()):
            entries = live.get(pack_id, [])
            if not entries:
                await lc.drop_pack(pack_id)
                await loop.run_in_executor(None, archive.delete, name)
                rep.packs_deleted += 1
                continue
            if sum(e[2] for e in entries) >= REPACK_BELOW * size:
                continue
            writer = await loop.run_in_executor(None, self.packs.copy_live, name, sorted(entries, key=lambda e: e[1]))
            await loop.run_in_executor(None, writer.finish)
            await loop.run_in_executor(None, writer.check)
            await loop.run_in_executor(None, writer.publish)
            await lc.record_pack(
                writer.name, writer.size, [(e.chunk_id, e.offset, e.length) for e in writer.entries], replaces=[pack_id],
                action="repack", detail=f"{name} ({size} bytes) -> {writer.name} ({writer.size} bytes)",
            )
            crashpoints.hit("gc.repacked")
            await loop.run_in_executor(None, archive.delete, name)
            rep.packs_repacked += 1
