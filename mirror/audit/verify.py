"""Verification of the audit log: walk every record in seq order, recompute each hash and
`prev` link, require seq without gaps, and check every checkpoint (signed by a trusted
key, naming a record whose hash it signed; one at every multiple of CHECKPOINT_EVERY).

The walk stops at the first bad record and says why, as an auditor would want it:

    edited               the record's hash does not match its contents
    deleted              records are missing here (a gap in seq, or the later ones renumbered)
    inserted             records were added here (the later ones renumbered)
    reordered            the record holds the contents of another position
    relinked             the record before it was replaced and re-hashed (the link to it broke)
    truncated            a checkpoint signs a record that is gone (the tail was cut)
    checkpoint-mismatch  a checkpoint's hash differs from the record's: the chain up to it
                         was rewritten consistently after it was signed
    checkpoint-forged    a checkpoint's signature does not verify, or its signer is not trusted
    checkpoint-missing   no checkpoint where the format requires one

What a chain cannot show (chain.py): changes after the last checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mirror.audit.chain import (
    CHECKPOINT_EVERY,
    GENESIS,
    checkpoint_message,
    record_hash,
)
from mirror.catalog.audit import AuditCatalog, AuditRow, CheckpointRow
from mirror.errors import BadSignature
from mirror.keys import verify as verify_signature

PAGE = 2000
# How far a renumbered record is looked for (a deletion or insertion of up to this many).
_SHIFT = 1000


@dataclass
class Finding:
    seq: int
    reason: str
    message: str
    record: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "reason": self.reason, "message": self.message, "record": self.record}


@dataclass
class ChainReport:
    records: int = 0
    checkpoints: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS
    last_checkpoint: dict[str, Any] | None = None
    first_bad: Finding | None = None

    @property
    def ok(self) -> bool:
        return self.first_bad is None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "checkpoints": self.checkpoints, "last_seq": self.last_seq,
                "last_hash": self.last_hash, "last_checkpoint": self.last_checkpoint,
                "first_bad": self.first_bad.to_json() if self.first_bad else None}


def row_json(r: AuditRow) -> dict[str, Any]:
    """A stored record as JSON-able values (what `mirror audit --json` and auditors read)."""
    import json

    try:
        detail: Any = json.loads(r.detail)
    except ValueError:
        detail = r.detail
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.at)) if math.isfinite(r.at) else None
    return {"seq": r.seq, "at": r.at, "time": when, "actor": r.actor, "action": r.action, "target": r.target,
            "outcome": r.outcome, "detail": detail, "prev": r.prev, "hash": r.hash}


def _hash_of(r: AuditRow, seq: int | None = None, prev: str | None = None) -> str:
    return record_hash(r.seq if seq is None else seq, r.at, r.actor, r.action, r.target, r.outcome, r.detail,
                       r.prev if prev is None else prev)


async def verify_chain(store: AuditCatalog, trusted: Iterable[str]) -> ChainReport:
    signers = set(trusted)
    rep = ChainReport()
    checkpoints = await store.checkpoints()
    by_seq = {c.seq: c for c in checkpoints}
    rep.checkpoints = len(checkpoints)
    expected, prev_hash, after = 1, GENESIS, 0
    prev_row: AuditRow | None = None
    while rep.first_bad is None:
        page = await store.records(after=after, limit=PAGE)
        if not page:
            break
        for r in page:
            bad = await _diagnose(store, r, expected, prev_row)
            if bad is None:
                bad = _check_checkpoint(by_seq.get(r.seq), r, signers)
            if bad is not None:
                rep.first_bad = bad
                break
            rep.records += 1
            expected, prev_hash, prev_row = r.seq + 1, r.hash, r
        after = page[-1].seq
    rep.last_seq, rep.last_hash = expected - 1, prev_hash
    if rep.first_bad is None:
        beyond = [c for c in checkpoints if c.seq > rep.last_seq]
        if beyond:
            c = beyond[-1]
            if not _signed(c, signers):
                rep.first_bad = Finding(c.seq, "checkpoint-forged", f"checkpoint #{c.seq} (after the last record) is not signed by a trusted key")
            else:
                rep.first_bad = Finding(rep.last_seq + 1, "truncated",
                                        f"records #{rep.last_seq + 1} to #{c.seq} are gone: checkpoint #{c.seq} signed them")
    good = [c for c in checkpoints if c.seq <= rep.last_seq and _signed(c, signers)]
    if good:
        c = good[-1]
        rep.last_checkpoint = {"seq": c.seq, "hash": c.hash, "at": c.at, "signer": c.signer, "signature": c.signature.hex()}
    return rep


async def _diagnose(store: AuditCatalog, r: AuditRow, expected: int, before: AuditRow | None) -> Finding | None:
    """Why record `r` (where `expected` should be, after the verified record `before`)
    does not extend the chain; None when it does."""
    prev_hash = before.hash if before is not None else GENESIS
    if r.seq != expected:
        return Finding(expected, "deleted", f"records #{expected} to #{r.seq - 1} are missing", None)
    whole = _hash_of(r) == r.hash
    if whole and r.prev == prev_hash:
        return None
    doc = row_json(r)
    if r.prev != prev_hash:
        later = await store.seq_of_hash(r.prev)
        if later is not None and later > r.seq:
            return Finding(r.seq, "reordered", f"record #{r.seq} is out of order: it links to record #{later}, "
                                               "which comes after it", doc)
    for shift in range(1, _SHIFT + 1):
        for seq in (r.seq + shift, r.seq - shift):
            if seq > 0 and _hash_of(r, seq=seq) == r.hash:
                if seq > r.seq:
                    return Finding(r.seq, "deleted", f"{seq - r.seq} record(s) before #{r.seq} were removed and the rest "
                                                     f"renumbered (this record was #{seq})", doc)
                return Finding(seq, "inserted", f"{r.seq - seq} record(s) were inserted from #{seq} on and the rest "
                                                f"renumbered (record #{r.seq} was #{seq})", doc)
    if not whole:
        return Finding(r.seq, "edited", f"record #{r.seq} does not match its hash: its contents were changed", doc)
    if before is None:
        return Finding(r.seq, "edited", f"record #{r.seq} does not start the chain (its prev is not {GENESIS[:8]}...)", doc)
    return Finding(r.seq - 1, "relinked", f"record #{r.seq - 1} is not the record #{r.seq} links to: it was replaced "
                                          "and re-hashed", row_json(before))


def _signed(c: CheckpointRow, signers: set[str]) -> bool:
    if c.signer not in signers:
        return False
    try:
        verify_signature(c.signer, c.signature, checkpoint_message(c.seq, c.hash))
    except BadSignature:
        return False
    return True


def _check_checkpoint(c: CheckpointRow | None, r: AuditRow, signers: set[str]) -> Finding | None:
    if c is None:
        if r.seq % CHECKPOINT_EVERY == 0:
            return Finding(r.seq, "checkpoint-missing", f"no checkpoint at #{r.seq} (one is written at every "
                                                        f"{CHECKPOINT_EVERY} records): it was removed", row_json(r))
        return None
    if not _signed(c, signers):
        who = "an untrusted key" if c.signer not in signers else "a signature that does not verify"
        return Finding(r.seq, "checkpoint-forged", f"checkpoint #{r.seq} has {who} ({c.signer[:16]})", row_json(r))
    if c.hash != r.hash:
        return Finding(r.seq, "checkpoint-mismatch", f"record #{r.seq} is not the record checkpoint #{r.seq} signed: "
                                                     "the log up to it was rewritten", row_json(r))
    return None
