"""Garbage collection of a bucket several nodes share. Protocol version GC_PROTOCOL = 1.

Objects (names: mirror/s3/layout.py; reference sets: mirror/s3/refs.py):
    refs/<node>/full, refs/<node>/d<n>   what each node references (its manifests' ids
                                         and their chunks), written only by that node
    gc/lease                             one collector at a time (format below)
    gc/candidates                        what the last collection found unreferenced

The rules. A node never deletes a chunk or manifest object because its own catalog no
longer names it (lifecycle/gc.py removes only its local copies). Only a collector
holding the lease deletes, and an object (chunks/... or manifests/...) only when ALL of:
  1. no reference set names it: read (deltas first, then full sets) at the start, and
     the listing of refs/ read again, with any set that changed, just before each batch
     of deletions (DELETE_BATCH keys);
  2. an earlier collection listed it in gc/candidates, and that listing was made at
     least `gc_grace` ago (two rounds: whatever a node started relying on between the
     rounds is in its reference sets by the second one);
  3. its LastModified is older than that earlier listing minus SKEW and a second
     (LastModified's resolution) (not written, or
     written again after being deleted, since it was first found unreferenced; so in
     particular not written after this collection started), and older than `gc_grace`.
Manifest objects are deleted before chunk objects. Each collection then writes a new
gc/candidates (the objects unreferenced now whose LastModified is older than gc_grace),
unless the earlier listing is younger than gc_grace (its round goes on, its time kept).

Reference sets of a node gone for good are honoured until an operator removes them
(`forget_node`, `mirror gc --forget-node <key>`): deleting data because a node was
silent is how a shared store loses data. Sets older than STALE_AFTER are reported in
every collection's log line so the operator notices.

The lease: gc/lease holds "model-mirror gc lease 1\\n<holder key>\\n<token>\\n<expires>\\n".
Taken with a create-only PUT. A lease past its expiry by more than SKEW may be taken
over: the taker deletes it, creates its own (create-only again) and reads it back; the
race (two takers delete, one creates, the other deletes the fresh lease and creates its
own) is caught because every holder reads the lease back before each batch of
deletions and stops when the token is not its own. Two collectors may so overlap for
at most one batch; that is safe, since every deletion is justified by the rules above on
its own (the lease saves work and keeps gc/candidates single-writer, it is not what
makes deletion safe). The holder releases it (deleting it) when done, also on failure.

Interrupted anywhere (crash, exception, lost bucket), a collection leaves every
referenced object readable: it deletes only objects the rules allow, one at a time, and
never rewrites one. A stale lease expires; candidates are only ever a superset filter.

Residual window, stated: a node that stores a file reusing an object that is already a
candidate publishes its delta right after its manifest; the collector re-reads refs/
just before each batch, so only a delta landing between that re-read and the DELETE
of that very object (one request's time) is missed. Such a node still holds its local
copy; `mirror verify` finds the bucket copy missing and the file is fetched again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import zlib
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable

from mirror.clock import Clock
from mirror.errors import MirrorError
from mirror.s3.client import ObjectInfo, S3Client
from mirror.s3.layout import CHUNKS, GC_CANDIDATES, GC_LEASE, MANIFESTS, REFS, chunk_id_of_key, identity_of_key, refs_key
from mirror.s3.refs import RefPublisher, RefSet, decode, parse_key

log = logging.getLogger("mirror.s3")

GC_PROTOCOL = 1
LEASE_TTL = 3600.0  # seconds a lease is good for
SKEW = 300.0  # clock difference tolerated between nodes and the bucket
MTIME_RESOLUTION = 1.0  # LastModified is given to the second
STALE_AFTER = 30 * 86400.0
DELETE_BATCH = 100
_LEASE_HEAD = "model-mirror gc lease 1"
_CAND_HEAD = "model-mirror gc candidates 1"


@dataclass
class BucketGcReport:
    busy: str = ""  # the holder of the lease when another collector held it
    referenced: int = 0
    candidates: int = 0  # found unreferenced now (deleted by a later collection)
    deleted_chunks: int = 0
    deleted_manifests: int = 0
    kept_rereferenced: int = 0
    stale_nodes: list[str] = field(default_factory=list)


class LeaseLost(MirrorError):
    """Another collector holds the lease now: this one stops before its next deletion."""


class BucketCollector:
    def __init__(self, client: S3Client, node: str, clock: Clock, *, lease_ttl: float = LEASE_TTL,
                 skew: float = SKEW) -> None:
        self.client = client
        self.node = node
        self.clock = clock
        self.lease_ttl = lease_ttl
        self.skew = skew

    # --- the lease -----------------------------------------------------------------------

    def _lease_body(self, token: str) -> bytes:
        return f"{_LEASE_HEAD}\n{self.node}\n{token}\n{self.clock.now() + self.lease_ttl!r}\n".encode()

    def read_lease(self) -> tuple[str, str, float] | None:
        """(holder, token, expires) of the lease, or None when there is none. An
        unreadable lease counts as held until it is old (its LastModified)."""
        got = self.client.get(GC_LEASE, 0, 4096)
        if got is None:
            return None
        lines = got.data.decode("ascii", "replace").split("\n")
        try:
            if lines[0] != _LEASE_HEAD:
                raise ValueError
            return lines[1], lines[2], float(lines[3])
        except (IndexError, ValueError):
            info = self.client.head(GC_LEASE)
            return ("?", "?", (info.mtime if info else 0.0) + self.lease_ttl)

    def acquire(self) -> tuple[str, str]:
        """("", token) when this node holds the lease now, else (holder, "")."""
        token = secrets.token_hex(16)
        if self.client.put(GC_LEASE, self._lease_body(token), create=True):
            return "", token
        held = self.read_lease()
        if held is not None and held[2] + self.skew >= self.clock.now():
            return held[0], ""
        # Stale: take it over (module docstring: the race and why it is safe).
        log.warning("bucket gc: taking over a lease of %s that expired", held[0][:16] if held else "?")
        self.client.delete(GC_LEASE)
        if not self.client.put(GC_LEASE, self._lease_body(token), create=True):
            now = self.read_lease()
            return (now[0] if now else "?"), ""
        return self._check(token)

    def _check(self, token: str) -> tuple[str, str]:
        held = self.read_lease()
        if held is None or held[1] != token:
            return (held[0] if held else "?"), ""
        return "", token

    def release(self, token: str) -> None:
        held = self.read_lease()
        if held is not None and held[1] == token:
            self.client.delete(GC_LEASE)

    # --- collection ----------------------------------------------------------------------

    def collect(self, grace: float, *, before_delete: Callable[[], None] | None = None) -> BucketGcReport:
        """One collection (blocking; module docstring: the rules). `before_delete` is
        called before each batch of deletions (tests interleave writes there)."""
        rep = BucketGcReport()
        holder, token = self.acquire()
        if not token:
            rep.busy = holder or "?"
            log.info("bucket gc: another collector (%s) holds the lease; not collecting", rep.busy[:16])
            return rep
        try:
            self._collect(grace, rep, token, before_delete)
        finally:
            try:
                self.release(token)
            except MirrorError as exc:
                log.warning("bucket gc: cannot release the lease (%s); it expires by itself", exc.message)
        log.info("bucket gc: %d referenced, deleted %d manifests and %d chunks, %d candidates for the next run, "
                 "%d kept as referenced again%s", rep.referenced, rep.deleted_manifests, rep.deleted_chunks, rep.candidates,
                 rep.kept_rereferenced, f"; reference sets older than {STALE_AFTER / 86400:g} days from "
                 f"{', '.join(n[:16] for n in rep.stale_nodes)} are still honoured (`mirror gc --forget-node`)"
                 if rep.stale_nodes else "")
        return rep

    def _collect(self, grace: float, rep: BucketGcReport, token: str, before_delete: Callable[[], None] | None) -> None:
        started = self.clock.now()
        seen: dict[str, tuple[float, RefSet]] = {}
        referenced = self._referenced(seen, rep)
        rep.referenced = len(referenced)
        objects = {info.key: info for prefix in (MANIFESTS, CHUNKS) for info in self.client.list(prefix + "/")
                   if _gc_name(info.key) is not None}
        previous = self._candidates()
        due: list[ObjectInfo] = []
        if previous is not None and started - previous[0] >= grace:
            marked_at, keys = previous
            for key in keys:
                info = objects.get(key)
                if (info is not None and _gc_name(info.key) not in referenced
                        and info.mtime < marked_at - self.skew - MTIME_RESOLUTION and started - info.mtime >= grace):
                    due.append(info)
        due.sort(key=lambda i: not i.key.startswith(MANIFESTS))  # manifests first
        deleted: set[str] = set()
        for i in range(0, len(due), DELETE_BATCH):
            if before_delete is not None:
                before_delete()
            if self._check(token)[1] != token:
                raise LeaseLost("bucket gc: the lease was taken over; stopping")
            referenced = self._referenced(seen, rep)  # what nodes relied on meanwhile
            for info in due[i:i + DELETE_BATCH]:
                if _gc_name(info.key) in referenced:
                    rep.kept_rereferenced += 1
                    continue
                self.client.delete(info.key)
                deleted.add(info.key)
                if info.key.startswith(MANIFESTS):
                    rep.deleted_manifests += 1
                else:
                    rep.deleted_chunks += 1
        if previous is not None and started - previous[0] < grace:
            return  # the earlier listing's round is still running: keep its time
        fresh = sorted(k for k, info in objects.items() if k not in deleted and _gc_name(k) not in referenced
                       and started - info.mtime >= grace)
        rep.candidates = len(fresh)
        body = "\n".join([_CAND_HEAD, self.node, repr(started), str(len(fresh))] + fresh) + "\n"
        self.client.put(GC_CANDIDATES, zlib.compress(body.encode("ascii")), create=False)

    def _referenced(self, seen: dict[str, tuple[float, RefSet]], rep: BucketGcReport) -> set[str]:
        """Every id any reference set names: deltas read before full sets (a full set
        written meanwhile covers the deltas it removed). `seen` keeps the sets read, by
        key with their LastModified, so a re-read fetches only changed ones. Raises
        MirrorError when a set cannot be read: then nothing more is deleted."""
        infos = sorted((i for i in self.client.list(REFS + "/") if parse_key(i.key) is not None),
                       key=lambda i: parse_key(i.key)[1] == "full")  # type: ignore[index]
        out: set[str] = set()
        now = self.clock.now()
        stale: set[str] = set()
        for info in infos:
            had = seen.get(info.key)
            if had is None or had[0] != info.mtime:
                got = self.client.get(info.key)
                if got is None:  # removed since the listing (a delta a full set covers)
                    continue
                try:
                    seen[info.key] = (info.mtime, decode(got.data))
                except (ValueError, zlib.error) as exc:
                    raise MirrorError(f"bucket gc: reference set {info.key} is unreadable ({exc}); "
                                      f"deleting nothing") from None
            refs = seen[info.key][1]
            out |= refs.identities
            out |= refs.chunks
            if refs.kind == "full" and now - refs.published > STALE_AFTER:
                stale.add(refs.node)
        rep.stale_nodes = sorted(stale)
        return out

    def _candidates(self) -> tuple[float, list[str]] | None:
        got = self.client.get(GC_CANDIDATES)
        if got is None:
            return None
        try:
            lines = zlib.decompress(got.data).decode("ascii").split("\n")
            if lines[0] != _CAND_HEAD:
                raise ValueError
            keys = lines[4:-1]
            if len(keys) != int(lines[3]):
                raise ValueError
            return float(lines[2]), [k for k in keys if _gc_name(k) is not None]
        except (ValueError, IndexError, zlib.error):
            log.warning("bucket gc: %s is unreadable; starting the two rounds over", GC_CANDIDATES)
            return None

    def forget_node(self, node: str) -> int:
        """Remove a node's reference sets (an operator's decision: the node is gone for
        good). Its objects become collectable after two collections. Returns how many."""
        keys = [i.key for i in self.client.list(refs_key(node) + "/")]
        for key in keys:
            self.client.delete(key)
        return len(keys)


class SharedGc:
    """What a node's local GC runs with a shared bucket (lifecycle/gc.py): publish this
    node's whole reference set, then take part in collecting the bucket."""

    def __init__(self, refs: RefPublisher, collector: BucketCollector, executor: Executor) -> None:
        self.refs = refs
        self.collector = collector
        self.executor = executor

    async def run(self, grace: float) -> BucketGcReport:
        await self.refs.publish_full()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.collector.collect, grace)


def _gc_name(key: str) -> str | None:
    """The id a collectable object's key names (a chunk id or a manifest identity)."""
    return chunk_id_of_key(key) or identity_of_key(key)
