"""Archive: move chunks that only cold revisions reference into archive packs; thaw back.

Archive, per pack (threat-model C7; crash points in brackets):
  1. copy: re-encode each hot frame at the archive level (never larger than the hot
     frame) into a pack temp file, sealed and fsynced                 [archive.copied]
  2. verify: re-read the temp, check every frame's blake3, rename it into place and
     fsync the directory                                             [archive.verified]
  3. flip: one transaction records the pack and every chunk's archive location
                                                                      [archive.flipped]
  4. delete the hot copies (directories fsynced)                      [archive.deleted, per chunk]
A crash before 3 leaves the hot copies authoritative (the temp is removed at the next
start, an orphan pack by the next GC); after 3 both copies exist until a later run,
which sees the chunks archived with hot copies left and finishes step 4.

Thaw: read each archived chunk of the revision (verified), write it hot, then one
transaction drops its archive location; the pack's dead bytes go at the next repack.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable

from mirror import crashpoints
from mirror.audit.actor import LIFECYCLE
from mirror.audit.log import AuditLog
from mirror.catalog import Catalog
from mirror.catalog.repos import RepoCatalog
from mirror.clock import Clock
from mirror.errors import ChunkMissing, LockBusy, RevisionNotFound, UsageError
from mirror.flock import FileLock
from mirror.lifecycle.policy import Graph, Policy, cold_revisions, flush_access, load_graph, repo_names
from mirror.model import RepoKey
from mirror.store.chunker import sniff_group_width
from mirror.store.chunkstore import ChunkStore
from mirror.store.packs import PACK_TARGET, ArchiveEncoder, PackStore, PackWriter
from mirror.store.s3packs import S3PackStore

log = logging.getLogger("mirror.lifecycle")
_BATCH = 8


@dataclass
class ArchiveReport:
    dry_run: bool = False
    revisions: list[str] = field(default_factory=list)
    chunks: int = 0
    raw_bytes: int = 0
    hot_bytes: int = 0
    archive_bytes: int = 0
    packs: int = 0
    hot_deleted: int = 0

    @property
    def saved(self) -> int:
        return self.hot_bytes - self.archive_bytes


@dataclass
class ThawReport:
    revision: str = ""
    chunks: int = 0
    raw_bytes: int = 0


# --- thaw -----------------------------------------------------------------------------------


async def find_revision(repos: RepoCatalog, spec: str) -> tuple[int, str]:
    """'org/name@rev' (or 'datasets/org/name@rev') -> (repo id, commit sha)."""
    repo_s, sep, rev = spec.rpartition("@")
    if not sep or not repo_s or not rev:
        raise UsageError(f"expected REPO@REVISION, got {spec!r}")
    repo_type = "model"
    for prefix, kind in (("datasets/", "dataset"), ("spaces/", "space")):
        if repo_s.startswith(prefix):
            repo_type, repo_s = kind, repo_s[len(prefix):]
    repo = await repos.repo_id(RepoKey(repo_type, repo_s), create=False)
    if repo is None:
        raise RevisionNotFound(f"repository {repo_s} is not in the catalog")
    refs = await repos.refs_of(repo)
    if rev in refs:
        return repo, refs[rev]
    found = await repos.find_commit(repo, rev.lower())
    if len(found) != 1:
        raise RevisionNotFound(f"revision {rev} of {repo_s} is {'ambiguous' if found else 'not in the catalog'}")
    return repo, found[0]


class Archiver:
    """Archive and thaw (module docstring: the steps and their crash points)."""

    def __init__(self, catalog: Catalog, store: ChunkStore, packs: PackStore | S3PackStore, executor: Executor, clock: Clock,
                 policy: Policy, lock: FileLock, audit: AuditLog) -> None:
        self.catalog = catalog
        self.store = store
        self.packs = packs
        self.audit = audit
        self.executor = executor
        self.clock = clock
        self.policy = policy
        self.lock = lock

    async def archive(self, *, policy: Policy | None = None, older_than: float | None = None, dry_run: bool = False,
                      actor: str = LIFECYCLE, progress: Callable[[int, int], None] | None = None) -> ArchiveReport:
        """`progress(done, total)` follows the chunks copied into packs."""
        policy = policy or self.policy
        with self.lock.held():
            return await self._archive(policy, older_than, dry_run, actor, progress)

    async def _archive(self, policy: Policy, older_than: float | None, dry_run: bool, actor: str,
                       progress: Callable[[int, int], None] | None) -> ArchiveReport:
        await flush_access(self.catalog)
        if not dry_run:
            self.packs.remove_stale_temps()  # of a run killed at step 1
        lc = self.catalog.lifecycle
        graph = await load_graph(self.catalog)
        cold = cold_revisions(graph, policy, self.clock.now(), older_than)
        fresh = [r for r in cold if not r.archived]
        rep = ArchiveReport(dry_run=dry_run, revisions=[r.sha for r in fresh])
        if not cold:
            return rep
        cold_keys = {(r.repo, r.sha) for r in cold}
        # Chunks of every other manifest (hot revisions, or no revision at all) stay hot.
        hot_manifests = {i for k, ids in graph.rev_manifests.items() if k not in cold_keys for i in ids}
        hot_manifests |= set(graph.manifest_chunks) - graph.referenced_manifests()
        keep_hot = graph.chunks_of(hot_manifests)
        archived = await lc.archived()
        rows = await lc.chunk_rows()
        to_copy: list[tuple[str, str]] = []  # (chunk id, identity of the manifest it came from)
        to_drop: list[str] = []
        seen: set[str] = set()
        for r in cold:
            for ident in sorted(graph.rev_manifests.get((r.repo, r.sha), ())):
                for cid in graph.manifest_chunks.get(ident, ()):
                    if cid in seen or cid in keep_hot:
                        continue
                    seen.add(cid)
                    if not self.store.has_hot(cid):
                        continue
                    (to_drop if cid in archived else to_copy).append((cid, ident))
        rep.chunks = len(to_copy)
        rep.raw_bytes = sum(rows.get(c, (0, 0, 0))[0] for c, _ in to_copy)
        rep.hot_bytes = sum(rows.get(c, (0, 0, 0))[1] for c, _ in to_copy)
        if dry_run:
            rep.hot_deleted = len(to_drop)
            return rep
        # Finish an earlier run's step 4 first.
        rep.hot_deleted += await self._delete_hot([c for c, _ in to_drop])
        widths = await self._group_widths(graph, {i for _, i in to_copy})
        encoder = ArchiveEncoder()
        loop = asyncio.get_running_loop()
        writer: PackWriter | None = None
        pending: list[str] = []

        def encode(cid: str, width: int) -> bytes:
            return encoder.encode(cid, self.store.read_frame(cid), width)

        for i in range(0, len(to_copy), _BATCH):
            batch = to_copy[i:i + _BATCH]
            results = await asyncio.gather(
                *(loop.run_in_executor(self.executor, encode, cid, widths.get(ident, 0)) for cid, ident in batch), return_exceptions=True
            )
            if writer is None:
                writer = await loop.run_in_executor(None, self.packs.new_writer)
            for (cid, _), frame in zip(batch, results):
                if isinstance(frame, ChunkMissing):
                    continue
                if isinstance(frame, BaseException):
                    writer.abort()
                    raise frame
                await loop.run_in_executor(None, writer.add, cid, frame)
                pending.append(cid)
            if writer.size >= PACK_TARGET:
                rep.archive_bytes += await self._commit_pack(writer)
                rep.packs += 1
                rep.hot_deleted += await self._delete_hot(pending)
                writer, pending = None, []
            if progress is not None:
                progress(i + len(batch), len(to_copy))
        if writer is not None and writer.entries:
            rep.archive_bytes += await self._commit_pack(writer)
            rep.packs += 1
            rep.hot_deleted += await self._delete_hot(pending)
        elif writer is not None:
            writer.abort()
        if fresh or rep.chunks or rep.hot_deleted:
            await lc.mark_archived([(r.repo, r.sha, r.hits) for r in fresh])
            await lc.audit("archive", f"{len(fresh)} revisions, {rep.chunks} chunks, {rep.hot_bytes} hot bytes -> {rep.archive_bytes} archived")
            names = await repo_names(self.catalog)
            now = self.clock.now()
            for r in fresh:
                self.audit.record(actor, "lifecycle.archive", f"{names.get(r.repo, r.repo)}@{r.sha}",
                                  idle_days=round((now - r.last_used) / 86400, 1))
            if rep.chunks or rep.hot_deleted:
                self.audit.record(actor, "lifecycle.archive", "store", revisions=len(fresh), chunks=rep.chunks,
                                  hot_bytes=rep.hot_bytes, archive_bytes=rep.archive_bytes, packs=rep.packs,
                                  hot_deleted=rep.hot_deleted)
            log.info("archive: %d revisions, %d chunks, %d -> %d bytes (saved %d)", len(fresh), rep.chunks, rep.hot_bytes, rep.archive_bytes, rep.saved)
        return rep

    async def _commit_pack(self, writer: PackWriter) -> int:
        """Steps 1-3 for one pack; returns its size."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, writer.finish)
        crashpoints.hit("archive.copied")
        await loop.run_in_executor(None, writer.check)
        await loop.run_in_executor(None, writer.publish)
        crashpoints.hit("archive.verified")
        await self.catalog.lifecycle.record_pack(
            writer.name, writer.size, [(e.chunk_id, e.offset, e.length) for e in writer.entries],
            action="pack", detail=f"{writer.name}: {len(writer.entries)} chunks, {writer.size} bytes",
        )
        crashpoints.hit("archive.flipped")
        self.packs.refresh()
        return writer.size

    async def _delete_hot(self, ids: list[str]) -> int:
        if not ids:
            return 0
        # With a shared bucket the durable copies are other nodes' too: only this node's
        # local copies go (the bucket is collected by the cross-node protocol).
        delete = functools.partial(self.store.drop_local_many, ids, crashpoint="archive.deleted")
        return await asyncio.get_running_loop().run_in_executor(None, delete)

    async def _group_widths(self, graph: Graph, identities: set[str]) -> dict[str, int]:
        """Byte-group width per file, sniffed from its first chunk (a safetensors header)."""
        loop = asyncio.get_running_loop()
        out: dict[str, int] = {}
        for ident in identities:
            chunks = graph.manifest_chunks.get(ident)
            if not chunks:
                continue
            try:
                head = await loop.run_in_executor(self.executor, self.store.read, chunks[0])
            except ChunkMissing:
                continue
            out[ident] = sniff_group_width(memoryview(head)[: 1 << 20])
        return out

    async def has_archived(self, repo: int, sha: str) -> bool:
        """The revision is marked archived, or one of its chunks is in a pack (shared with
        an archived revision); otherwise a thaw would only write a misleading audit row."""
        lc = self.catalog.lifecycle
        if any(r.repo == repo and r.sha == sha and r.archived for r in await lc.revisions()):
            return True
        graph = await load_graph(self.catalog)
        in_packs = await lc.archived()
        return any(cid in in_packs for cid in graph.chunks_of(graph.rev_manifests.get((repo, sha), set())))

    async def thaw(self, repo: int, sha: str, *, actor: str = LIFECYCLE) -> ThawReport:
        with self.lock.held():
            rep = await self._thaw(repo, sha)
        names = await repo_names(self.catalog)
        self.audit.record(actor, "lifecycle.thaw", f"{names.get(repo, repo)}@{sha}", chunks=rep.chunks, raw_bytes=rep.raw_bytes)
        return rep

    async def _thaw(self, repo: int, sha: str) -> ThawReport:
        lc = self.catalog.lifecycle
        graph = await load_graph(self.catalog)
        archived = await lc.archived()
        idents = graph.rev_manifests.get((repo, sha), set())
        widths = await self._group_widths(graph, idents)
        loop = asyncio.get_running_loop()
        rep = ThawReport(revision=sha)

        def restore(cid: str, width: int) -> tuple[str, int, int, int]:
            raw = self.store.read(cid)  # from the pack, verified
            self.store.put_raw(raw, group_width=width, chunk_id=cid)
            codec, _n, stored = self.store.describe(cid)
            return cid, stored, codec, len(raw)

        todo = [(cid, widths.get(i, 0)) for i in sorted(idents) for cid in graph.manifest_chunks.get(i, ()) if cid in archived]
        todo = list(dict(todo).items())
        restored: list[tuple[str, int, int]] = []
        for i in range(0, len(todo), _BATCH):
            for cid, stored, codec, n in await asyncio.gather(*(loop.run_in_executor(self.executor, restore, c, w) for c, w in todo[i:i + _BATCH])):
                restored.append((cid, stored, codec))
                rep.raw_bytes += n
        crashpoints.hit("thaw.copied")
        await lc.unarchive(restored, repo, sha, f"{repo}@{sha}: {len(restored)} chunks")
        rep.chunks = len(restored)
        log.info("thaw: %s, %d chunks, %d bytes back in the hot tier", sha[:12], rep.chunks, rep.raw_bytes)
        return rep

    async def keep_hot(self, repo: int, sha: str, *, actor: str = LIFECYCLE) -> bool:
        """Bring an archived revision back to the hot tier now (a release or an alias
        just named it). False when another lifecycle operation holds the lock: the
        next lifecycle round thaws it (`thaw_hot_again`: pinned revisions stay hot)."""
        if not await self.catalog.lifecycle.is_archived(repo, sha):
            return True
        try:
            await self.thaw(repo, sha, actor=actor)
        except LockBusy:
            log.info("revision %s is archived and named by an alias; the next lifecycle round thaws it", sha[:12])
            return False
        return True

    async def thaw_hot_again(self, policy: Policy | None = None) -> int:
        """Thaw archived revisions read `thaw_after_hits` times since they were archived,
        and those pinned since (a pin, a release, an alias)."""
        policy = policy or self.policy
        await flush_access(self.catalog)
        n = 0
        for r in await self.catalog.lifecycle.revisions():
            hot_again = policy.thaw_after_hits > 0 and r.hits - r.hits_at_archive >= policy.thaw_after_hits
            if r.archived and (r.pinned or hot_again):
                await self.thaw(r.repo, r.sha)
                n += 1
        return n
