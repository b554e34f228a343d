"""`mirror metrics record|show|compare`: per-version metrics (channels/metrics.py).

    mirror metrics record org/m@v1.2.0 accuracy=0.97 latency_ms=41 [--client C] [--time T]
    mirror metrics show org/m@v1.2.0
    mirror metrics compare org/m v1.1.0 v1.2.0 [--metric accuracy]

A revision is a commit, a branch or tag known locally, a release or an alias. `record`
writes all its values or none, audited (`metrics.record`) with the CLI's actor, who is
also the reporter; a canary whose canary side is that version is told at once. `compare`
runs Welch's t-test per metric both versions have (A against B: t > 0 when A's mean is
higher); p >= 0.05 is "no significant difference".
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from mirror.audit.actor import cli_actor
from mirror.cli.common import add_config_args, human_bytes, node_for, parse_when, print_json
from mirror.errors import UsageError
from mirror.model import REPO_TYPES


def register(sub: Any) -> None:
    p = sub.add_parser("metrics", help="per-version metrics: record, show, compare two versions")
    msub = p.add_subparsers(dest="metrics_command", metavar="ACTION")
    msub.required = True

    rec = msub.add_parser("record", help="record metric values for a version (REPO@REV name=value...)")
    add_config_args(rec)
    rec.add_argument("spec", metavar="REPO@REV")
    rec.add_argument("values", metavar="NAME=VALUE", nargs="+")
    rec.add_argument("--repo-type", choices=REPO_TYPES, default="model")
    rec.add_argument("--client", default="", help="who measured (free text, 128 characters at most)")
    rec.add_argument("--time", metavar="T",
                     help="when it was measured: unix seconds, or ISO 8601 (UTC without an offset); default now")
    rec.add_argument("--json", action="store_true", help="machine-readable output")
    rec.set_defaults(run=run_record)

    show = msub.add_parser("show", help="every metric of a version, and what the mirror served of it")
    add_config_args(show)
    show.add_argument("spec", metavar="REPO@REV")
    show.add_argument("--repo-type", choices=REPO_TYPES, default="model")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(run=run_show)

    cmp = msub.add_parser("compare", help="compare two versions' metrics (Welch's t-test)")
    add_config_args(cmp)
    cmp.add_argument("repo", metavar="REPO")
    cmp.add_argument("a", metavar="A", help="a revision")
    cmp.add_argument("b", metavar="B", help="another revision")
    cmp.add_argument("--metric", metavar="NAME", help="only this metric")
    cmp.add_argument("--repo-type", choices=REPO_TYPES, default="model")
    cmp.add_argument("--json", action="store_true", help="machine-readable output")
    cmp.set_defaults(run=run_compare)


def parse_values(items: list[str]) -> list[tuple[str, float]]:
    out = []
    for item in items:
        name, sep, raw = item.partition("=")
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not sep or not name or not math.isfinite(value):
            raise UsageError(f"{item!r} is not NAME=VALUE with a finite number")
        out.append((name, value))
    return out


async def run_record(args: argparse.Namespace) -> int:
    from mirror.admin.revisions import parse_spec

    key, rev = parse_spec(args.spec, args.repo_type)
    if rev is None:
        raise UsageError("name the version: REPO@REV")
    values, actor = parse_values(args.values), cli_actor()
    at = parse_when(args.time, time.time()) if args.time is not None else None
    async with node_for(args) as node:
        repo, commit = await node.channels.version_of(key, rev, f"id:{args.client}" if args.client else "")
        vm = node.version_metrics
        await vm.record_all([vm.report(repo, commit, name, value, client=args.client, at=at, reporter=actor)
                             for name, value in values])
        names = sorted({name for name, _ in values})
        node.audit.record(actor, "metrics.record", f"{key}@{commit}", names=names[:50], values=len(values))
        await node.canary.after_report(repo, commit)
    if args.json:
        print_json({"repo": key.repo_id, "repo_type": key.repo_type, "revision": rev, "commit": commit,
                    "recorded": len(values)})
    else:
        print(f"recorded {len(values)} value{'s' * (len(values) != 1)} for {key}@{commit[:12]} ({rev})")
    return 0


async def run_show(args: argparse.Namespace) -> int:
    from mirror.admin.revisions import parse_spec

    key, rev = parse_spec(args.spec, args.repo_type)
    if rev is None:
        raise UsageError("name the version: REPO@REV")
    async with node_for(args) as node:
        repo, commit = await node.channels.version_of(key, rev)
        out = await node.version_metrics.summary(repo, commit)
    if args.json:
        print_json({"repo": key.repo_id, "repo_type": key.repo_type, "revision": rev, **out})
        return 0
    print(f"{key}@{commit} ({rev})")
    rows = [["METRIC", "N", "MEAN", "STDDEV", "MIN", "MAX", "LAST", "LAST REPORT"]]
    rows += [[name, str(m["n"]), _num(m["mean"]), _num(m["stddev"]), _num(m["min"]), _num(m["max"]), _num(m["last"]),
              _when(m["last_at"])] for name, m in out["metrics"].items()]
    if len(rows) > 1:
        _print_rows(rows)
    else:
        print("no metrics reported")
    b = out["builtins"]
    rate = "-" if b["mirror_error_rate"] is None else f"{100 * b['mirror_error_rate']:.2f}%"
    print(f"served: {b['mirror_requests']:.0f} requests, {b['mirror_errors']:.0f} errors ({rate}), "
          f"{human_bytes(b['mirror_bytes'])}, {b['mirror_clients']:.0f} clients")
    return 0


async def run_compare(args: argparse.Namespace) -> int:
    from mirror.admin.revisions import parse_spec

    key, rev = parse_spec(args.repo, args.repo_type)
    if rev is not None:
        raise UsageError("compare takes REPO A B (the revisions as separate arguments)")
    async with node_for(args) as node:
        repo, a = await node.channels.version_of(key, args.a)
        _repo, b = await node.channels.version_of(key, args.b)
        out = await node.version_metrics.compare(repo, a, b, args.metric)
    if args.json:
        print_json({"repo": key.repo_id, "repo_type": key.repo_type, "a_revision": args.a, "b_revision": args.b, **out})
        return 0
    print(f"A = {key}@{a[:12]} ({args.a})")
    print(f"B = {key}@{b[:12]} ({args.b})")
    rows = [["METRIC", "A N", "A MEAN", "A STDDEV", "B N", "B MEAN", "B STDDEV", "T", "P", "VERDICT"]]
    for m in out["metrics"]:
        verdict = m["verdict"] + (f" ({m['reason']})" if m["reason"] else "")
        rows.append([m["metric"], str(m["a"]["n"]), _num(m["a"]["mean"]), _num(m["a"]["stddev"]), str(m["b"]["n"]),
                     _num(m["b"]["mean"]), _num(m["b"]["stddev"]), _num(m["t"]), _num(m["p"]), verdict])
    if len(rows) > 1:
        _print_rows(rows)
    else:
        print("no metric reported for both versions")
    for side in ("a", "b"):
        if out.get(f"only_{side}"):
            print(f"only {side.upper()}: {', '.join(out[f'only_{side}'])}")
    return 0


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _print_rows(rows: list[list[str]]) -> None:
    """Columns aligned; the last one runs free."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print(("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1]).rstrip())
