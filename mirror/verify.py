"""`mirror verify`: check that every stored content can be rebuilt, beside a running daemon.

What is checked: the catalog database (SQLite integrity, foreign keys); every manifest's
signature; every chunk a manifest names, hot or archived, re-hashed (blake3 of its raw
bytes); and every other hot chunk file and archived chunk, re-hashed too, since a later
ingest reuses a stored chunk without reading it. With `repair`, bad chunks are
quarantined and manifests that can no longer be rebuilt are dropped (the next request
fetches them again). Every repair is audited (`store.quarantine` per chunk moved aside,
`store.drop_manifest` per manifest dropped), by the given `actor`.

One consistent view, while a daemon ingests beside it:
- the manifests are read first, in one snapshot, and only then the chunks. Ingest
  publishes a manifest's chunks (rename + directory fsync) before it writes the chunk
  rows and the manifest row, so a chunk named by the snapshot is on disk unless
  something removed it since;
- the removers are the lifecycle operations (GC, archive, evict, thaw), which take the
  lifecycle lock exclusively: verify holds it shared for its whole run, so none runs
  meanwhile; and a reader that quarantines a chunk it found rotten (real damage);
- a chunk file that no manifest names is an ingest in flight or garbage for GC: it is
  re-hashed, but its absence is never damage.

Every finding is confirmed again just before it is reported (the chunk re-read, the
manifests that name it re-read from the database), and repair re-confirms once more
before it acts: a chunk file is quarantined only if the file moved is itself bad (a good
copy a reader put back meanwhile is restored); a manifest is dropped only if its current
row fails its signature or names a chunk that is absent or bad now, and only that row
(a manifest an ingest stores again meanwhile is a new row and stays).

Every OS or SQLite failure (a full or read-only disk) surfaces as `StorageError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from mirror.audit.log import AuditLog
from mirror.catalog import Catalog
from mirror.errors import BadSignature, ChunkMissing, IntegrityError, LockBusy, MirrorError, StorageError
from mirror.store.s3packs import PackUnavailable
from mirror.flock import FileLock
from mirror.manifest import Manifest
from mirror.store.chunkstore import ChunkStore

log = logging.getLogger("mirror.verify")

# How long verify waits for a running lifecycle operation (GC of a large store can take
# minutes) before it gives up with a one-line error.
LOCK_WAIT = 600.0
_BATCH = 32
_MISSING = "missing"


@dataclass
class VerifyReport:
    chunks_checked: int = 0
    manifests_checked: int = 0
    bad_chunks: list[str] = field(default_factory=list)
    missing_chunks: list[str] = field(default_factory=list)
    bad_manifests: list[str] = field(default_factory=list)
    db_problems: list[str] = field(default_factory=list)
    quarantined: int = 0
    dropped_manifests: int = 0
    # Findings of the first pass that a re-check cleared (content changed meanwhile).
    cleared: int = 0

    @property
    def ok(self) -> bool:
        return not (self.bad_chunks or self.missing_chunks or self.bad_manifests or self.db_problems)




def _check(store: ChunkStore, cid: str) -> str | None:
    """None when the chunk reads back and hashes to its id, else `_MISSING` or why it is bad."""
    try:
        store.read(cid, verify=True)
    except PackUnavailable as exc:
        raise MirrorError(f"cannot verify now: {exc.message}") from None
    except ChunkMissing:
        return _MISSING
    except IntegrityError as exc:
        return exc.message
    return None


def _signed(man: Manifest, trusted: set[str]) -> bool:
    try:
        man.verify(trusted)
    except BadSignature:
        return False
    return True


class Verifier:
    """`mirror verify` (module docstring: what is checked, and how it stays consistent
    beside a running daemon)."""

    def __init__(self, catalog: Catalog, store: ChunkStore, executor: Executor, lock: FileLock, audit: AuditLog) -> None:
        """`lock` is the lifecycle lock, held shared while verifying."""
        self.catalog = catalog
        self.audit = audit
        self.store = store
        self.executor = executor
        self.lock = lock

    async def verify(self, *, repair: bool = False, lock_wait: float = LOCK_WAIT, actor: str = "system",
                     progress: Callable[[int, int], None] | None = None) -> VerifyReport:
        """`progress(done, total)` follows the chunks of the first pass (the long part)."""
        try:
            async with self._shared_lock(lock_wait):
                return await self._verify(repair, actor, progress)
        except sqlite3.Error as exc:
            raise StorageError(f"catalog {self.catalog.db.path}: {exc}") from None
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            raise StorageError(f"{exc.strerror or exc}{where}") from None

    @contextlib.asynccontextmanager
    async def _shared_lock(self, wait: float) -> AsyncIterator[None]:
        """Hold the lifecycle lock shared, waiting up to `wait` seconds for a running
        lifecycle operation to finish."""
        deadline = time.monotonic() + wait
        while True:
            try:
                fd = self.lock.acquire(shared=True)
                break
            except LockBusy:
                if time.monotonic() >= deadline:
                    raise MirrorError("cannot verify now: a lifecycle operation (archive, thaw, evict, gc) is running; "
                                      "try again when it has finished") from None
            await asyncio.sleep(0.5)
        try:
            yield
        finally:
            self.lock.release(fd)

    async def _check_many(self, ids: list[str], progress: Callable[[int, int], None] | None = None) -> dict[str, str | None]:
        loop = asyncio.get_running_loop()
        out: dict[str, str | None] = {}
        for i in range(0, len(ids), _BATCH):
            part = ids[i:i + _BATCH]
            results = await asyncio.gather(*(loop.run_in_executor(self.executor, _check, self.store, c) for c in part))
            out.update(zip(part, results))
            if progress is not None:
                progress(len(out), len(ids))
        return out

    async def _verify(self, repair: bool, actor: str, progress: Callable[[int, int], None] | None) -> VerifyReport:
        rep = VerifyReport()
        loop = asyncio.get_running_loop()
        content = self.catalog.content
        rep.db_problems = await self.catalog.db.integrity_check()
        # 1. The manifests, in one snapshot, before any chunk is looked at.
        manifests = await content.iter_manifests()
        trusted = set(await self.catalog.meta.trusted())
        rep.manifests_checked = len(manifests)
        named = {c.chunk_id for m in manifests for c in m.chunks}
        unsigned = [m.identity for m in manifests if not _signed(m, trusted)]
        # 2. Every chunk: those named, then hot files and archived chunks beyond them.
        hot = await loop.run_in_executor(None, lambda: set(self.store.iter_ids()))
        archived = await self.catalog.lifecycle.archived()
        # Archived chunks in pack order: a pack is read front to back, in large ranges.
        ids = sorted((named | hot) - set(archived))
        ids += sorted(archived, key=lambda c: (archived[c].pack, archived[c].offset))
        first = await self._check_many(ids, progress)
        rep.chunks_checked = len(ids)
        suspects = sorted(c for c, r in first.items() if r is not None and (r != _MISSING or c in named or c in archived))
        # 3. Confirm each finding against the store and the catalog as they are now.
        again = await self._check_many(suspects)
        bad: set[str] = set()
        for cid in suspects:
            verdict = again[cid]
            if verdict is None:
                rep.cleared += 1
                continue
            if verdict != _MISSING:
                bad.add(cid)
                rep.bad_chunks.append(cid)
                continue
            if cid in archived:
                rep.db_problems.append(f"archived chunk {cid[:16]} is in no pack on disk")
            if await content.manifests_using(cid):
                rep.missing_chunks.append(cid)
            elif cid not in archived:
                rep.cleared += 1  # no manifest names it any more: nothing is damaged
        for identity in unsigned:
            row = await content.manifest_row(identity)
            if row is None or _signed(row[0], trusted):
                rep.cleared += 1
                continue
            rep.bad_manifests.append(identity)
        if rep.cleared:
            log.info("verify: %d findings cleared on re-check (content changed while verifying)", rep.cleared)
        if repair and not rep.ok:
            await self._repair(rep, bad, trusted, actor)
        return rep

    async def _repair(self, rep: VerifyReport, bad: set[str], trusted: set[str], actor: str) -> None:
        loop = asyncio.get_running_loop()
        content = self.catalog.content
        quarantined: set[str] = set()
        for cid in sorted(bad):
            if await loop.run_in_executor(self.executor, self.store.quarantine_if_bad, cid):
                quarantined.add(cid)
                self.audit.record(actor, "store.quarantine", cid, reason="bad chunk")
        rep.quarantined = len(quarantined)
        # The manifests that name a damaged chunk now (not in the snapshot: rows change).
        suspects = set(rep.bad_manifests)
        for cid in set(rep.missing_chunks) | bad:
            suspects.update(await content.manifests_using(cid))
        for identity in sorted(suspects):
            row = await content.manifest_row(identity)
            if row is None:
                continue
            man, created_at = row
            if not await self._still_damaged(man, trusted, bad):
                continue
            if await content.delete_manifest_if(identity, created_at):
                rep.dropped_manifests += 1
                self.audit.record(actor, "store.drop_manifest", identity, reason="damaged")
                log.warning("verify: dropped manifest %s (damaged); it will be fetched again", identity)
        # Rows of chunks that are gone. An ingest may store one again right after this check:
        # its row is then missing, which only makes GC judge the file's age by its mtime.
        ids = sorted(set(rep.missing_chunks) | quarantined)
        gone = await loop.run_in_executor(None, lambda: [c for c in ids if not self.store.has(c)])
        await content.delete_chunk_rows(gone)

    async def _still_damaged(self, man: Manifest, trusted: set[str], bad: set[str]) -> bool:
        if not _signed(man, trusted):
            return True
        ids = [c.chunk_id for c in man.chunks]
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, lambda: all(self.store.has(c) for c in ids)):
            return True
        rotten = [c for c in ids if c in bad]
        return any(r is not None for r in (await self._check_many(rotten)).values())
