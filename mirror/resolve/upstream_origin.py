"""The upstream origin: a file's bytes from the Hub (or its CDN), resumable.

The download loop of a fill: ask for the bytes from `sink.offset` (a Range when some are
held), check the answer (a 206 must carry the exact Content-Range; a 200 to a resume has
its held prefix skipped; a body longer than the file is cut), and resume after a break,
up to `max_resumes` times with backoff. An upstream rate limit (429) is waited out per
its Retry-After: one fill waits for all of its clients, so a storm costs one request per
file per retry (threat U7).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re

from mirror.caller import Caller
from mirror.errors import LocalOnly, Overloaded, UpstreamCannotConnect, UpstreamError, UpstreamUnavailable
from mirror.resolve.origin import Sink
from mirror.resolve.spool import FillTarget
from mirror.upstream import urls
from mirror.upstream.client import HubClient

log = logging.getLogger("mirror.fill")

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)", re.ASCII)


class UpstreamOrigin:
    name = "upstream"

    def __init__(self, hub: HubClient, max_resumes: int) -> None:
        self.hub = hub
        self.max_resumes = max_resumes

    async def fill(self, target: FillTarget, sink: Sink, caller: Caller) -> None:
        if caller.offline:
            raise LocalOnly(f"{target.key} is local-only: this mirror does not ask upstream for it")
        failures = 0
        path = urls.resolve(target.key, target.commit, target.entry.path)
        while sink.offset < target.size:
            try:
                try:
                    await self._fetch_once(target, sink, path, caller)
                finally:
                    await sink.drain()
                if sink.offset >= target.size:
                    return
                raise UpstreamUnavailable("upstream body ended early")
            except (UpstreamUnavailable, UpstreamError, Overloaded) as exc:
                failures += 1
                # No connection and nothing received: fail now, so the waiting client
                # gets a 502 before its timeout instead of a 200 that breaks off.
                if failures > self.max_resumes or (isinstance(exc, UpstreamCannotConnect) and sink.offset == 0):
                    raise
                if isinstance(exc, Overloaded):
                    delay = min(float(exc.headers.get("Retry-After", "1")), 10.0) + random.uniform(0, 0.5)
                else:
                    delay = min(0.1 * 2**failures, 3.0)
                log.info("upstream failed at %d/%d of %s (%s); retrying in %.1fs", sink.offset, target.size, target.entry.path, exc.message, delay)
                await asyncio.sleep(delay)

    def judged(self, identity: str, hash_ok: bool) -> None:
        return None  # upstream's bytes are what the identity is checked against

    async def read_range(self, target: FillTarget, start: int, end: int, caller: Caller) -> bytes:
        """Bytes [start, end) of the file from upstream, as one Range request (the
        chunks no peer could deliver). The caller checks them against chunk ids."""
        if caller.offline:
            raise LocalOnly(f"{target.key} is local-only: this mirror does not ask upstream for it")
        path = urls.resolve(target.key, target.commit, target.entry.path)
        body = await self.hub.open_file(path, caller.hub_token, start=start, end=end)
        try:
            m = _CONTENT_RANGE.fullmatch(body.content_range or "")
            if body.status != 206 or not m or int(m.group(1)) != start or int(m.group(2)) != end - 1 or int(m.group(3)) != target.size:
                raise UpstreamError(f"upstream answered a Range of {target.entry.path} with {body.status} {body.content_range or ''}")
            parts: list[bytes] = []
            got = 0
            async for data in body.iter_chunks():
                got += len(data)
                if got > end - start:
                    raise UpstreamError("upstream sent more than the Range asked")
                parts.append(data)
            if got != end - start:
                raise UpstreamUnavailable("upstream Range body ended early")
            return b"".join(parts)
        finally:
            body.close()

    async def _fetch_once(self, target: FillTarget, sink: Sink, path: str, caller: Caller) -> None:
        start = sink.offset
        body = await self.hub.open_file(path, caller.hub_token, start=start)
        try:
            skip = 0
            if start and body.status == 206:
                m = _CONTENT_RANGE.fullmatch(body.content_range or "")
                if not m or int(m.group(1)) != start or int(m.group(3)) != target.size:
                    raise UpstreamError("upstream answered a resume with a wrong Content-Range")
            elif body.status == 200:
                skip = start  # Range ignored: drop the prefix we already hold
                # A whole-file answer must say its length, and it must be the listed size:
                # an error page sent with 200 (a portal, a proxy) never reaches the spool.
                if body.content_length != target.size:
                    raise UpstreamError(f"upstream answered 200 with {body.content_length} bytes for a file of {target.size}")
            else:
                raise UpstreamError(f"upstream answered {body.status} to a file request")
            async for data in body.iter_chunks():
                if skip:
                    if len(data) <= skip:
                        skip -= len(data)
                        continue
                    data = data[skip:]
                    skip = 0
                await sink.write(data)
        finally:
            body.close()
