"""Archive packs in a bucket: the lifecycle's cold tier on object storage (`[archive] url`).

`S3PackStore` has the interface of store/packs.py `PackStore` (what the Archiver, GC,
ChunkStore and verify call) with the packs as objects `packs/<name>.pack` under the URL
(mirror/s3/layout.py); the pack format is unchanged (store/packs.py, PACK_VERSION).

Writing (S3PackWriter, a PackWriter): the pack is written, sealed, fsynced and checked
frame by frame in a local temp file in the data dir's tmp/ as today; `publish` then
  1. uploads it under its fresh random name (multipart, S3Client.upload: parts of 8 MiB,
     visible only once complete),
  2. VERIFIES IT BY READING IT BACK: ranged GETs of VERIFY_RANGE bytes over the whole
     object, whose blake3 and size must equal the local file's (this covers the index
     and footer, so the index the bucket holds is the one written), then
  3. keeps the pack's index (its index and footer bytes, checked by the index's own
     blake3) in the local index cache `<data dir>/pack-index/<name>.idx`.
Any failure deletes the object (best effort), removes the temp and raises StorageError:
the archive run stops before its flip, so every hot copy stays (lifecycle/archive.py).
Nothing is uploaded twice: a pack is uploaded once, under a name no one else writes.

Reading: chunk id -> (pack, offset, length) comes from the in-memory index built from
the local index cache (no request). Frames are read by ranged GETs of aligned WINDOW
(8 MiB) windows of the pack, clipped to its end, kept in a small LRU (WINDOWS of them)
and fetched once however many readers want them at once (single flight): reading a
pack in order, as a file's stream or a repack does, costs one GET per 8 MiB and no HEAD.
verify reads archived chunks in pack order for the same reason.

Index cache: written by the process that uploads a pack and dropped by the one that
deletes it, so another process on the same data dir (a CLI run beside the daemon) sees
the change on its next miss (a directory listing, no request). It is reconciled with
the bucket (one LIST, plus the index of a pack it lacks: three small ranged GETs) when
an archive run starts (`remove_stale_temps`) and when GC lists the packs (`names`).

Ownership: the packs under a prefix are one node's (its catalog records them; its GC
deletes the ones it never recorded). Before its first upload or deletion in a process,
the store claims the prefix (mirror/s3/layout.py `claim_packs`, `packs-owner`): another
node's prefix is refused with StorageError, before any work of an archive run.

An unreachable bucket: a read of an archived chunk raises PackUnavailable (a
ChunkMissing saying why) and `has` answers False for COOLDOWN seconds after, so the file
is fetched from its other origins (peers, upstream) as for any missing chunk, while the
client logs the outage once; an archive run fails before its flip (hot copies stay).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
import time
from collections import OrderedDict
from pathlib import Path
from typing import Iterable

import blake3

from mirror import crashpoints
from mirror.errors import BucketUnavailable, ChunkMissing, StorageError
from mirror.s3.client import COOLDOWN, S3Client
from mirror.s3.layout import PACKS, claim_packs, pack_key, pack_name_of_key
from mirror.store.fsio import DurableFS
from mirror.store.packs import (FOOTER_SIZE, PACK_MAGIC, PackWriter, dead_temp, index_offset_of, is_pack_name, pack_tail,
                                tail_index)

log = logging.getLogger("mirror.store")

WINDOW = 8 << 20  # bytes per ranged GET of a pack being read
WINDOWS = 8  # windows kept in memory (at most WINDOWS * WINDOW bytes)
VERIFY_RANGE = 32 << 20  # bytes per ranged GET of the read-back check


class PackUnavailable(ChunkMissing):
    """An archived chunk whose pack cannot be read now (the bucket is unreachable)."""

    def __init__(self, chunk_id: str, why: str) -> None:
        super().__init__(chunk_id)
        self.message = f"chunk {chunk_id[:16]} is archived in object storage that cannot be read now: {why}"


class _Gone(Exception):
    """The pack is no longer in the bucket."""


class S3PackWriter(PackWriter):
    """A PackWriter whose `publish` uploads the sealed temp and verifies the upload."""

    def __init__(self, store: "S3PackStore") -> None:
        super().__init__(store.staging, store.fs)
        self._store = store

    def publish(self) -> Path:
        try:
            return self._store._publish(self)
        finally:
            self.abort()  # the temp: uploaded and verified, or failed


class S3PackStore:
    """The archive tier in a bucket. Thread-safe. See the module docstring."""

    def __init__(self, client: S3Client, staging: Path, index_dir: Path, owner: str,
                 fs: DurableFS | None = None) -> None:
        """`owner`: this node's key (hex); the packs under the prefix must be its own
        (mirror/s3/layout.py `packs-owner`) before it uploads or deletes one."""
        self.client = client
        self.owner = owner
        self._claimed = False
        self.staging = staging
        self.index_dir = index_dir
        self.fs = fs or DurableFS()
        self._lock = threading.Lock()
        self._index: dict[str, tuple[str, int, int]] = {}
        self._sizes: dict[str, int] = {}
        self._windows: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._flights: dict[tuple[str, int], threading.Event] = {}
        self._down_until = 0.0
        # One thread fetches the window after the one being read (read-ahead), so a
        # sequential read of a pack waits on at most one GET at a time, not one per window.
        self._ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pack-ahead")
        index_dir.mkdir(parents=True, exist_ok=True)
        self.refresh()

    def __repr__(self) -> str:
        return f"S3PackStore({self.client.url}/{PACKS})"

    # --- writing ---------------------------------------------------------------------

    def new_writer(self) -> S3PackWriter:
        return S3PackWriter(self)

    def copy_live(self, name: str, entries: list[tuple[str, int, int]]) -> S3PackWriter:
        """A new pack writer holding the frames (chunk id, offset, length) of pack `name`
        (read in windows: one GET per 8 MiB), for a repack."""
        writer = self.new_writer()
        try:
            for cid, off, length in sorted(entries, key=lambda e: e[1]):
                try:
                    writer.add(cid, self._span(name, off, length))
                except _Gone:
                    raise StorageError(f"pack {name} vanished from {self.client.url} during a repack") from None
                except BucketUnavailable as exc:
                    raise StorageError(exc.message) from None
        except BaseException:
            writer.abort()
            raise
        return writer

    def _claim(self) -> None:
        """Raise StorageError unless the packs under the prefix are this node's (checked
        once per process: one small PUT and GET)."""
        if self._claimed:
            return
        try:
            claim_packs(self.client, self.owner)
        except BucketUnavailable as exc:
            raise StorageError(f"archive: {exc.message}") from None
        self._claimed = True

    def _publish(self, writer: PackWriter) -> Path:
        self._claim()
        key = pack_key(writer.name)
        digest = _file_hash(writer.tmp)
        try:
            self.client.upload(key, writer.tmp)
            crashpoints.hit("archive.uploaded")
            self._check_upload(key, writer.size, digest)
        except BaseException as exc:
            try:
                self.client.delete(key)
            except StorageError:
                pass  # an unrecorded pack is an orphan: the next GC removes it
            if isinstance(exc, BucketUnavailable):
                raise StorageError(exc.message) from None
            raise
        return self._keep_index(writer.name, pack_tail(writer.tmp))

    def _check_upload(self, key: str, size: int, digest: bytes) -> None:
        """Read the object back whole (ranged GETs) and compare it with the local pack."""
        h = blake3.blake3()
        pos = 0
        while pos < size:  # bounded: each pass advances by a non-empty range or stops
            got = self.client.get(key, pos, min(VERIFY_RANGE, size - pos))
            if got is None or got.size != size or not got.data:
                raise StorageError(f"{self.client.url}/{key}: uploaded pack reads back "
                                   f"{'absent' if got is None else f'as {got.size} bytes'}, expected {size}")
            h.update(got.data)
            pos += len(got.data)
        if h.digest() != digest:
            raise StorageError(f"{self.client.url}/{key}: uploaded pack does not read back as written (blake3 differs)")

    def _keep_index(self, name: str, tail: bytes) -> Path:
        path = self.index_dir / f"{name}.idx"
        tmp = self.fs.stage(tail, self.index_dir, name)
        os.replace(tmp, path)
        self.fs.fsync_dir(self.index_dir)
        return path

    # --- the index -------------------------------------------------------------------

    def refresh(self) -> None:
        """Bring the in-memory index up to date with the local index cache."""
        with self._lock:
            names = {n[:-4] for n in os.listdir(self.index_dir) if n.endswith(".idx") and is_pack_name(n[:-4])}
            gone = set(self._sizes) - names
            if gone:
                self._index = {c: loc for c, loc in self._index.items() if loc[0] not in gone}
                for n in gone:
                    del self._sizes[n]
                self._windows = OrderedDict((k, v) for k, v in self._windows.items() if k[0] not in gone)
            for name in sorted(names - set(self._sizes)):
                try:
                    size, entries = tail_index(name, (self.index_dir / f"{name}.idx").read_bytes())
                except (OSError, StorageError) as exc:
                    log.warning("pack index cache %s: %s; fetched again at the next archive or gc run", name, exc)
                    (self.index_dir / f"{name}.idx").unlink(missing_ok=True)
                    continue
                for e in entries:
                    self._index[e.chunk_id] = (name, e.offset, e.length)
                self._sizes[name] = size

    def sync(self) -> list[str]:
        """Reconcile the index cache with the bucket (one LIST; the index of each pack the
        cache lacks); the names of the packs in the bucket. Raises BucketUnavailable."""
        names = sorted(n for info in self.client.list(PACKS) if (n := pack_name_of_key(info.key)) is not None)
        self.refresh()
        with self._lock:
            known = set(self._sizes)
        for name in set(names) - known:
            key = pack_key(name)
            try:
                tail = self._fetch_tail(key)
                if tail is None:
                    continue
                tail_index(name, tail)
            except StorageError as exc:
                log.warning("archive pack %s/%s unreadable: %s", self.client.url, key, exc.message)
                continue
            self._keep_index(name, tail)
        for name in known - set(names):
            (self.index_dir / f"{name}.idx").unlink(missing_ok=True)
        self.refresh()
        return names

    def _fetch_tail(self, key: str) -> bytes | None:
        """The index and footer of a pack object (three ranged GETs: its head, its
        footer, its index), or None when it is gone; StorageError when not a pack."""
        head = self.client.get(key, 0, 16)
        if head is None:
            return None
        if head.data[:4] != PACK_MAGIC or head.size < FOOTER_SIZE + 16:
            raise StorageError(f"{key}: not a pack")
        foot = self.client.get(key, head.size - FOOTER_SIZE, FOOTER_SIZE)
        if foot is None:
            return None
        start = index_offset_of(foot.data)
        if not 16 <= start <= head.size - FOOTER_SIZE:
            raise StorageError(f"{key}: index does not fit the object")
        got = self.client.get(key, start, head.size - start)
        return None if got is None else got.data

    def names(self) -> list[str]:
        return self.sync()

    def locate(self, cid: str) -> tuple[str, int, int] | None:
        loc = self._index.get(cid)
        if loc is None:
            self.refresh()
            loc = self._index.get(cid)
        return loc

    def has(self, cid: str) -> bool:
        if time.monotonic() < self._down_until:
            return False  # unreadable now: the file's other origins are used
        return self.locate(cid) is not None

    def sizes(self, names: Iterable[str]) -> int:
        return sum(self._sizes.get(n, 0) for n in names)

    # --- reading ---------------------------------------------------------------------

    def read_frame(self, cid: str) -> bytes | None:
        for _attempt in range(2):
            loc = self.locate(cid)
            if loc is None:
                return None
            name, off, length = loc
            try:
                return self._span(name, off, length)
            except _Gone:
                self.refresh()  # deleted by a repack or GC (its index entry too): look again
            except BucketUnavailable as exc:
                self._down_until = time.monotonic() + COOLDOWN
                raise PackUnavailable(cid, exc.message) from None
        return None

    def _span(self, name: str, off: int, length: int) -> bytes:
        first, last = off // WINDOW, (off + length - 1) // WINDOW
        parts = [self._window(name, w) for w in range(first, last + 1)]
        if (off + length) % WINDOW >= WINDOW // 2:
            self._read_ahead(name, last + 1)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        start = off - first * WINDOW
        out = data[start:start + length]
        if len(out) != length:
            raise _Gone(name)  # shorter than its index says: not the pack we indexed
        return out

    def _read_ahead(self, name: str, w: int) -> None:
        """Fetch window `w` in the background when a read reached the second half of the
        one before it (same GET, same LRU: the request budget does not change)."""
        size = self._sizes.get(name)
        if size is None or w * WINDOW >= size:
            return
        with self._lock:
            if (name, w) in self._windows or (name, w) in self._flights:
                return

        def fetch() -> None:
            try:
                self._window(name, w)
            except Exception:  # a read that needs it will fetch it (and report why)
                pass

        try:
            self._ahead.submit(fetch)
        except RuntimeError:  # shut down
            pass

    def _window(self, name: str, w: int) -> bytes:
        """Bytes [w * WINDOW, (w + 1) * WINDOW) of the pack (fewer at its end): from the
        LRU, or one ranged GET shared with every reader that wants it meanwhile."""
        key = (name, w)
        for _attempt in range(3):
            with self._lock:
                data = self._windows.get(key)
                if data is not None:
                    self._windows.move_to_end(key)
                    return data
                flight = self._flights.get(key)
                mine = flight is None
                if mine:
                    flight = self._flights[key] = threading.Event()
            assert flight is not None
            if not mine:
                flight.wait(self.client.settings.timeout * (self.client.settings.retries + 2))
                continue
            try:
                size = self._sizes.get(name)
                length = WINDOW if size is None else min(WINDOW, size - w * WINDOW)
                got = self.client.get(pack_key(name), w * WINDOW, length)
                if got is None:
                    raise _Gone(name)
                with self._lock:
                    self._windows[key] = got.data
                    while len(self._windows) > WINDOWS:
                        self._windows.popitem(last=False)
                self._up()
                return got.data
            finally:
                with self._lock:
                    self._flights.pop(key, None)
                flight.set()
        raise BucketUnavailable(f"object storage get {self.client.url}/{pack_key(name)}: no answer in time")

    def _up(self) -> None:
        if self._down_until:
            self._down_until = 0.0

    # --- removal ---------------------------------------------------------------------

    def delete(self, name: str) -> None:
        self._claim()
        self.client.delete(pack_key(name))
        (self.index_dir / f"{name}.idx").unlink(missing_ok=True)
        self.fs.fsync_dir(self.index_dir)
        self.refresh()

    def remove_stale_temps(self) -> int:
        """Drop pack temps of writers that are gone, then reconcile the index cache with
        the bucket (an archive run starts here: a bucket that cannot be read stops it)."""
        self._claim()  # another node's prefix: refused before any work
        removed = 0
        for n in os.listdir(self.staging):
            if dead_temp(n):
                (self.staging / n).unlink(missing_ok=True)
                removed += 1
        try:
            self.sync()
        except BucketUnavailable as exc:
            raise StorageError(f"archive: {exc.message}") from None
        return removed


def _file_hash(path: Path) -> bytes:
    h = blake3.blake3()
    with open(path, "rb") as fh:
        while block := fh.read(8 << 20):
            h.update(block)
    return h.digest()


__all__ = ["S3PackStore", "S3PackWriter", "PackUnavailable", "WINDOW"]
