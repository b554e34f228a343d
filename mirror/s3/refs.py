"""What one node references in a shared bucket: the reference sets of the GC protocol.

The protocol (who reads these, when an object may be deleted) is mirror/s3/gc.py; this
module is the sets' object format and the node side that publishes them.

Objects (names in mirror/s3/layout.py), written only by the node whose key names them:

    refs/<node key>/full         everything the node references: rewritten whole
                                 (`publish_full`: at start, after each local GC, and
                                 by every bucket collection this node runs)
    refs/<node key>/d<20 digits> what one stored manifest added (`note`: written right
                                 after the manifest is stored, before the next file);
                                 removed once a later full set covers it

Body (zlib-compressed ASCII), format REFS_FORMAT = 1:

    model-mirror refs 1
    <node key>
    <kind: full | delta>
    <published at: seconds since the epoch, node clock>
    <covers: the last delta name a full set includes, or "-">
    <n identities>
    <n chunks>
    <identity>...                (sorted, one a line)
    <chunk id>...                (sorted, one a line)

A node references every manifest in its catalog (listed or not yet collected) and
every chunk they name, plus the chunks its readers and ingests hold leases on.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import zlib
from concurrent import futures
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from mirror.catalog.lifecycle import LifecycleCatalog
from mirror.clock import Clock
from mirror.errors import MirrorError
from mirror.manifest import IDENTITY_RE, Manifest
from mirror.s3.client import S3Client
from mirror.s3.layout import REFS, refs_key
from mirror.store.layout import is_chunk_id
from mirror.store.leases import LeaseTable

log = logging.getLogger("mirror.s3")

REFS_FORMAT = 1
_HEAD = "model-mirror refs 1"
_DELTA = re.compile(r"d[0-9]{20}", re.ASCII)
MAX_REFS = 1 << 30  # decompressed bytes at most (about 15 million chunk ids)


@dataclass(frozen=True)
class RefSet:
    node: str
    kind: str  # "full" or "delta"
    published: float
    covers: str  # for a full set: the last delta it includes ("-": none)
    identities: frozenset[str]
    chunks: frozenset[str]


def encode(refs: RefSet) -> bytes:
    lines = [_HEAD, refs.node, refs.kind, repr(float(refs.published)), refs.covers or "-",
             str(len(refs.identities)), str(len(refs.chunks))]
    lines += sorted(refs.identities) + sorted(refs.chunks)
    return zlib.compress(("\n".join(lines) + "\n").encode("ascii"), 6)


def decode(body: bytes) -> RefSet:
    """Strict: ValueError for anything but format 1 (a collector then stops: it cannot
    know what an unreadable set protects)."""
    d = zlib.decompressobj()
    text = d.decompress(body, MAX_REFS)
    if d.unconsumed_tail or not d.eof:
        raise ValueError("reference set too large or truncated")
    lines = text.decode("ascii").split("\n")
    if len(lines) < 8 or lines[0] != _HEAD or lines[-1] != "":
        raise ValueError("not a format 1 reference set")
    node, kind, published, covers, n_ids, n_chunks = lines[1:7]
    ni, nc = int(n_ids), int(n_chunks)
    body_lines = lines[7:-1]
    if kind not in ("full", "delta") or len(body_lines) != ni + nc or not (covers == "-" or _DELTA.fullmatch(covers)):
        raise ValueError("malformed reference set")
    ids, chunks = body_lines[:ni], body_lines[ni:]
    if not all(IDENTITY_RE.fullmatch(i) for i in ids) or not all(is_chunk_id(c) for c in chunks):
        raise ValueError("malformed reference set entry")
    return RefSet(node, kind, float(published), covers, frozenset(ids), frozenset(chunks))


def full_key(node: str) -> str:
    return f"{refs_key(node)}/full"


def delta_key(node: str, name: str) -> str:
    return f"{refs_key(node)}/{name}"


def parse_key(key: str) -> tuple[str, str] | None:
    """(node key, "full" or a delta name) of a reference set's key, else None."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != REFS:
        return None
    try:
        refs_key(parts[1])
    except ValueError:
        return None
    if parts[2] == "full" or _DELTA.fullmatch(parts[2]):
        return parts[1], parts[2]
    return None


class RefPublisher:
    """The node side: publishes this node's reference sets (blocking methods run in
    `executor`; `note` only queues)."""

    def __init__(self, client: S3Client, lifecycle: LifecycleCatalog, node: str, leases: LeaseTable | None,
                 clock: Clock, executor: Executor) -> None:
        self.client = client
        self.lifecycle = lifecycle
        self.node = node
        self.leases = leases
        self.clock = clock
        self.executor = executor
        self._written: list[str] = []  # deltas published since the last full set
        self._lock = threading.Lock()
        self._last = 0
        self._pending: list[Future[None]] = []

    def _name(self) -> str:
        with self._lock:
            n = max(time.time_ns(), self._last + 1)
            self._last = n
        return f"d{n:020d}"

    def note(self, man: Manifest) -> None:
        """A manifest was stored: publish its delta now, in the executor (called on the
        event loop, never blocks). A failure is logged; the next full set covers it."""
        refs = RefSet(self.node, "delta", self.clock.now(), "-", frozenset([man.identity]),
                      frozenset(c.chunk_id for c in man.chunks))
        fut = self.executor.submit(self._put_delta, self._name(), refs)
        with self._lock:
            self._pending = [f for f in self._pending if not f.done()] + [fut]

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for the deltas queued so far (closing the node, tests; bounded, never
        raises: a delta that failed is logged, and the next full set covers it)."""
        with self._lock:
            pending = list(self._pending)
        futures.wait(pending, timeout)  # failures were logged where they happened

    def _put_delta(self, name: str, refs: RefSet) -> None:
        try:
            self.client.put(delta_key(self.node, name), encode(refs), create=False)
        except MirrorError as exc:
            log.warning("cannot publish a reference delta to %s: %s (the next full set covers it)", self.client.url,
                        exc.message)
            return
        with self._lock:
            self._written.append(name)

    async def publish_full(self) -> RefSet:
        """Rewrite this node's whole reference set, then remove the deltas it covers.
        Raises BucketWriteFailed."""
        loop = asyncio.get_running_loop()
        # Deltas found before the catalog is read: their manifests are in it already.
        covered = await loop.run_in_executor(self.executor, self._own_deltas)
        mchunks = await self.lifecycle.manifest_chunks()
        chunks = {c for cids in mchunks.values() for c in cids}
        if self.leases is not None:
            chunks |= self.leases.held()
        refs = RefSet(self.node, "full", self.clock.now(), max(covered) if covered else "-", frozenset(mchunks),
                      frozenset(chunks))
        await loop.run_in_executor(self.executor, self._put_full, refs, covered)
        return refs

    def _own_deltas(self) -> list[str]:
        """This node's deltas in the bucket (those of earlier runs too); on a failed
        listing, the ones this process wrote."""
        try:
            return [p[1] for info in self.client.list(refs_key(self.node) + "/")
                    if (p := parse_key(info.key)) is not None and p[0] == self.node and p[1] != "full"]
        except MirrorError:
            with self._lock:
                return list(self._written)

    def _put_full(self, refs: RefSet, covered: list[str]) -> None:
        self.client.put(full_key(self.node), encode(refs), create=False)
        for name in covered:
            self.client.delete(delta_key(self.node, name))
        done = set(covered)
        with self._lock:
            self._written = [n for n in self._written if n not in done]
