"""Cache fills: one upstream fetch per file identity, however many clients ask.

A `Fill` downloads one file content into a spool file while any number of clients
stream it *from the spool* behind the writer (followers read from disk, never from a
shared RAM queue, so slow clients cost no memory). The fetch runs as a task owned by the
`Fetcher`, shielded from every client: the first client going away does not stop it.

Integrity (threat-model T1, U1-U3): bytes are hashed as they arrive; the last
`HOLDBACK` bytes are withheld from followers until the whole file matches its upstream
identity (sha256 for LFS, git blob sha1 otherwise). On a mismatch every follower gets an
error (the edge aborts the connection), the spool is deleted and nothing is kept. A body
that breaks off is resumed from the spool's length with a Range request; a 200 answer to
that Range has its already-spooled prefix skipped; a body longer than declared is cut.
After verification the spool is ingested into the chunk store in the background.

Spool files survive a restart: `Fetcher.recover` ingests verified spools and resumes
partial ones of public repos (their hash state is rebuilt by re-reading the prefix).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import random
import re
from pathlib import Path
from typing import AsyncIterator, Coroutine

from mirror import crashpoints
from mirror.catalog import Catalog
from mirror.config import Config
from mirror.errors import HashMismatch, MirrorError, Overloaded, UpstreamCannotConnect, UpstreamError, UpstreamUnavailable
from mirror.ingest import Ingestor, identity_hasher
from mirror.resolve.spool import FillTarget, SpoolWriter, fsync_path, hash_prefix, read_record, write_record
from mirror.store.layout import Layout
from mirror.upstream import urls
from mirror.upstream.client import HubClient

log = logging.getLogger("mirror.fill")

HOLDBACK = 64 << 10
PIECE = 1 << 20
INGEST_WAIT = 600.0  # seconds an ingest waits for the fill's readers to finish
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)", re.ASCII)


class Fill:
    def __init__(self, target: FillTarget, spool: Path, meta: Path) -> None:
        self.target = target
        self.spool = spool
        self.meta = meta
        self.written = 0
        self.verified = False
        self.error: MirrorError | None = None
        self.done = asyncio.Event()
        self.ingested = asyncio.Event()
        self._changed = asyncio.Event()
        self.lock_fd: int | None = None
        # The newest written piece, kept by reference so that followers which are caught
        # up take it from memory instead of reading it back from the spool.
        self.recent_offset = 0
        self.recent: bytes = b""
        # Clients streaming from this fill; the ingest waits for them (it would compete
        # with them for the CPU), up to INGEST_WAIT.
        self.readers = 0
        self.no_readers = asyncio.Event()
        self.no_readers.set()

    @property
    def size(self) -> int:
        return self.target.size

    def readable(self) -> int:
        """Bytes a follower may read now: all once verified, else all but the tail."""
        if self.verified:
            return self.size
        return min(self.written, max(0, self.size - HOLDBACK))

    async def wait_started(self, timeout: float) -> None:
        """Wait until the first bytes arrived, the fill ended, or `timeout` passed: an
        upstream that fails at once is then answered with a proper error status instead
        of a 200 whose body breaks off."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.written and not self.done.is_set() and not self.verified:
            left = deadline - loop.time()
            if left <= 0:
                return
            changed = self._changed
            try:
                async with asyncio.timeout(left):
                    await changed.wait()
            except TimeoutError:
                return

    def notify(self) -> None:
        ev, self._changed = self._changed, asyncio.Event()
        ev.set()

    async def stream(self, start: int, end: int) -> AsyncIterator[bytes | memoryview]:
        """Yield bytes [start, end) of the file as the fill makes them available."""
        loop = asyncio.get_running_loop()
        fd = os.open(self.spool, os.O_RDONLY)
        self.readers += 1
        self.no_readers.clear()
        try:
            pos = start
            while pos < end:
                if self.error is not None:
                    raise UpstreamError(f"upstream fetch failed: {self.error.message}")
                limit = min(self.readable(), end)
                if pos < limit:
                    rel = pos - self.recent_offset
                    if 0 <= rel < len(self.recent):
                        hi = min(len(self.recent), limit - self.recent_offset)
                        view = memoryview(self.recent)[rel:hi]
                        pos += len(view)
                        yield view  # type: ignore[misc]
                        continue
                    n = min(limit - pos, PIECE)
                    data = await loop.run_in_executor(None, os.pread, fd, n, pos)
                    if not data:
                        raise UpstreamError("spool shrank under a reader")
                    pos += len(data)
                    yield data
                    continue
                if self.done.is_set() and not self.verified:
                    raise UpstreamError("upstream fetch failed")
                changed = self._changed
                try:
                    async with asyncio.timeout(30):  # a safety net: every change notifies
                        await changed.wait()
                except TimeoutError:
                    continue
        finally:
            os.close(fd)
            self.readers -= 1
            if not self.readers:
                self.no_readers.set()


class Fetcher:
    def __init__(self, hub: HubClient, ingestor: Ingestor, catalog: Catalog, layout: Layout, config: Config) -> None:
        self.hub = hub
        self.ingestor = ingestor
        self.catalog = catalog
        self.layout = layout
        self.config = config
        self._fills: dict[str, Fill] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def active(self, identity: str) -> Fill | None:
        return self._fills.get(identity)

    def start(self, target: FillTarget, token: str | None) -> Fill:
        """Return the fill for this content, starting one if none runs."""
        fill = self._fills.get(target.identity)
        if fill is not None and not (fill.done.is_set() and not fill.verified):
            return fill
        running = sum(1 for f in self._fills.values() if not f.done.is_set())
        if running >= self.config.server.max_cold_fetches:
            raise Overloaded("mirror is busy filling its cache; retry shortly", retry_after=2)
        spool, meta = self.layout.spool_paths(target.identity)
        fill = Fill(target, spool, meta)
        self._lock_spool(fill)
        self._fills[target.identity] = fill
        self._spawn(self._run(fill, token))
        return fill

    def _lock_spool(self, fill: Fill) -> None:
        """Create the spool (so followers can open it before the task first runs) and
        hold an exclusive flock on it for the fill's lifetime: a CLI sync and the daemon
        on one data directory never write the same spool at once."""
        fd = os.open(fill.spool, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Overloaded("this file is being fetched by another mirror process; retry shortly", retry_after=2) from None
        fill.lock_fd = fd

    @staticmethod
    def _unlock_spool(fill: Fill) -> None:
        if fill.lock_fd is not None:
            os.close(fill.lock_fd)
            fill.lock_fd = None

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    # --- the fetch -----------------------------------------------------------------------

    async def _run(self, fill: Fill, token: str | None) -> None:
        t = fill.target
        started = asyncio.get_running_loop().time()
        try:
            self._write_meta(fill, verified=False)
            await self._download(fill, token)
            took = asyncio.get_running_loop().time() - started
            log.info("fetched %s %s: %d bytes in %.2fs (%.0f MB/s)", t.key, t.entry.path, t.size, took, t.size / max(took, 1e-6) / 1e6)
            # Verified: release the held-back tail to every follower now; the spool's
            # durability matters only to the ingest, so its fsync runs after.
            fill.verified = True
            fill.notify()
            await asyncio.get_running_loop().run_in_executor(None, fsync_path, fill.spool)
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
            else:
                log.warning("fill of %s %s failed: %s", t.key, t.entry.path, exc.message)
            fill.notify()
            fill.done.set()
            self._fills.pop(t.identity, None)
            self._unlock_spool(fill)
            return
        except Exception as exc:  # an unexpected bug: fail the fill, keep the daemon
            log.exception("fill of %s %s crashed", t.key, t.entry.path)
            fill.error = UpstreamError(f"internal error during fill: {type(exc).__name__}")
            fill.notify()
            fill.done.set()
            self._fills.pop(t.identity, None)
            self._unlock_spool(fill)
            return
        fill.done.set()
        try:
            async with asyncio.timeout(INGEST_WAIT):
                await fill.no_readers.wait()
        except TimeoutError:
            pass
        await self._ingest(fill)

    async def _ingest(self, fill: Fill) -> None:
        t = fill.target
        try:
            await self.ingestor.ingest_path(fill.spool, t.identity, verified=True)
            crashpoints.hit("fill.ingested")
            self._drop_spool(fill)
        except Exception:
            log.exception("ingest of %s failed; the verified spool is kept and retried at start", t.identity)
        finally:
            self._unlock_spool(fill)
            fill.ingested.set()
            if self._fills.get(t.identity) is fill:
                self._fills.pop(t.identity, None)

    async def _download(self, fill: Fill, token: str | None) -> None:
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
            failures = 0
            path = urls.resolve(t.key, t.commit, t.entry.path)
            while fill.written < t.size:
                try:
                    await self._fetch_once(fill, fd, hasher, path, token)
                    if fill.written >= t.size:
                        break
                    raise UpstreamUnavailable("upstream body ended early")
                except (UpstreamUnavailable, UpstreamError, Overloaded) as exc:
                    failures += 1
                    # No connection and nothing received: fail now, so the waiting client
                    # gets a 502 before its timeout instead of a 200 that breaks off.
                    if failures > self.config.upstream.max_resumes or (isinstance(exc, UpstreamCannotConnect) and not fill.written):
                        raise
                    if isinstance(exc, Overloaded):
                        # Upstream rate limit: this one fill waits for all of its clients,
                        # so a storm costs one request per file per retry (threat U7).
                        delay = min(float(exc.headers.get("Retry-After", "1")), 10.0) + random.uniform(0, 0.5)
                    else:
                        delay = min(0.1 * 2**failures, 3.0)
                    log.info("upstream failed at %d/%d of %s (%s); retrying in %.1fs", fill.written, t.size, t.entry.path, exc.message, delay)
                    await asyncio.sleep(delay)
            actual = hasher.hexdigest()
            expected = t.identity.split(":", 1)[1]
            if actual != expected:
                raise HashMismatch(f"{t.key} {t.entry.path}", expected, actual)
        finally:
            os.close(fd)

    async def _fetch_once(self, fill: Fill, fd: int, hasher: "object", path: str, token: str | None) -> None:
        t = fill.target
        start = fill.written
        body = await self.hub.open_file(path, token, start=start)
        try:
            skip = 0
            if start and body.status == 206:
                m = _CONTENT_RANGE.fullmatch(body.content_range or "")
                if not m or int(m.group(1)) != start or int(m.group(3)) != t.size:
                    raise UpstreamError("upstream answered a resume with a wrong Content-Range")
            elif body.status == 200:
                skip = start  # Range ignored: drop the prefix we already hold
                if body.content_length is not None and body.content_length != t.size:
                    raise UpstreamError(f"upstream size {body.content_length} differs from listed size {t.size}")
            else:
                raise UpstreamError(f"upstream answered {body.status} to a file request")
            def written(offset: int, piece: bytes) -> None:
                fill.recent_offset, fill.recent = offset, piece
                fill.written = offset + len(piece)
                self.catalog.meta.bump("upstream_bytes", len(piece))
                fill.notify()

            # Reads stay on the loop; hashing and writing run on the spool thread.
            writer = SpoolWriter(fd, hasher, fill.written, written)
            try:
                async for data in body.iter_chunks():
                    if skip:
                        if len(data) <= skip:
                            skip -= len(data)
                            continue
                        data = data[skip:]
                        skip = 0
                    if writer.offset + len(data) > t.size:
                        raise UpstreamError("upstream sent more bytes than the file size")
                    await writer.submit(data)
            finally:
                # Bytes received before a break are good: keep them, resume after them.
                await writer.drain()
        finally:
            body.close()

    # --- spool bookkeeping -----------------------------------------------------------------

    def _write_meta(self, fill: Fill, *, verified: bool) -> None:
        write_record(fill.meta, fill.target, verified)

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
                self._fills[target.identity] = fill
                self._spawn(self._ingest(fill))
                continue
            row = await self.catalog.repos.get_repo(target.key)
            # A gated or private repo needs a caller's token: it resumes on the next request.
            if row is not None and not row.private and not row.gated:
                log.info("resuming interrupted fill of %s %s", target.key, entry.path)
                try:
                    self.start(target, None)
                except Overloaded:
                    pass  # another process owns it, or too many fills: resumed on request
