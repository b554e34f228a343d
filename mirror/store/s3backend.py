"""The chunk backend on a bucket: one object per chunk (mirror/s3/layout.py names them).

`S3Backend` implements the five `ChunkBackend` methods (store/backend.py) on an
`S3Client`, and passes tests/test_backend_conformance.py like the local backend:

- `put` is a create-only PUT (If-None-Match: *): concurrent writers of one id, in this
  process or on other nodes sharing the bucket, store it once and never replace it. An
  object is visible whole or not at all. The first put checks (and writes) the bucket's
  FORMAT marker: a bucket of a newer format is never written to.
- `get` is one ranged GET (no HEAD first); `stat` one HEAD; `list` pages a LIST of
  `chunks/`; `delete` is a HEAD (to answer whether it was stored) and a DELETE.
- Errors: an unreachable or failing bucket raises BucketUnavailable on reads and
  StorageError on writes (mirror/s3/client.py); an absent chunk is ChunkMissing from
  `get`, None from `stat`.

`read` is `get` with the object's whole size, for the cache in front of it
(store/cached.py), which keeps a local copy only of whole objects.
"""

from __future__ import annotations

import threading
from typing import Iterator

from mirror.errors import BucketUnavailable, BucketWriteFailed, ChunkMissing, ConfigError
from mirror.s3.client import Read, S3Client
from mirror.s3.layout import CHUNKS, chunk_id_of_key, chunk_key, ensure_format
from mirror.store.backend import ChunkStat


class S3Backend:
    def __init__(self, client: S3Client) -> None:
        self.client = client
        self._format_lock = threading.Lock()
        self._format_ok = False
        self._refused: str | None = None

    def __repr__(self) -> str:
        return f"S3Backend({self.client.url})"

    def stat(self, cid: str) -> ChunkStat | None:
        info = self.client.head(chunk_key(cid))
        return None if info is None else ChunkStat(info.size, info.mtime)

    def get(self, cid: str, offset: int = 0, length: int | None = None) -> bytes:
        return self.read(cid, offset, length).data

    def read(self, cid: str, offset: int = 0, length: int | None = None) -> Read:
        """`get`, with the object's whole size."""
        got = self.client.get(chunk_key(cid), offset, length)
        if got is None:
            raise ChunkMissing(cid)
        return got

    def put(self, cid: str, frame: bytes | memoryview) -> bool:
        key = chunk_key(cid)
        self._check_format()
        return self.client.put(key, frame, create=True)

    def _check_format(self) -> None:
        """Before the first write: mark the bucket with our format, or refuse to write to
        one of a newer format (mirror/s3/layout.py). Not at start, where an unreachable
        bucket would hold up the node; a failed check is tried again at the next write."""
        if self._format_ok:
            return
        with self._format_lock:
            if self._refused is None and not self._format_ok:
                try:
                    ensure_format(self.client)
                    self._format_ok = True
                except ConfigError as exc:
                    self._refused = exc.message
                except BucketUnavailable as exc:
                    raise BucketWriteFailed(exc.message) from None
            if self._refused is not None:
                raise BucketWriteFailed(self._refused)

    def delete(self, cid: str) -> bool:
        key = chunk_key(cid)
        try:
            if self.client.head(key) is None:
                return False
        except BucketUnavailable as exc:
            raise BucketWriteFailed(exc.message) from None
        self.client.delete(key)
        return True

    def list(self) -> Iterator[str]:
        for info in self.client.list(CHUNKS + "/"):
            cid = chunk_id_of_key(info.key)
            if cid is not None:
                yield cid
