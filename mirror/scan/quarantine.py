"""The quarantine: no byte of a pickle-based file is served before it was scanned, and
no byte of a safetensors file before its header was checked (issue 10 item 7).

`Files` (resolve/files.py) asks two things of it when a file is opened (GET):

- `check(target, caller)`: a content with a recorded verdict that is not clean and
  not released is refused with 403 `FileQuarantined`, before anything is fetched;
- `admit(target, caller, manifest=, fill=)` before a source is handed out: with no
  verdict yet, the content is scanned where it is (view.py), never copied:
  - stored (a manifest): scanned over the chunk store;
  - being fetched (a fill), pickle-based: the first byte waits for the whole file to
    be fetched and verified, then the verified spool is scanned;
  - being fetched, safetensors: only the header is needed, so the fill's first 8 + N
    bytes are checked as soon as they are in the spool and the stream goes on as
    before; the verdict is recorded once the fill verifies (the header read is then
    known to be the content's);
  - no room to fetch it (the uncached direct stream): refused, it cannot be scanned.
  A client waits at most `SCAN_WAIT` seconds (clients give up after 10 s without a
  byte); past that it gets 429 `FileBeingScanned` with a Retry-After estimated from the
  fill's progress (huggingface_hub retries a 429 on its own), and the fetch and scan go
  on for the retry. One scan per content runs at a time, in the node's worker pool
  (never on the event loop), at most `slots` at once (each may hold up to the scan
  budget in memory).

Verdicts are facts of the catalog (`catalog.scans`), per content identity: they survive
restarts, and a CLI release (`mirror quarantine release`) is seen by the daemon at the
next request (only admitted contents are remembered in memory). Every new quarantine,
every refused request and every release is audited.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import posixpath
from concurrent.futures import Executor
from typing import Awaitable, Callable

from mirror.audit.log import AuditLog
from mirror.caller import Caller
from mirror.catalog.quarantine import Scan, ScanCatalog
from mirror.errors import EntryNotFound, MirrorError, Quarantined, ScanPending, StorageError, UpstreamError, UsageError
from mirror.manifest import Manifest
from mirror.resolve.fill import Fill
from mirror.resolve.spool import FillTarget
from mirror.scan import safetensors
from mirror.scan.scanner import PICKLE_SUFFIXES, ScanUnreadable, Verdict, scan_pickle
from mirror.scan.view import ByteView, ManifestView, SpoolView
from mirror.scheduler import Scheduler
from mirror.store.chunkstore import ChunkStore
from mirror.store.leases import LeaseTable

log = logging.getLogger("mirror.quarantine")

# Seconds a request waits for a scan (and the fetch before it) before it is told to retry.
SCAN_WAIT = 8.0
_ADMITTED_MAX = 100_000
# Seconds a scan keeps the spool it read from being ingested away after its verdict.
_HANDOVER = 5.0


def kind_of(path: str) -> str | None:
    """'pickle', 'safetensors' or None (not scanned) for a file path."""
    ext = posixpath.splitext(path)[1].lower()
    if ext in PICKLE_SUFFIXES:
        return "pickle"
    if ext == safetensors.SUFFIX:
        return "safetensors"
    return None


def scanned_suffixes() -> tuple[str, ...]:
    return (*PICKLE_SUFFIXES, safetensors.SUFFIX)


def where(target: FillTarget) -> str:
    return f"{target.key}@{target.commit[:12]}:{target.entry.path}"


class Quarantine:
    def __init__(self, scans: ScanCatalog, store: ChunkStore, leases: LeaseTable, executor: Executor,
                 scheduler: Scheduler, audit: AuditLog, *, enabled: bool, slots: int = 2) -> None:
        self.scans = scans
        self.store = store
        self.leases = leases
        self.executor = executor
        self.scheduler = scheduler
        self.audit = audit
        self.enabled = enabled
        self._slots = asyncio.Semaphore(max(1, slots))
        # Contents known clean or released (a verdict never goes back to quarantine).
        self._admitted: set[str] = set()
        self._tasks: dict[str, asyncio.Task[Verdict]] = {}

    def applies(self, path: str) -> bool:
        return self.enabled and kind_of(path) is not None

    # --- the serve path ---------------------------------------------------------------------

    async def check(self, target: FillTarget, caller: Caller) -> None:
        """Refuse a content whose recorded verdict quarantines it (no scan here)."""
        if not self.applies(target.entry.path) or target.identity in self._admitted:
            return
        scan = await self.scans.get(target.identity)
        if scan is not None:
            self._judge(scan, target, caller)

    async def admit(self, target: FillTarget, caller: Caller, *, manifest: Manifest | None = None,
                    fill: Fill | None = None) -> None:
        """Return when the content may be served; raise Quarantined when it may not,
        ScanPending when the scan needs more time than a client waits."""
        kind = kind_of(target.entry.path)
        if not self.enabled or kind is None or target.identity in self._admitted:
            return
        scan = await self.scans.get(target.identity)
        if scan is not None:
            self._judge(scan, target, caller)
            return
        if manifest is not None:
            task = self._flight(target, lambda: self.scan_stored(target, manifest, caller.actor))
        elif fill is not None:
            task = self._flight(target, lambda: self._scan_fill(target, fill, kind, caller.actor))
        else:
            raise StorageError(f"{target.entry.path} must be scanned before it is served, and the mirror has no "
                               "room to keep it now; retry when space was freed")
        verdict = await self._wait(task, target, fill)
        if not verdict.clean:
            self._refuse(target, verdict.verdict, verdict.findings, verdict.scanner, caller)

    def _judge(self, scan: Scan, target: FillTarget, caller: Caller) -> None:
        if not scan.quarantined:
            self._remember(scan.identity)
            return
        self._refuse(target, scan.verdict, scan.findings, scan.scanner, caller)

    def _refuse(self, target: FillTarget, verdict: str, findings: tuple[str, ...], scanner: str, caller: Caller) -> None:
        self.audit.record(caller.actor, "quarantine.refused", where(target), outcome="denied",
                          identity=target.identity, verdict=verdict)
        found = "; ".join(findings) or "no detail"
        why = f"{scanner} found {found}" if verdict == "unsafe" else f"it could not be scanned ({found})"
        raise Quarantined(f"{target.entry.path} of {target.key}@{target.commit[:12]} is quarantined: {why}; "
                          f"an admin can release it with `mirror quarantine release {target.identity}`")

    async def _wait(self, task: "asyncio.Task[Verdict]", target: FillTarget, fill: Fill | None) -> Verdict:
        loop = asyncio.get_running_loop()
        started, before = loop.time(), fill.written if fill is not None else 0
        try:
            async with asyncio.timeout(SCAN_WAIT):
                return await asyncio.shield(task)
        except TimeoutError:
            retry = 2
            if fill is not None and not fill.verified:
                rate = (fill.written - before) / max(loop.time() - started, 1e-3)
                retry = min(30, max(1, math.ceil((target.size - fill.written) / rate))) if rate > 0 else 5
                done = f"{fill.written * 100 // max(target.size, 1)}% fetched"
            else:
                done = "scanning"
            raise ScanPending(f"{target.entry.path} is scanned before its first serve ({done}); retry in {retry}s",
                              retry_after=retry) from None
        except MirrorError as exc:
            raise _fresh(exc) from None

    def _flight(self, target: FillTarget, make: Callable[[], Awaitable[Verdict]]) -> "asyncio.Task[Verdict]":
        """The running scan of this content, or a new one (a background task: a client
        that stops waiting leaves it running for the next)."""
        ident = target.identity
        task = self._tasks.get(ident)
        if task is None:
            task = self.scheduler.spawn(make(), name=f"scan {ident[:20]}")  # type: ignore[arg-type]
            self._tasks[ident] = task

            def done(t: "asyncio.Task[Verdict]") -> None:
                if self._tasks.get(ident) is t:
                    del self._tasks[ident]
                if not t.cancelled() and t.exception() is not None and not isinstance(t.exception(), MirrorError):
                    log.error("scan of %s crashed", where(target), exc_info=t.exception())

            task.add_done_callback(done)
        return task

    # --- scans ------------------------------------------------------------------------------

    async def scan_stored(self, target: FillTarget, manifest: Manifest, actor: str) -> Verdict:
        """Scan a stored content over the chunk store and record the verdict (also
        `mirror quarantine scan`)."""
        held = self.leases.acquire(c.chunk_id for c in manifest.chunks)  # GC keeps them meanwhile
        try:
            verdict = await self._run(target, lambda: ManifestView(self.store, manifest.chunks, manifest.size))
        finally:
            self.leases.release(held)
        await self._record(target, verdict, actor)
        return verdict

    async def _scan_fill(self, target: FillTarget, fill: Fill, kind: str, actor: str) -> Verdict:
        try:
            # Opened now: the ingest may unlink the spool later, the descriptor still reads it.
            fd = os.open(fill.spool, os.O_RDONLY)
        except FileNotFoundError:
            if fill.error is not None:
                raise _fresh(fill.error) from None
            raise ScanPending(f"{target.entry.path} was just stored; retry", retry_after=1) from None
        # A reader of the spool until shortly after the verdict: the ingest, which drops
        # the spool, waits until the client told to go ahead has opened it.
        fill.add_reader()
        def view() -> SpoolView:  # its own descriptor, closed by the worker when it is done
            return SpoolView(os.dup(fd), target.size)

        try:
            if kind == "safetensors":
                await self._bytes(fill, min(target.size, 8))
                n, _fault = safetensors.header_length(os.pread(fd, 8, 0), target.size)
                await self._bytes(fill, min(target.size, 8 + n))
                verdict = await self._run(target, view)
                # Recorded once the fill verified: the header read is then the content's.
                self.scheduler.spawn(self._confirm(target, fill, verdict, actor), name=f"confirm {target.identity[:20]}")
                return verdict
            await fill.done.wait()
            if not fill.verified:
                raise _failed(fill)
            verdict = await self._run(target, view)
        finally:
            os.close(fd)
            asyncio.get_running_loop().call_later(_HANDOVER, fill.drop_reader)
        await self._record(target, verdict, actor)
        return verdict

    @staticmethod
    async def _bytes(fill: Fill, n: int) -> None:
        await fill.wait_written(n)
        if fill.written < n and not fill.verified:
            raise _failed(fill)

    async def _confirm(self, target: FillTarget, fill: Fill, verdict: Verdict, actor: str) -> None:
        await fill.done.wait()
        if fill.verified:
            await self._record(target, verdict, actor)

    async def _run(self, target: FillTarget, make_view: Callable[[], ByteView]) -> Verdict:
        """The scan of the view `make_view()` gives, in a worker thread. The view is made
        once a slot is free and handed to the worker, which closes it: a scan outlives a
        cancelled waiter (shutdown) without reading a descriptor closed under it."""
        scan: Callable[[ByteView, str], Verdict] = scan_pickle if kind_of(target.entry.path) == "pickle" else _scan_header
        loop = asyncio.get_running_loop()
        async with self._slots:
            view = make_view()
            try:
                return await loop.run_in_executor(self.executor, _scan_and_close, scan, view, target.entry.path)
            except ScanUnreadable as exc:
                if isinstance(exc.cause, MirrorError):
                    raise _fresh(exc.cause) from None
                raise MirrorError(f"cannot read {target.entry.path} to scan it: {exc}") from None

    async def _record(self, target: FillTarget, verdict: Verdict, actor: str) -> None:
        ident = target.identity
        try:
            new = await self.scans.record(ident, verdict.verdict, verdict.findings, verdict.scanner,
                                          repo=str(target.key), commit=target.commit, path=target.entry.path)
        except StorageError as exc:
            log.warning("cannot record the scan of %s (%s); it is scanned again next time", where(target), exc.message)
            return
        if verdict.clean:
            self._remember(ident)
            return
        if new:
            log.warning("quarantined %s (%s): %s %s", where(target), ident, verdict.verdict, "; ".join(verdict.findings))
            self.audit.record(actor, "quarantine.add", where(target), outcome="ok", identity=ident,
                              verdict=verdict.verdict, findings=list(verdict.findings), scanner=verdict.scanner)

    def _remember(self, identity: str) -> None:
        if len(self._admitted) >= _ADMITTED_MAX:
            self._admitted.clear()
        self._admitted.add(identity)

    # --- administration ---------------------------------------------------------------------

    async def lookup(self, text: str) -> Scan:
        """The verdict of a content named by its identity or a unique prefix of it
        (`sha256:ab12...`, or the bare hex)."""
        text = text.strip()
        prefixes = [text] if ":" in text else [f"sha256:{text}", f"sha1:{text}"]
        found: list[Scan] = []
        for p in prefixes:
            found += await self.scans.find(p)
        exact = [s for s in found if s.identity in prefixes]
        if len(exact) == 1:
            return exact[0]
        if not found:
            raise EntryNotFound(f"no scan of a content {text!r} (see `mirror quarantine list --all`)")
        if len(found) > 1:
            raise UsageError(f"{text!r} names more than one scanned content; give more of the identity")
        return found[0]

    async def release(self, text: str, actor: str, reason: str = "") -> Scan:
        scan = await self.lookup(text)
        if not scan.quarantined:
            state = "clean" if scan.verdict == "clean" else f"released by {scan.released_by}"
            raise UsageError(f"{scan.identity} is not quarantined ({state})")
        await self.scans.release(scan.identity, actor, reason)
        self.audit.record(actor, "quarantine.release", f"{scan.repo}@{scan.commit[:12]}:{scan.path}", outcome="ok",
                          identity=scan.identity, verdict=scan.verdict, findings=list(scan.findings), reason=reason)
        released = await self.scans.get(scan.identity)
        assert released is not None
        return released


def _scan_header(view: ByteView, _name: str) -> Verdict:
    return safetensors.scan_safetensors(view)


def _scan_and_close(scan: Callable[[ByteView, str], Verdict], view: ByteView, name: str) -> Verdict:
    try:
        return scan(view, name)
    finally:
        view.close()


def _failed(fill: Fill) -> MirrorError:
    if fill.error is not None:
        return _fresh(fill.error)
    return UpstreamError(f"upstream fetch of {fill.target.entry.path} failed")


def _fresh(err: MirrorError) -> MirrorError:
    """A copy of a shared error for one waiter (same message, status, code, headers)."""
    copy = MirrorError(err.message, **err.headers)
    copy.status, copy.error_code, copy.exit_code = err.status, err.error_code, err.exit_code
    return copy
