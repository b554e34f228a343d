"""`mirror audit [--since T] [--actor NAME] [--action A] [--limit N] [--json]` lists the
audit log; `mirror audit verify [--json]` checks its hash chain and signed checkpoints
(exit 0 when intact, 1 with the first bad record when anything was altered, removed or
reordered). The format and what verification can and cannot show: mirror/audit/chain.py.

T is an ISO date or time (2024-05-01, 2024-05-01T10:00, ...Z or +02:00; local time when
no zone is given) or a duration ago (90s, 1h, 7d). NAME and A match exactly or as a
prefix: `--actor cli` lists every CLI user, `--action lifecycle` every lifecycle step.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from datetime import datetime
from typing import Any

from mirror.cli.common import add_config_args, node_for, print_json
from mirror.errors import ConfigError, UsageError
from mirror.units import parse_duration

_DURATION = re.compile(r"\d+(\.\d+)?[smhdw]?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="list the audit log (who did what), or `audit verify` its hash chain")
    add_config_args(p)
    p.add_argument("action_", nargs="?", choices=["verify"], metavar="verify",
                   help="check the hash chain and the signed checkpoints (exit 1 and the first bad record)")
    p.add_argument("--since", metavar="T", help="from time T: ISO date/time or a duration ago (1h, 7d)")
    p.add_argument("--until", metavar="T", help="before time T (same forms)")
    p.add_argument("--actor", metavar="NAME", help="only this actor (or prefix: cli, peer)")
    p.add_argument("--action", metavar="A", help="only this action (or prefix: pin, lifecycle)")
    p.add_argument("--limit", type=int, metavar="N", help="only the last N matching records")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)


def parse_when(text: str, now: float) -> float:
    """Seconds since the epoch of an ISO date/time or of a duration ago."""
    t = text.strip()
    if _DURATION.fullmatch(t.lower()):
        try:
            return now - parse_duration(t)
        except ConfigError as exc:
            raise UsageError(exc.message) from None
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise UsageError(f"invalid time {text!r}: use an ISO date or time (2024-05-01, 2024-05-01T10:00Z) "
                         "or a duration ago (1h, 7d)") from None
    return (dt if dt.tzinfo is not None else dt.astimezone()).timestamp()


async def run(args: argparse.Namespace) -> int:
    if args.action_ == "verify":
        if any(v is not None for v in (args.since, args.until, args.actor, args.action, args.limit)):
            raise UsageError("`mirror audit verify` checks the whole log; --since, --until, --actor, --action "
                             "and --limit go with `mirror audit`")
        return await _verify(args)
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    now = time.time()
    since = parse_when(args.since, now) if args.since else None
    until = parse_when(args.until, now) if args.until else None
    async with node_for(args) as node:
        rows = await node.audit.read(since=since, until=until, actor=args.actor, action=args.action,
                                     limit=args.limit, newest=args.limit is not None)
    if args.json:
        print_json(rows)
        return 0
    for r in rows:
        print(format_record(r))
    return 0


def format_record(r: dict[str, Any]) -> str:
    """One line: time, #seq, actor, action, target, outcome, detail (control characters
    escaped, so a record cannot forge lines of the listing)."""
    detail = r["detail"]
    extra = json.dumps(detail, sort_keys=True, separators=(",", ":")) if detail not in ({}, "") else ""
    fields = [r["time"] or "?", f"#{r['seq']}", r["actor"], r["action"], r["target"] or "-", r["outcome"], extra]
    return "  ".join(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(f)) for f in fields if f != "")


async def _verify(args: argparse.Namespace) -> int:
    async with node_for(args) as node:
        trusted = await node.catalog.meta.trusted()
        rep = await node.audit.verify(trusted)
    if args.json:
        print_json(rep.to_json())
        return 0 if rep.ok else 1
    cp = rep.last_checkpoint
    summary = (f"{rep.records} records, {rep.checkpoints} checkpoints; last record #{rep.last_seq} "
               f"({rep.last_hash[:16]}); last valid checkpoint " + (f"#{cp['seq']}" if cp else "none"))
    bad = rep.first_bad
    if bad is None:
        print(f"audit log intact: {summary}")
        return 0
    print(f"BAD record #{bad.seq}: {bad.reason}: {bad.message}")
    if bad.record is not None:
        print(f"  {format_record(bad.record)}")
    print(f"checked {summary}")
    return 1
