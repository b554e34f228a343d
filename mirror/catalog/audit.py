"""Catalog SQL of the audit log: tables `audit_log` and `audit_checkpoints` (migration 7,
schema_audit.py).

The chain's format (what a hash covers, what a checkpoint signs) is audit/chain.py's; this
module only stores and reads. `append` numbers and links a batch inside one write
transaction (BEGIN IMMEDIATE), reading the last record there, so two processes on one
data directory (the daemon and a CLI command) extend one chain and never fork it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mirror.catalog.db import Database
from mirror.catalog.schema_audit import GENESIS

__all__ = ["GENESIS", "AuditCatalog", "AuditEntry", "AuditRow", "CheckpointRow"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A record before it joins the chain (no seq, prev or hash yet). `detail` is
    canonical JSON already."""

    at: float
    actor: str
    action: str
    target: str
    outcome: str
    detail: str


@dataclass(frozen=True, slots=True)
class AuditRow:
    seq: int
    at: float
    actor: str
    action: str
    target: str
    outcome: str
    detail: str
    prev: str
    hash: str


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    seq: int
    hash: str
    at: float
    signer: str
    signature: bytes


# seal(seq, prev, entry) -> the record's hash; sign(seq, hash) -> (signer, signature).
Seal = Callable[[int, str, AuditEntry], str]
Sign = Callable[[int, str], tuple[str, bytes]]

_COLUMNS = "seq, at, actor, action, target, outcome, detail, prev, hash"


class AuditCatalog:
    def __init__(self, db: Database, now: Callable[[], float]) -> None:
        self.db = db
        self._now = now

    async def append(self, entries: Sequence[AuditEntry], seal: Seal, sign: Sign, *, every: int,
                     tail_checkpoint: bool = False) -> tuple[int, str]:
        """Chain `entries` after the last stored record, in one transaction: each gets
        seq = last + 1 and prev = the last hash, and `seal` computes its hash. A
        checkpoint (`sign`) is written at every seq that is a multiple of `every`, and at
        the new tail when `tail_checkpoint`. Returns the tail (seq, hash)."""
        async with self.db.transaction() as c:
            cur = await c.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            row = await cur.fetchone()
            await cur.close()
            seq, prev = (int(row["seq"]), str(row["hash"])) if row else (0, GENESIS)
            rows = []
            marks = []
            for e in entries:
                seq += 1
                digest = seal(seq, prev, e)
                rows.append((seq, e.at, e.actor, e.action, e.target, e.outcome, e.detail, prev, digest))
                if seq % every == 0:
                    marks.append((seq, digest))
                prev = digest
            if rows:
                await c.executemany(f"INSERT INTO audit_log({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)", rows)
            if tail_checkpoint and seq and (not marks or marks[-1][0] != seq):
                marks.append((seq, prev))
            now = self._now()
            for s, h in marks:
                signer, signature = sign(s, h)
                await c.execute(
                    "INSERT OR IGNORE INTO audit_checkpoints(seq, hash, at, signer, signature) VALUES (?,?,?,?,?)",
                    (s, h, now, signer, signature),
                )
        return seq, prev

    async def tail(self) -> tuple[int, str]:
        """(seq, hash) of the last record; (0, GENESIS) for an empty log."""
        row = await self.db.fetchone("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        return (int(row["seq"]), str(row["hash"])) if row else (0, GENESIS)

    async def records(
        self, *, since: float | None = None, until: float | None = None, actor: str | None = None,
        action: str | None = None, after: int = 0, limit: int | None = None, newest: bool = False,
    ) -> list[AuditRow]:
        """Records in seq order. `actor` and `action` match exactly or as a prefix ending
        at a separator ('cli' matches 'cli:alice', 'pin' matches 'pin.add'). With
        `newest`, `limit` keeps the last matching records (still returned in seq order)."""
        where, params = ["seq > ?"], [after]
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        if until is not None:
            where.append("at < ?")
            params.append(until)
        if actor:
            where.append("(actor = ? OR substr(actor, 1, ?) = ?)")
            params += [actor, len(actor) + 1, actor + ":"]
        if action:
            where.append("(action = ? OR substr(action, 1, ?) = ?)")
            params += [action, len(action) + 1, action + "."]
        sql = f"SELECT {_COLUMNS} FROM audit_log WHERE {' AND '.join(where)} ORDER BY seq {'DESC' if newest else 'ASC'}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = [_row(r) for r in await self.db.fetchall(sql, params)]
        return rows[::-1] if newest else rows

    async def seq_of_hash(self, digest: str) -> int | None:
        """The seq of the stored record with this hash (diagnosing a broken chain)."""
        row = await self.db.fetchone("SELECT seq FROM audit_log WHERE hash = ? ORDER BY seq LIMIT 1", (digest,))
        return int(row["seq"]) if row else None

    async def checkpoints(self) -> list[CheckpointRow]:
        rows = await self.db.fetchall("SELECT seq, hash, at, signer, signature FROM audit_checkpoints ORDER BY seq")
        return [_checkpoint(r) for r in rows]

    async def last_checkpoint(self) -> CheckpointRow | None:
        row = await self.db.fetchone("SELECT seq, hash, at, signer, signature FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")
        return _checkpoint(row) if row else None


def _row(r: Any) -> AuditRow:
    return AuditRow(int(r["seq"]), _real(r["at"]), str(r["actor"]), str(r["action"]), str(r["target"]),
                    str(r["outcome"]), str(r["detail"]), str(r["prev"]), str(r["hash"]))


def _checkpoint(r: Any) -> CheckpointRow:
    sig = r["signature"]
    return CheckpointRow(int(r["seq"]), str(r["hash"]), _real(r["at"]), str(r["signer"]),
                         sig.encode() if isinstance(sig, str) else bytes(sig or b""))


def _real(value: Any) -> float:
    """A stored time; an edited row may hold anything there (its hash then fails)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
