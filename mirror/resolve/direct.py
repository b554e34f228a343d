"""Direct sources: a file streamed from upstream to one client without caching, for
when the node cannot store it (the data volume is short of space, store/space.py).

Integrity is the same as a fill's: every byte of the whole file goes through the
identity hash (a Range reads the file from its start and drops what lies outside the
range), and the last bytes of the response are held back in memory until the whole
file matches its identity; on a mismatch the client's connection is aborted. Nothing is
written to disk.
"""

from __future__ import annotations

import logging
import re
from typing import AsyncIterator

from mirror.caller import Caller
from mirror.errors import HashMismatch, UpstreamError
from mirror.ingest import identity_hasher
from mirror.model import FileEntry, RepoKey
from mirror.upstream import urls
from mirror.upstream.client import HubClient, UpstreamBody

log = logging.getLogger("mirror.files")

HOLDBACK = 64 << 10
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)", re.ASCII)


class DirectSource:
    kind = "direct"

    def __init__(self, hub: HubClient, key: RepoKey, commit: str, entry: FileEntry, caller: Caller) -> None:
        self.hub = hub
        self.key = key
        self.commit = commit
        self.entry = entry
        self.caller = caller
        self._body: UpstreamBody | None = None

    async def open(self) -> None:
        """Ask upstream for the whole file now, so that a refusal becomes a proper
        error status before the client's headers are sent."""
        body = await self.hub.open_file(urls.resolve(self.key, self.commit, self.entry.path), self.caller.hub_token)
        if body.status != 200 or body.content_length != self.entry.size:
            body.close()
            raise UpstreamError(f"upstream answered {body.status} with {body.content_length} bytes for a file of {self.entry.size}")
        self._body = body

    async def iter(self, start: int, end: int) -> AsyncIterator[bytes | memoryview]:
        if self._body is None:
            await self.open()
        body, self._body = self._body, None
        assert body is not None
        e = self.entry
        hasher = identity_hasher(e.identity, e.size)
        own_tail = end - min(HOLDBACK, end - start)
        held = bytearray()
        pos = 0
        try:
            async for piece in body.iter_chunks():
                if pos + len(piece) > e.size:
                    raise UpstreamError("upstream sent more bytes than the file size")
                hasher.update(piece)
                lo, hi = max(start, pos), min(end, pos + len(piece))
                if lo < hi:
                    out = memoryview(piece)[lo - pos:hi - pos]
                    free = max(0, min(hi, own_tail) - lo)  # bytes before the response's tail
                    if free:
                        yield out[:free]
                    if free < len(out):
                        held += out[free:]
                pos += len(piece)
        finally:
            body.close()
        if pos != e.size:
            raise UpstreamError(f"upstream body ended at {pos} of {e.size} bytes")
        expected = e.identity.split(":", 1)[1]
        if hasher.hexdigest() != expected:
            log.error("integrity: %s %s@%s direct stream does not match %s; aborted", self.key, self.commit[:12], e.path, e.identity)
            raise HashMismatch(f"{self.key} {e.path}", expected, hasher.hexdigest())
        if held:
            yield bytes(held)
