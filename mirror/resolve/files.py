"""Files: locate a file of a revision, and open its bytes from the best source.

Sources, best first: the chunk store (a manifest whose chunks are all present), then a
fill (resolve/fill.py), running or started now, which streams from its spool behind the
hold-back; when the data volume has no room for a fill, a direct stream from upstream
that is verified the same way but not kept (resolve/direct.py). A Range on a file that is not stored is served from that fill too: every byte
a client gets is either verified content or fill bytes behind the hold-back, never a
byte from upstream that a later check could reject (threat-model U1; a client that
resumes with Range cannot stitch a wrong file), and a resume during a running fill
costs upstream nothing more.

Files of scanned kinds (pickle-based weights, safetensors) pass the `Quarantine`
(scan/quarantine.py) in `open`: a content already quarantined is refused before any
fetch, one without a verdict is scanned where it is before any source is handed out.
`locate` (and so HEAD) is left alone: metadata is harmless, and huggingface_hub reports
a refused GET as the mirror's 403 error while it reports a refused HEAD as a
connection problem.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable, Protocol, Sequence

from mirror.caller import Caller
from mirror.catalog.content import ContentCatalog
from mirror.catalog.meta import MetaCatalog
from mirror.clock import Clock
from mirror.errors import BucketUnavailable, ChunkMissing, CorruptChunk, EntryNotFound, MirrorError, StorageError
from mirror.manifest import Manifest
from mirror.model import FileEntry, RepoKey
from mirror.resolve.access import Access
from mirror.resolve.direct import DirectSource
from mirror.resolve.fetcher import Fetcher
from mirror.resolve.fill import Fill, FillTarget
from mirror.resolve.metadata import Metadata, Resolved
from mirror.resolve.origin import Origin
from mirror.scan.quarantine import Quarantine
from mirror.store.chunkstore import ChunkStore
from mirror.store.reader import ChunkReader

log = logging.getLogger("mirror.files")

# Seconds a "all chunks present" answer for a manifest is trusted.
_PRESENT_TTL = 5.0
# Seconds a cold request waits for the fill's first bytes before sending its headers
# (clients give up after 10 s without a byte).
_FIRST_BYTE_WAIT = 8.0


def _replay(err: MirrorError) -> MirrorError:
    """A fresh error with the same message, status, code and headers, for each waiter."""
    copy = MirrorError(err.message, **err.headers)
    copy.status, copy.error_code, copy.exit_code = err.status, err.error_code, err.exit_code
    return copy


class Source(Protocol):
    kind: str

    def iter(self, start: int, end: int) -> AsyncIterator[bytes | memoryview]:
        """Bytes [start, end) of the file; raises MirrorError if they cannot be had."""


@dataclass
class StoreSource:
    manifest: Manifest
    reader: ChunkReader
    on_missing: Callable[[str, MirrorError], Awaitable[None]]
    # When a bucket behind the store stops answering, the client's stream goes on from
    # the other origins (peers, upstream), uncached; None: the error ends the stream.
    fallback: Callable[[], DirectSource] | None = None
    kind: str = "store"

    async def iter(self, start: int, end: int) -> AsyncIterator[bytes | memoryview]:
        pos = start
        try:
            async for piece in self.reader.iter_range(self.manifest.chunks, start, end):
                pos += len(piece)
                yield piece
        except (ChunkMissing, CorruptChunk) as exc:
            # Collected, evicted or rotten under us: the next request fetches again.
            await self.on_missing(self.manifest.identity, exc)
            raise
        except BucketUnavailable as exc:
            if self.fallback is None:
                raise
            log.warning("%s; going on with %s from other origins uncached", exc.message, self.manifest.identity)
            async for piece in self.fallback().iter(pos, end):
                yield piece


@dataclass
class FillSource:
    fill: Fill
    # When the fill stops for lack of space, the client's stream goes on from upstream.
    fallback: Callable[[], DirectSource]
    kind: str = "fill"

    async def iter(self, start: int, end: int) -> AsyncIterator[bytes | memoryview]:
        pos = start
        try:
            async for piece in self.fill.stream(start, end):
                pos += len(piece)
                yield piece
        except StorageError as exc:
            log.warning("%s; going on with %s from upstream uncached", exc.message, self.fill.target.entry.path)
            async for piece in self.fallback().iter(pos, end):
                yield piece


class Files:
    def __init__(
        self,
        metadata: Metadata,
        access: Access,
        fetcher: Fetcher,
        content: ContentCatalog,
        usage: MetaCatalog,
        store: ChunkStore,
        reader: ChunkReader,
        origins: Sequence[Origin],
        clock: Clock,
        quarantine: Quarantine | None = None,
    ) -> None:
        """`origins` feed the direct streams of files the node cannot store now (the
        fills of `fetcher` are fed by the same list); `quarantine` (None: nothing is
        scanned) admits the files that must be scanned before they are served."""
        self.metadata = metadata
        self.access = access
        self.fetcher = fetcher
        self.content = content
        self.usage = usage
        self.store = store
        self.reader = reader
        self.origins = origins
        self.clock = clock
        self.quarantine = quarantine
        self._present: dict[str, float] = {}

    async def locate(self, key: RepoKey, revision: str, path: str, caller: Caller) -> tuple[Resolved, FileEntry]:
        res, _info = await self.metadata.resolve(key, revision, caller)
        entry = await self.metadata.entry(res, path, caller)
        if entry is None or entry.kind != "file":
            raise EntryNotFound(f"{path} does not exist in {key} at {res.commit[:12]}", **{"X-Repo-Commit": res.commit})
        await self.access.check(key, res.repo, res.commit, caller, probe_path=path)
        return res, entry

    async def open(self, res: Resolved, entry: FileEntry, caller: Caller) -> Source:
        """The best source of the file's bytes (any range of them)."""
        self.usage.touch(res.repo, res.commit)
        target = FillTarget(res.key, res.commit, entry)
        if self.quarantine is not None:
            await self.quarantine.check(target, caller)  # known quarantined: refused before any fetch
        man = await self.stored_manifest(entry.identity)
        if man is not None:
            await self._admit(target, caller, manifest=man)
            return StoreSource(man, self.reader, self.forget, lambda: DirectSource(self.origins, target, caller))
        try:
            # The running (or verified) fill of this content, or a new one.
            fill = self.fetcher.start(target, caller)
        except StorageError as exc:
            await self._admit(target, caller)  # a content never scanned cannot go uncached
            return await self._direct(res, entry, caller, exc)
        await self._admit(target, caller, fill=fill)
        if fill.ingested.is_set():  # stored (and its spool dropped) while it was scanned
            man = await self.stored_manifest(entry.identity)
            if man is not None:
                return StoreSource(man, self.reader, self.forget)
        if not fill.written and not fill.verified:
            await fill.wait_started(_FIRST_BYTE_WAIT)
            if isinstance(fill.error, StorageError) and not fill.written:
                return await self._direct(res, entry, caller, fill.error)
            if fill.error is not None and not fill.written:
                raise _replay(fill.error)
        return FillSource(fill, lambda: DirectSource(self.origins, target, caller))

    async def _admit(self, target: FillTarget, caller: Caller, *, manifest: Manifest | None = None,
                     fill: Fill | None = None) -> None:
        """Raise unless the quarantine lets this content be served (scanning it first
        from the store or the fill when it has no verdict yet)."""
        if self.quarantine is not None:
            await self.quarantine.admit(target, caller, manifest=manifest, fill=fill)

    async def _direct(self, res: Resolved, entry: FileEntry, caller: Caller, why: StorageError) -> DirectSource:
        """The node cannot store this file now: stream it to this client uncached."""
        log.warning("%s; streaming %s %s from upstream uncached", why.message, res.key, entry.path)
        direct = DirectSource(self.origins, FillTarget(res.key, res.commit, entry), caller)
        await direct.open()
        return direct

    async def forget(self, identity: str, cause: MirrorError | None = None) -> None:
        """Stop trusting the stored copy of a content; a rotten chunk is quarantined
        (threat-model C6) before the reader's error reaches its client, so a retry
        fetches the file again and never meets the rotten frame."""
        if isinstance(cause, CorruptChunk):
            log.error("integrity: %s; quarantined, %s will be fetched again", cause.message, identity)
            # Off the event loop: with a bucket behind the store this is network calls.
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.store.quarantine, cause.chunk_id)
            except (MirrorError, OSError, ValueError) as exc:
                log.warning("cannot quarantine a rotten chunk: %s", getattr(exc, "message", exc))
        self._present.pop(identity, None)
        self.content.forget(identity)

    async def stored_manifest(self, identity: str) -> Manifest | None:
        man = await self.content.get_manifest(identity)
        if man is None:
            return None
        # One stat per chunk is thousands for a big file: remember a good answer briefly.
        seen = self._present.get(identity)
        if seen is not None and self.clock.monotonic() - seen < _PRESENT_TTL:
            return man
        chunk_ids = [c.chunk_id for c in man.chunks]
        loop = asyncio.get_running_loop()
        present = await loop.run_in_executor(None, lambda: all(self.store.servable(c) for c in chunk_ids))
        if present:
            if len(self._present) > 10_000:
                self._present.clear()
            self._present[identity] = self.clock.monotonic()
        if not present:
            # Evicted or lost chunks: forget the manifest so the file is fetched again.
            log.warning("manifest %s has missing chunks; refetching", identity)
            self.content.forget(identity)
            return None
        return man
