"""Files: locate a file of a revision, and open its bytes from the best source.

Sources, best first: the chunk store (a manifest whose chunks are all present), a fill
in progress or verified (read from its spool), a new fill. A Range on a file that is not
cached is answered by upstream for that range, while a whole-file fill proceeds in the
background when `cache.fill_on_range` is on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Protocol

from mirror.catalog import Catalog
from mirror.config import Config
from mirror.errors import ChunkMissing, CorruptChunk, EntryNotFound, MirrorError, UpstreamError
from mirror.manifest import Manifest
from mirror.model import FileEntry, RepoKey
from mirror.resolve.access import Access
from mirror.resolve.fill import Fetcher, Fill, FillTarget
from mirror.resolve.metadata import Metadata, Resolved
from mirror.store.chunkstore import ChunkStore
from mirror.store.reader import ChunkReader
from mirror.upstream import urls
from mirror.upstream.client import HubClient

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
    on_missing: Callable[[str, MirrorError], None]
    kind: str = "store"

    async def iter(self, start: int, end: int) -> AsyncIterator[bytes | memoryview]:
        try:
            async for piece in self.reader.iter_range(self.manifest.chunks, start, end):
                yield piece
        except (ChunkMissing, CorruptChunk) as exc:
            # Collected, evicted or rotten under us: the next request fetches again.
            self.on_missing(self.manifest.identity, exc)
            raise


@dataclass
class FillSource:
    fill: Fill
    kind: str = "fill"

    def iter(self, start: int, end: int) -> AsyncIterator[bytes | memoryview]:
        return self.fill.stream(start, end)


@dataclass
class UpstreamRangeSource:
    hub: HubClient
    path: str
    token: str | None
    size: int
    kind: str = "upstream-range"

    async def iter(self, start: int, end: int) -> AsyncIterator[bytes | memoryview]:
        body = await self.hub.open_file(self.path, self.token, start, end)
        try:
            if body.status == 206:
                skip = 0
            elif body.status == 200:
                skip = start  # upstream ignored the Range: slice it ourselves
            else:
                raise UpstreamError(f"upstream answered {body.status} to a range request")
            want = end - start
            async for piece in body.iter_chunks():
                if skip:
                    if len(piece) <= skip:
                        skip -= len(piece)
                        continue
                    piece, skip = piece[skip:], 0
                piece = piece[:want]
                want -= len(piece)
                yield piece
                if want <= 0:
                    return
            if want > 0:
                raise UpstreamError("upstream range body ended early")
        finally:
            body.close()


class Files:
    def __init__(
        self,
        metadata: Metadata,
        access: Access,
        fetcher: Fetcher,
        catalog: Catalog,
        store: ChunkStore,
        reader: ChunkReader,
        hub: HubClient,
        config: Config,
    ) -> None:
        self.metadata = metadata
        self.access = access
        self.fetcher = fetcher
        self.catalog = catalog
        self.store = store
        self.reader = reader
        self.hub = hub
        self.config = config
        self._present: dict[str, float] = {}

    async def locate(self, key: RepoKey, revision: str, path: str, token: str | None) -> tuple[Resolved, FileEntry]:
        res, _info = await self.metadata.resolve(key, revision, token)
        entry = await self.metadata.entry(res, path, token)
        if entry is None or entry.kind != "file":
            raise EntryNotFound(f"{path} does not exist in {key} at {res.commit[:12]}", **{"X-Repo-Commit": res.commit})
        await self.access.check(key, res.repo, res.commit, token, probe_path=path)
        return res, entry

    async def open(self, res: Resolved, entry: FileEntry, token: str | None, byte_range: tuple[int, int] | None) -> Source:
        self.catalog.meta.touch(res.repo, res.commit)
        man = await self.stored_manifest(entry.identity)
        if man is not None:
            return StoreSource(man, self.reader, self.forget)
        fill = self.fetcher.active(entry.identity)
        target = FillTarget(res.key, res.commit, entry)
        if byte_range is not None and (fill is None or fill.readable() < byte_range[1]):
            if self.config.cache.fill_on_range and fill is None:
                try:
                    self.fetcher.start(target, token)
                except MirrorError as exc:
                    log.info("background fill not started: %s", exc.message)
            return UpstreamRangeSource(self.hub, urls.resolve(res.key, res.commit, entry.path), token, entry.size)
        if fill is None:
            fill = self.fetcher.start(target, token)
        if not fill.written and not fill.verified:
            await fill.wait_started(_FIRST_BYTE_WAIT)
            if fill.error is not None and not fill.written:
                raise _replay(fill.error)
        return FillSource(fill)

    def forget(self, identity: str, cause: MirrorError | None = None) -> None:
        """Stop trusting the stored copy of a content; a rotten chunk is quarantined
        (threat-model C6), so the next request fetches the file again."""
        self._present.pop(identity, None)
        self.catalog.content.forget(identity)
        if isinstance(cause, CorruptChunk):
            log.error("integrity: %s; quarantined, %s will be fetched again", cause.message, identity)
            self.store.quarantine(cause.chunk_id)

    async def stored_manifest(self, identity: str) -> Manifest | None:
        man = await self.catalog.content.get_manifest(identity)
        if man is None:
            return None
        # One stat per chunk is thousands for a big file: remember a good answer briefly.
        seen = self._present.get(identity)
        if seen is not None and time.monotonic() - seen < _PRESENT_TTL:
            return man
        chunk_ids = [c.chunk_id for c in man.chunks]
        loop = asyncio.get_running_loop()
        present = await loop.run_in_executor(None, lambda: all(self.store.has(c) for c in chunk_ids))
        if present:
            if len(self._present) > 10_000:
                self._present.clear()
            self._present[identity] = time.monotonic()
        if not present:
            # Evicted or lost chunks: forget the manifest so the file is fetched again.
            log.warning("manifest %s has missing chunks; refetching", identity)
            self.catalog.content.forget(identity)
            return None
        return man
