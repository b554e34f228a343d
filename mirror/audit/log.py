"""The audit log (issue 10 item 5, threat model A5): who did what, append-only and
hash-chained, with checkpoints signed by the node key.

Every component audits through `AuditLog.record(actor, action, target, outcome, **detail)`,
which never blocks and never raises into the caller: the record is buffered in memory,
and `flush()` (the node's flush loop every 2 s, and `close()`) writes the buffer as one
batch. The batch is chained inside one write transaction (catalog/audit.py `append`):
the last stored record is read there, so the daemon and a CLI command on one data
directory extend one chain and never fork it.

The record format and what the hashes and signatures cover are audit/chain.py's
(version 1, an on-disk format); `verify()` (audit/verify.py) walks the chain and returns
the first bad record. A checkpoint is written at every CHECKPOINT_EVERY records, at the
tail within CHECKPOINT_INTERVAL after this process wrote, and at `close()`.

A full disk: `flush()` raises StorageError (the flush loop logs one line per episode)
and keeps the batch pending; the next flush retries it, in order. Memory stays bounded:
past MAX_PENDING buffered records new ones are counted, not kept, and the count goes into
the log as an 'audit.overflow' record once writing works again, so the gap is on record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from mirror.audit.chain import (
    CHECKPOINT_EVERY,
    CHECKPOINT_INTERVAL,
    canonical_detail,
    checkpoint_message,
    clean_text,
    record_hash,
)
from mirror.audit.verify import ChainReport, row_json, verify_chain
from mirror.catalog.audit import AuditCatalog, AuditEntry
from mirror.clock import Clock
from mirror.errors import StorageError
from mirror.keys import NodeKey

log = logging.getLogger("mirror.audit")

MAX_PENDING = 100_000


class AuditLog:
    def __init__(self, store: AuditCatalog, key: NodeKey, clock: Clock) -> None:
        self.store = store
        self.key = key
        self.clock = clock
        self.pending: list[AuditEntry] = []
        self.max_pending = MAX_PENDING
        self._dropped = 0
        self._unsealed = False  # this process wrote records after its last tail checkpoint
        self._due = clock.monotonic() + CHECKPOINT_INTERVAL
        self._lock = asyncio.Lock()

    def record(self, actor: str, action: str, target: str, outcome: str = "ok", **detail: Any) -> None:
        """One event: `actor` (Caller.actor: a token name, 'anonymous', 'peer:<key>',
        'cli:<user>', 'lifecycle'), `action` ('files.read', 'token.create', 'auth.denied'...),
        `target` (a repo, a token name, a path), `outcome` ('ok' | 'denied' | 'error'),
        `detail` (small JSON-able values, stored as given; never a secret)."""
        try:
            if len(self.pending) >= self.max_pending:
                self._dropped += 1
                return
            self.pending.append(AuditEntry(self.clock.now(), clean_text(actor), clean_text(action), clean_text(target),
                                           clean_text(outcome), canonical_detail(detail)))
        except Exception:  # never fail the caller; the loss is counted and recorded
            self._dropped += 1
            log.exception("cannot buffer an audit record (%s)", action)

    async def flush(self, *, final: bool = False) -> None:
        """Write the buffered records (and a tail checkpoint when due, or `final`)."""
        async with self._lock:
            batch, self.pending = self.pending, []
            dropped, self._dropped = self._dropped, 0
            entries = list(batch)
            if dropped:
                entries.append(AuditEntry(self.clock.now(), "audit", "audit.overflow", "audit log", "error",
                                          canonical_detail({"dropped": dropped})))
            unsealed = self._unsealed or bool(entries)
            tail = unsealed and (final or self.clock.monotonic() >= self._due)
            if not entries and not tail:
                return
            try:
                await self.store.append(entries, self._seal, self._sign, every=CHECKPOINT_EVERY, tail_checkpoint=tail)
            except BaseException:
                # Keep them, in order before anything recorded meanwhile: the next flush retries.
                self.pending[:0] = batch
                self._dropped += dropped
                raise
            self._unsealed = unsealed and not tail
            if tail:
                self._due = self.clock.monotonic() + CHECKPOINT_INTERVAL

    async def close(self) -> None:
        """The last flush, with a checkpoint at the tail if this process wrote records."""
        await self.flush(final=True)

    async def read(
        self, *, since: float | None = None, until: float | None = None, actor: str | None = None,
        action: str | None = None, after: int = 0, limit: int | None = None, newest: bool = False,
    ) -> list[dict[str, Any]]:
        """Stored records as JSON-able dicts, in seq order (the CLI's `mirror audit` and
        the auditors' HTTP read). Buffered records are written first when the disk lets
        them. `actor`/`action` match exactly or as a prefix ('cli', 'pin'); `after` and
        `limit` page; `newest` makes `limit` keep the last matches."""
        try:
            await self.flush()
        except StorageError:
            pass  # read what is stored
        rows = await self.store.records(since=since, until=until, actor=actor, action=action, after=after,
                                        limit=limit, newest=newest)
        return [row_json(r) for r in rows]

    async def verify(self, trusted: Iterable[str] = ()) -> ChainReport:
        """Walk the whole chain (audit/verify.py); checkpoints must be signed by this
        node's key or one of `trusted`."""
        try:
            await self.flush()
        except StorageError:
            pass
        return await verify_chain(self.store, {self.key.public_hex, *trusted})

    def _seal(self, seq: int, prev: str, e: AuditEntry) -> str:
        return record_hash(seq, e.at, e.actor, e.action, e.target, e.outcome, e.detail, prev)

    def _sign(self, seq: int, digest: str) -> tuple[str, bytes]:
        return self.key.public_hex, self.key.sign(checkpoint_message(seq, digest))
