"""The Fetcher: one fetch per file identity, however many clients ask (cache fills).

A `Fill` brings one file content into a spool file while any number of clients stream
it *from the spool* behind the writer (followers read from disk, never from a shared RAM
queue, so slow clients cost no memory). The fetch runs as a task of the node's
scheduler, shielded from every client: the first client going away does not stop it.
The bytes come from an ordered list of origins (resolve/origin.py: upstream today),
each continuing where the previous one stopped.

Integrity (threat-model T1, U1-U3), in one place whatever the origin: bytes are hashed as
they arrive; the last `HOLDBACK` bytes are withheld from followers until the whole file
matches its upstream identity (sha256 for LFS, git blob sha1 otherwise). On a mismatch
every follower gets an error (the edge aborts the connection), the spool is deleted and
nothing is kept. After verification the spool is ingested into the chunk store in the
background.

Spool files survive a restart: `Fetcher.recover` ingests verified spools and resumes
partial ones of public repos (their hash state is rebuilt by re-reading the prefix).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Sequence

from mirror import crashpoints
from mirror.caller import ANONYMOUS, Caller
from mirror.catalog.meta import MetaCatalog
from mirror.catalog.repos import RepoCatalog
from mirror.errors import BucketWriteFailed, ChunkMissing, HashMismatch, LockBusy, MirrorError, Overloaded, StorageError, UpstreamError, UpstreamUnavailable
from mirror.flock import FileLock
from mirror.ingest import Ingestor, identity_hasher
from mirror.manifest import Manifest
from mirror.store.chunkstore import Staged
from mirror.resolve.fill import Fill
from mirror.resolve.origin import Origin, SpoolSink, judge
from mirror.resolve.spool import FillTarget, fsync_path, hash_prefix, read_record, write_record
from mirror.scheduler import Scheduler
from mirror.singleflight import SingleFlight
from mirror.store.layout import Layout
from mirror.store.space import SpaceGuard

log = logging.getLogger("mirror.fill")

INGEST_WAIT = 600.0  # seconds an ingest waits for the fill's readers to finish


class Fetcher:
    def __init__(
        self,
        origins: Sequence[Origin],
        ingestor: Ingestor,
        repos: RepoCatalog,
        counters: MetaCatalog,
        layout: Layout,
        scheduler: Scheduler,
        space: SpaceGuard,
        *,
        max_fills: int,
    ) -> None:
        """`origins` are asked in order for the bytes of each miss; `max_fills` fills
        may run at once before new ones are shed with 429; a fill starts only when
        `space` has room for it (StorageError otherwise)."""
        self.origins = list(origins)
        self.ingestor = ingestor
        self.repos = repos
        self.counters = counters
        self.layout = layout
        self.scheduler = scheduler
        self.space = space
        self.max_fills = max_fills
        self._fills: SingleFlight[str, Fill] = SingleFlight()

    def start(self, target: FillTarget, caller: Caller) -> Fill:
        """Return the fill for this content, starting one if none runs."""

        made: list[Fill] = []

        def make() -> Fill:
            if self.in_flight() >= self.max_fills:
                raise Overloaded("mirror is busy filling its cache; retry shortly", retry_after=2)
            if not self.space.room_for(target.size):
                raise StorageError(f"not enough free space to cache {target.entry.path} ({target.size} bytes)")
            spool, meta = self.layout.spool_paths(target.identity)
            fill = Fill(target, spool, meta)
            self._lock_spool(fill)
            made.append(fill)
            return fill

        fill = self._fills.start(target.identity, make, replace=lambda f: f.done.is_set() and not f.verified)
        if made:
            self.scheduler.spawn(self._run(fill, caller), name=f"fill {target.identity[:20]}")
        return fill

    def in_flight(self) -> int:
        """Fills fetching now (what `max_fills` limits)."""
        return sum(1 for f in self._fills.values() if not f.done.is_set())

    def running(self, identity: str) -> Fill | None:
        """The fill of this content while it is fetching, or verified and not yet
        ingested (its spool can still be followed); None once failed or ingested."""
        fill = self._fills.get(identity)
        if fill is None or (fill.done.is_set() and not fill.verified):
            return None
        return fill

    def _lock_spool(self, fill: Fill) -> None:
        """Create the spool (so followers can open it before the task first runs) and
        hold an exclusive flock on it for the fill's lifetime: a CLI sync and the daemon
        on one data directory never write the same spool at once."""
        try:
            fill.lock_fd = FileLock(fill.spool, "this file is being fetched by another mirror process").acquire()
        except LockBusy as exc:
            raise Overloaded(f"{exc.message}; retry shortly", retry_after=2) from None

    @staticmethod
    def _unlock_spool(fill: Fill) -> None:
        if fill.lock_fd is not None:
            os.close(fill.lock_fd)
            fill.lock_fd = None

    # --- the fetch -----------------------------------------------------------------------

    async def _run(self, fill: Fill, caller: Caller) -> None:
        t = fill.target
        started = asyncio.get_running_loop().time()
        try:
            self._write_meta(fill, verified=False)
            await self._download(fill, caller)
            took = asyncio.get_running_loop().time() - started
            log.info("fetched %s %s from %s: %d bytes in %.2fs (%.0f MB/s)", t.key, t.entry.path, fill.source, t.size, took, t.size / max(took, 1e-6) / 1e6)
            # Verified: release the held-back tail to every follower now; the spool's
            # durability matters only to the ingest, so its fsync runs after.
            fill.verified = True
            fill.notify()
            try:
                await asyncio.get_running_loop().run_in_executor(None, fsync_path, fill.spool)
            except OSError as exc:
                raise StorageError(f"cannot sync the spool: {os.strerror(exc.errno or 5)}") from None
            self._write_meta(fill, verified=True)
            crashpoints.hit("fill.verified")
            fill.notify()
        except asyncio.CancelledError:
            fill.error = UpstreamUnavailable("mirror shutting down")
            fill.notify()
            fill.done.set()
            self._unlock_spool(fill)
            raise
        except MirrorError as exc:
            fill.error = exc
            if isinstance(exc, HashMismatch):
                log.error("integrity: %s %s@%s %s: %s; nothing kept", t.key, t.commit[:12], t.entry.path, t.identity, exc)
                self._drop_spool(fill)
            elif isinstance(exc, StorageError):
                # Out of space: drop what was spooled (keeping it would keep the disk
                # full across restarts); the file is fetched again when there is room.
                log.warning("fill of %s %s stopped: %s; spool dropped", t.key, t.entry.path, exc.message)
                self._drop_spool(fill)
                self._relieve(exc)
            else:
                log.warning("fill of %s %s failed: %s", t.key, t.entry.path, exc.message)
            self._fail(fill)
            return
        except Exception as exc:  # an unexpected bug: fail the fill, keep the daemon
            log.exception("fill of %s %s crashed", t.key, t.entry.path)
            fill.error = UpstreamError(f"internal error during fill: {type(exc).__name__}")
            self._fail(fill)
            return
        fill.done.set()
        try:
            async with asyncio.timeout(INGEST_WAIT):
                await fill.no_readers.wait()
        except TimeoutError:
            pass
        await self._ingest(fill)

    def _fail(self, fill: Fill) -> None:
        self._discard(fill.prechunked)
        fill.prechunked = None
        fill.notify()
        fill.done.set()
        self._fills.finish(fill.target.identity, fill)
        self._unlock_spool(fill)

    def _discard(self, offered: "tuple[object, list[Staged]] | None") -> None:
        if offered is not None:
            self.ingestor.store.discard(offered[1])

    async def _adopt(self, fill: Fill) -> bool:
        """Store the chunks an origin verified and staged for the whole file (a peer's
        frames, no re-compression); False when they cannot be (then the spool is cut)."""
        chunks, staged = fill.prechunked or ((), [])
        fill.prechunked = None
        t = fill.target
        try:
            await self.ingestor.adopt(staged, [Manifest(t.identity, t.size, chunks)])
            log.info("stored %s %s as the %d verified chunks it came in (no re-cut)", t.key, t.entry.path, len(chunks))
            return True
        except ChunkMissing:
            return False  # a chunk found stored was collected meanwhile: cut the spool instead

    async def _ingest(self, fill: Fill) -> None:
        t = fill.target
        try:
            if fill.prechunked is None or not await self._adopt(fill):
                await self.ingestor.ingest_path(fill.spool, t.identity, verified=True)
            crashpoints.hit("fill.ingested")
            self._drop_spool(fill)
        except StorageError as exc:
            log.warning("ingest of %s %s stopped: %s; spool dropped, the file is fetched again when there is room", t.key, t.entry.path, exc.message)
            self._drop_spool(fill)
            self._relieve(exc)
        except Exception:
            log.exception("ingest of %s failed; the verified spool is kept and retried at start", t.identity)
        finally:
            self._unlock_spool(fill)
            fill.ingested.set()
            self._fills.finish(t.identity, fill)

    async def _download(self, fill: Fill, caller: Caller) -> None:
        """Ask the origins in order until the spool holds the whole file, then check
        the whole file's digest against its identity (the one verification point)."""
        t = fill.target
        loop = asyncio.get_running_loop()
        hasher = identity_hasher(t.identity, t.size)
        fd = os.open(fill.spool, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            have = os.fstat(fd).st_size
            if have > t.size:
                os.ftruncate(fd, 0)
                have = 0
            if have:  # a spool left by an earlier run: rebuild the hash state
                await loop.run_in_executor(None, hash_prefix, fd, have, hasher)
                log.info("resuming %s at %d/%d bytes", t.entry.path, have, t.size)
            fill.written = have

            def written(offset: int, piece: bytes) -> None:
                fill.recent_offset, fill.recent = offset, piece
                fill.written = offset + len(piece)
                self.counters.bump(f"{fill.source}_bytes", len(piece))
                fill.notify()

            sink = SpoolSink(fd, hasher, have, t.size, written)
            error: MirrorError | None = None
            for origin in self.origins:
                if sink.offset >= t.size:
                    break
                fill.source = origin.name
                try:
                    await origin.fill(t, sink, caller)
                    error = None
                except StorageError:
                    raise  # the spool cannot take more bytes: no origin can help
                except MirrorError as exc:
                    error = exc
                    log.info("origin %s could not complete %s (%s)", origin.name, t.entry.path, exc.message)
                finally:
                    try:
                        await sink.drain()
                    except StorageError:
                        pass  # raised already, or raised by the check below
            offered, sink.offered = sink.offered, None
            if sink.broken is not None or sink.offset < t.size:
                self._discard(offered)
                raise sink.broken or error or UpstreamUnavailable(f"no origin has {t.entry.path}")
            actual = hasher.hexdigest()
            expected = t.identity.split(":", 1)[1]
            judge(self.origins, t.identity, actual == expected)
            if actual != expected:
                self._discard(offered)
                raise HashMismatch(f"{t.key} {t.entry.path}", expected, actual)
            if offered is not None and sum(c.length for c in offered[0]) == t.size:
                fill.prechunked = offered
            else:
                self._discard(offered)
        finally:
            os.close(fd)

    # --- spool bookkeeping -----------------------------------------------------------------

    def _write_meta(self, fill: Fill, *, verified: bool) -> None:
        try:
            write_record(fill.meta, fill.target, verified)
        except OSError as exc:
            raise StorageError(f"cannot write the spool record: {os.strerror(exc.errno or 5)}") from None

    def _relieve(self, exc: StorageError) -> None:
        """A full or failing disk: evict and collect now. A failed bucket write is not
        the disk's fault, and freeing local space would not help it."""
        if isinstance(exc, BucketWriteFailed):
            return
        self.space.forget()
        self.space.relieve()

    def _drop_spool(self, fill: Fill) -> None:
        for p in (fill.spool, fill.meta):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    async def recover(self) -> None:
        """At start: ingest verified spools; resume partial spools of public repos."""
        for meta_path in sorted(self.layout.spool.glob("*.meta")):
            try:
                target, verified = read_record(meta_path)
                spool, expected_meta = self.layout.spool_paths(target.identity)
                if expected_meta != meta_path or not spool.exists():
                    raise ValueError("spool files do not match")
            except (ValueError, KeyError, TypeError, OSError):
                log.warning("removing unreadable spool record %s", meta_path.name)
                for p in (meta_path, meta_path.with_suffix(".part")):
                    p.unlink(missing_ok=True)
                continue
            entry = target.entry
            if verified and spool.stat().st_size == entry.size:
                fill = Fill(target, spool, meta_path)
                try:
                    self._lock_spool(fill)
                except Overloaded:
                    continue  # another process is on it
                fill.written = entry.size
                fill.verified = True
                fill.done.set()
                self._fills.start(target.identity, lambda f=fill: f)  # type: ignore[misc]
                self.scheduler.spawn(self._ingest(fill), name=f"ingest {target.identity[:20]}")
                continue
            if not self.space.room_for(entry.size):
                log.warning("dropping the partial spool of %s %s: not enough free space to resume it", target.key, entry.path)
                for p in (meta_path, spool):
                    p.unlink(missing_ok=True)
                continue
            row = await self.repos.get_repo(target.key)
            # A gated or private repo needs a caller's token: it resumes on the next request.
            if row is not None and not row.private and not row.gated:
                log.info("resuming interrupted fill of %s %s", target.key, entry.path)
                try:
                    self.start(target, ANONYMOUS)
                except (Overloaded, StorageError):
                    pass  # another process owns it, too many fills, or no room: resumed on request
