"""The audit log's on-disk format, version 1: what a record's hash covers and what a
checkpoint signs. This is an on-disk format: a change needs a new version (and a
verifier that knows both), never an edit of this one.

Record hash: lowercase hex SHA-256 of the record's canonical bytes

    b"model-mirror audit record v1\\n"
    + field(seq) + field(at) + field(actor) + field(action) + field(target)
    + field(outcome) + field(detail) + field(prev)

    field(s) = <decimal length of utf8(s) in bytes> b":" utf8(s) b"\\n"

Length prefixes make the encoding unambiguous whatever a value holds (newlines,
colons, anything). The values, as stored in `audit_log`:

    seq      decimal integer, 1 for the first record, no sign, no leading zeros
    at       seconds since the epoch, printf "%.6f" of the stored REAL
    actor    who: a token name, 'anonymous', 'peer:<key prefix>', 'cli:<os user>',
             'lifecycle' (the daemon's scheduled jobs)
    action   what: dotted, 'pin.add', 'keys.trust', 'lifecycle.evict', 'auth.denied'...
    target   on what: a repo (with @commit), a key, a token name, a path
    outcome  'ok' | 'denied' | 'error'
    detail   canonical JSON of an object: keys sorted, separators "," and ":", ASCII
             only (json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=True));
             hashed as the stored text
    prev     the hash of record seq - 1; 64 zeros ("0" * 64) for seq 1

Checkpoint: an Ed25519 signature by the node key over

    b"model-mirror audit checkpoint v1\\n" + b"<seq>\\n" + b"<hash>\\n"

(seq decimal, hash lowercase hex), stored with the signer's public key (hex). One is
written at every seq that is a multiple of CHECKPOINT_EVERY, in the transaction that
writes that record, so verification knows where one must exist; more are written at the
tail when a process closes after writing records, and after CHECKPOINT_INTERVAL seconds.

What this detects, and what it cannot: a record edited, removed, inserted or moved
breaks the chain from that point (its hash, or the next record's `prev`). An attacker
who rewrites the chain consistently from some record on (recomputing every later hash)
is caught by the first signed checkpoint at or after that record, since they cannot sign
a new one. A cut tail (the last records removed) is caught when a checkpoint names a
removed record. What lies after the last checkpoint can be cut or rewritten without a
trace in the file alone: keep a copy of a recent checkpoint elsewhere (`mirror audit
verify --json` prints the last one) to close that window.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mirror.catalog.schema_audit import (
    GENESIS,  # the prev of record 1 (the schema's trigger knows it too)
)

__all__ = [
    "CHECKPOINT_EVERY",
    "CHECKPOINT_INTERVAL",
    "FORMAT_VERSION",
    "GENESIS",
    "canonical_bytes",
    "canonical_detail",
    "checkpoint_message",
    "clean_text",
    "record_hash",
]

FORMAT_VERSION = 1
CHECKPOINT_EVERY = 256
CHECKPOINT_INTERVAL = 600.0

_RECORD_MAGIC = b"model-mirror audit record v1\n"
_CHECKPOINT_MAGIC = b"model-mirror audit checkpoint v1\n"


def _field(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogatepass")
    return b"%d:" % len(raw) + raw + b"\n"


def canonical_bytes(seq: int, at: float, actor: str, action: str, target: str, outcome: str, detail: str,
                    prev: str) -> bytes:
    """The bytes a record's hash covers (module docstring: the format)."""
    parts = [str(int(seq)), f"{at:.6f}", actor, action, target, outcome, detail, prev]
    return _RECORD_MAGIC + b"".join(_field(p) for p in parts)


def record_hash(seq: int, at: float, actor: str, action: str, target: str, outcome: str, detail: str, prev: str) -> str:
    return hashlib.sha256(canonical_bytes(seq, at, actor, action, target, outcome, detail, prev)).hexdigest()


def checkpoint_message(seq: int, digest: str) -> bytes:
    return _CHECKPOINT_MAGIC + b"%d\n" % seq + digest.encode("ascii", "replace") + b"\n"


def canonical_detail(detail: dict[str, Any]) -> str:
    """The stored, hashed text of a record's detail. Values that are not JSON (a Path,
    bytes, a NaN) are stored as their text, so recording never fails."""
    try:
        return json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False, default=str)
    except (TypeError, ValueError):
        safe = {str(k): (v if isinstance(v, (str, int, bool)) or v is None else str(v)) for k, v in detail.items()}
        return json.dumps(safe, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def clean_text(value: object) -> str:
    """A record's text field: any value as text, lone surrogates (undecodable file
    names) escaped so that it is valid UTF-8."""
    text = value if isinstance(value, str) else str(value)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
