"""A durable backend behind a bounded local cache: the chunk store of `[store] backend = "s3"`.

`CachedBackend(durable, local, limit)` is a `ChunkBackend` (store/backend.py) whose truth
is `durable` (the bucket, store/s3backend.py) and which keeps copies of chunks in `local`
(the data dir's chunks/, store/localfs.py), at most `limit` bytes of them:

- get: the local copy when there is one; else one ranged GET from the bucket (no HEAD
  first), and a local copy is kept when the whole object came back.
- vouches_for (CachingBackend): a local copy, or a bucket not known to be down: no
  request, so checking that a stored file's chunks are there before serving it (the
  Files layer) costs no HEAD per uncached chunk. A chunk found missing by the read
  anyway fails that read like any missing chunk (the file is fetched again).
- stat: the local copy's, else the bucket's (one HEAD). A bucket that cannot be reached
  answers None: nothing is readable there now, so a reader falls back to other origins
  (peers, upstream) and the daemon keeps serving what it has locally. The client logs
  the outage once (mirror/s3/client.py).
- put: to the bucket first (create-only; StorageError when it cannot be written, and
  nothing is kept locally), then a local copy. A put that finds the chunk stored (False)
  keeps no copy: the stored frame is the bucket's, read on the next get.
- delete: both copies; list: the bucket's.
- drop_cached: the local copy only; cached_ids: the chunks with a local copy (`CachingBackend`: ChunkStore.quarantine keeps a
  good bucket copy when only the local one was damaged).

Eviction: least recently used local copies go when the copies pass `limit` (a get or a
put makes a copy recent). The order lives in memory; it is built on first use from the
files' access times (walking chunks/ once). Copies other processes add (a CLI command on
the same data dir) are counted once this process reads them. A local copy is a cache,
written like every chunk file (atomic and durable, store/fsio.py) so that no torn copy
survives a crash; evicting one needs no fsync.

Not a `FileBackend`: chunks are read with pread, never sent with sendfile, since an
eviction may remove a file between the look-up and the send.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from typing import Iterator

from mirror.errors import BucketUnavailable, ChunkMissing, StorageError
from mirror.store.backend import ChunkStat
from mirror.store.localfs import LocalBackend
from mirror.store.s3backend import S3Backend

log = logging.getLogger("mirror.store")


class CachedBackend:
    def __init__(self, durable: S3Backend, local: LocalBackend, limit: int) -> None:
        self.durable = durable
        self.local = local
        self.limit = limit
        self._lru: OrderedDict[str, int] | None = None  # cid -> bytes, least recent first
        self._bytes = 0
        self._lock = threading.Lock()
        self._keep_failing = False

    def __repr__(self) -> str:
        return f"CachedBackend({self.durable!r}, cache {self.local.layout.chunks}, limit {self.limit})"

    # --- ChunkBackend -----------------------------------------------------------------

    def vouches_for(self, cid: str) -> bool:
        return self.local.stat(cid) is not None or self.durable.client.reachable()

    def stat(self, cid: str) -> ChunkStat | None:
        st = self.local.stat(cid)
        if st is not None:
            return st
        try:
            return self.durable.stat(cid)
        except BucketUnavailable:
            return None

    def get(self, cid: str, offset: int = 0, length: int | None = None) -> bytes:
        st = self.local.stat(cid)
        if st is not None:
            n = max(0, st.size - offset) if length is None else max(0, min(length, st.size - offset))
            try:
                data = self.local.get(cid, offset, n)
            except ChunkMissing:
                pass  # evicted since the stat
            else:
                self._touch(cid, st.size)
                return data
        got = self.durable.read(cid, offset, length)
        if offset == 0 and len(got.data) == got.size:
            self._keep(cid, got.data)
        return got.data

    def put(self, cid: str, frame: bytes | memoryview) -> bool:
        new = self.durable.put(cid, frame)
        if new:
            self._keep(cid, frame)
        return new

    def delete(self, cid: str) -> bool:
        gone = self.durable.delete(cid)
        return self.drop_cached(cid) or gone

    def list(self) -> Iterator[str]:
        return self.durable.list()

    # --- CachingBackend ---------------------------------------------------------------

    def drop_cached(self, cid: str) -> bool:
        """Remove the local copy only; True if there was one."""
        with self._lock:
            if self._lru is not None:
                self._bytes -= self._lru.pop(cid, 0)
        return self.local.remove(cid)

    def cached_ids(self) -> Iterator[str]:
        return self.local.list()

    def cached_bytes(self) -> int:
        with self._lock:
            self._load()
            return self._bytes

    # --- the cache --------------------------------------------------------------------

    def _keep(self, cid: str, frame: bytes | memoryview) -> None:
        try:
            self.local.put(cid, frame)
        except StorageError as exc:
            # The bucket holds the chunk; a full or failing local disk only costs reads.
            if not self._keep_failing:
                log.warning("cannot keep a local copy of chunk %s: %s", cid[:16], exc.message)
            self._keep_failing = True
            return
        self._keep_failing = False
        self._touch(cid, len(frame))

    def _touch(self, cid: str, size: int) -> None:
        victims: list[str] = []
        with self._lock:
            lru = self._load()
            if cid in lru:
                lru.move_to_end(cid)
            else:
                lru[cid] = size
                self._bytes += size
            while self._bytes > self.limit and len(lru) > 1:
                old, n = lru.popitem(last=False)  # never `cid`: it is the most recent
                self._bytes -= n
                victims.append(old)
        for old in victims:
            self.local.remove(old)

    def _load(self) -> OrderedDict[str, int]:
        """The index of local copies, built on first use (called with the lock held)."""
        if self._lru is None:
            found: list[tuple[float, str, int]] = []
            for cid in self.local.list():
                try:
                    st = os.stat(self.local.layout.chunk_path(cid))
                except FileNotFoundError:
                    continue
                found.append((max(st.st_atime, st.st_mtime), cid, st.st_size))
            found.sort()
            self._lru = OrderedDict((cid, size) for _t, cid, size in found)
            self._bytes = sum(size for _t, _c, size in found)
        return self._lru
