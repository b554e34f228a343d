"""`mirror release ...` (the registry) and `mirror alias ...` (channels, canaries,
rollback, history). Both act through the node's `Releases` and `Channels`, the same
components the admin API calls (http/admin_releases.py), under `cli:<user>`.

A running daemon sees each change on its next request (channels/table.py); its canary
controller advances canaries started here. On a node that follows an authority
(`[channels] authority`) every change is refused (the authority decides);
`mirror alias sync-status` says how the node's copy is doing. Commands that may need upstream (naming a
revision this mirror has not seen, the shadowing check) open the upstream session.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from mirror.audit.actor import cli_actor
from mirror.caller import Caller
from mirror.channels import render
from mirror.cli.common import add_config_args, node_for, parse_when, print_json
from mirror.errors import UsageError
from mirror.model import REPO_TYPES, RepoKey
from mirror.units import parse_duration


def register(sub: Any) -> None:
    p = sub.add_parser("release", help="releases: immutable versions of a repo with lineage and metadata")
    rsub = p.add_subparsers(dest="release_command", metavar="ACTION")
    rsub.required = True
    c = _cmd(rsub, "create", "record a release: VERSION (v1.2.0) is the commit REV names", run_release_create)
    c.add_argument("version", metavar="VERSION")
    c.add_argument("--revision", required=True, metavar="REV", help="a commit, branch, tag, alias or release")
    c.add_argument("--meta", metavar="FILE.json", help="free metadata (a JSON object)")
    c.add_argument("--param", action="append", default=[], metavar="K=V", help="a training parameter (repeat)")
    c.add_argument("--dataset", action="append", default=[], metavar="REPO@REV", help="a training dataset (repeat)")
    c.add_argument("--note", default="", metavar="TEXT")
    c.add_argument("--force", action="store_true", help="even if upstream has a branch or tag of that name")
    _cmd(rsub, "list", "list releases, newest version first", run_release_list)
    s = _cmd(rsub, "show", "one release, with the aliases that point at it", run_release_show)
    s.add_argument("version", metavar="VERSION")
    d = _cmd(rsub, "delete", "delete a release no alias points at", run_release_delete)
    d.add_argument("version", metavar="VERSION")

    p = sub.add_parser("alias", help="aliases (prod -> a commit): set, rollback, canary, history")
    asub = p.add_subparsers(dest="alias_command", metavar="ACTION")
    asub.required = True
    s = _cmd(asub, "set", "point ALIAS at REV (a commit, branch, tag or release)", run_alias_set, alias=True)
    s.add_argument("revision", metavar="REV")
    s.add_argument("--reason", required=True, metavar="TEXT")
    s.add_argument("--force", action="store_true", help="even if upstream has a branch or tag of that name")
    _cmd(asub, "get", "what ALIAS serves now", run_alias_get, alias=True)
    _cmd(asub, "list", "the aliases of REPO", run_alias_list)
    h = _cmd(asub, "history", "every change of ALIAS: who, when, why, from, to", run_alias_history, alias=True)
    h.add_argument("--limit", type=int, default=100)
    r = _cmd(asub, "rollback", "back to the previous target (or roll a running canary back)", run_alias_rollback,
             alias=True)
    r.add_argument("--reason", required=True, metavar="TEXT")
    a = _cmd(asub, "at", "which commit ALIAS served at a time", run_alias_at, alias=True)
    a.add_argument("--time", required=True, metavar="T",
                   help="ISO 8601 (UTC unless it has an offset), unix seconds, or a duration ago (2h)")
    k = _cmd(asub, "canary", "send PERCENT of clients (sticky) to REV; advance while gates hold", run_alias_canary,
             alias=True)
    k.add_argument("--to", required=True, metavar="REV")
    k.add_argument("--percent", required=True, type=float)
    k.add_argument("--step", type=float, default=0.0, help="percent added each interval while the gates hold")
    k.add_argument("--every", default="60s", metavar="DURATION", help="interval between analyses (default 60s)")
    k.add_argument("--max", type=float, default=None, help="weight at which a passing analysis promotes (default 100)")
    k.add_argument("--gate", action="append", default=[], metavar="EXPR", help='e.g. "accuracy >= 0.95" (repeat)')
    k.add_argument("--failure-limit", type=int, default=1, help="failed analyses in a row that roll back (default 1)")
    k.add_argument("--on-missing-metrics", choices=("hold", "rollback"), default="hold")
    k.add_argument("--reason", default="", metavar="TEXT")
    for name, helptext, run in (("promote", "make the canary the stable target now", run_alias_promote),
                                ("abort", "end the canary; everyone back on the stable target", run_alias_abort)):
        x = _cmd(asub, name, helptext, run, alias=True)
        x.add_argument("--reason", default="", metavar="TEXT")
    d = _cmd(asub, "delete", "remove ALIAS (its history stays)", run_alias_delete, alias=True)
    d.add_argument("--reason", required=True, metavar="TEXT")
    st = asub.add_parser("sync-status", help="on a follower ([channels] authority): how its copy of the authority's "
                                             "releases and aliases is doing")
    add_config_args(st)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(run=run_alias_sync_status)


def _cmd(sub: Any, name: str, helptext: str, run: Any, *, alias: bool = False) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=helptext)
    add_config_args(p)
    p.add_argument("repo", metavar="REPO")
    if alias:
        p.add_argument("alias", metavar="ALIAS")
    p.add_argument("--repo-type", choices=REPO_TYPES, default="model")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)
    return p


def _key(args: argparse.Namespace) -> RepoKey:
    from mirror.admin.revisions import parse_spec

    key, rev = parse_spec(args.repo, args.repo_type)
    if rev is not None:
        raise UsageError(f"REPO is org/name without a revision, got {args.repo!r}")
    return key


def _caller() -> Caller:
    """The operator at the shell: an admin, with their own Hub token if they set one."""
    return Caller(hub_token=os.environ.get("HF_TOKEN") or None, address="cli", principal=cli_actor(), role="admin")


# --- releases ---------------------------------------------------------------------------


async def run_release_create(args: argparse.Namespace) -> int:
    from mirror.channels.releases import parse_param

    meta: dict[str, Any] = {}
    if args.meta:
        try:
            meta = json.loads(Path(args.meta).read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"--meta {args.meta}: {getattr(exc, 'strerror', None) or exc}") from None
        if not isinstance(meta, dict):
            raise UsageError(f"--meta {args.meta} must hold a JSON object")
    params = dict(parse_param(p) for p in args.param)
    key = _key(args)
    async with node_for(args, online=True) as node:
        rel = await node.releases.create(key, args.version, args.revision, _caller(), params=params,
                                         datasets=args.dataset, meta=meta, note=args.note, force=args.force)
    if args.json:
        print_json(render.release_json(key, rel))
    else:
        print(f"release {key} {rel.name} -> {rel.commit}")
    return 0


async def run_release_list(args: argparse.Namespace) -> int:
    key = _key(args)
    async with node_for(args) as node:
        rels = await node.releases.list_releases(key)
    if args.json:
        print_json([render.release_json(key, r) for r in rels])
        return 0
    for r in rels:
        print(f"{r.name:<16} {r.commit[:12]}  {render.iso(r.created_at)}  {r.author}  {r.note}")
    if not rels:
        print(f"{key} has no releases")
    return 0


async def run_release_show(args: argparse.Namespace) -> int:
    key = _key(args)
    async with node_for(args) as node:
        rel = await node.releases.get(key, args.version)
        aliases = await node.releases.aliases_of(rel)
    data = render.release_json(key, rel, aliases)
    if args.json:
        print_json(data)
        return 0
    for k in ("version", "commit", "author", "created_at", "note"):
        print(f"{k + ':':<12} {data[k]}")
    print(f"{'aliases:':<12} {', '.join(aliases) or '-'}")
    print(f"{'datasets:':<12} {', '.join(rel.datasets) or '-'}")
    for k, v in sorted(rel.params.items()):
        print(f"  param {k} = {json.dumps(v)}")
    if rel.meta:
        print(f"{'meta:':<12} {json.dumps(rel.meta, sort_keys=True)}")
    return 0


async def run_release_delete(args: argparse.Namespace) -> int:
    key = _key(args)
    async with node_for(args) as node:
        rel = await node.releases.delete(key, args.version, _caller())
    if args.json:
        print_json({**render.release_json(key, rel), "deleted": True})
    else:
        print(f"deleted release {key} {rel.name} ({rel.commit[:12]})")
    return 0


# --- aliases ----------------------------------------------------------------------------


def _print_change(args: argparse.Namespace, key: RepoKey, change: Any, row: Any) -> None:
    if args.json:
        print_json(render.change_json(key, change, row))
    elif change is None:
        print(f"{key} {args.alias} unchanged: " + render.alias_line(row))
    else:
        print(f"{change.action}: {key} " + (render.alias_line(row) if row is not None else f"{args.alias} deleted"))


async def run_alias_set(args: argparse.Namespace) -> int:
    key = _key(args)
    async with node_for(args, online=True) as node:
        change = await node.channels.set(key, args.alias, args.revision, _caller(), reason=args.reason, force=args.force)
        row = await node.channels.get(key, args.alias)
    _print_change(args, key, change, row)
    return 0


async def run_alias_get(args: argparse.Namespace) -> int:
    key = _key(args)
    async with node_for(args) as node:
        row = await node.channels.get(key, args.alias)
    if args.json:
        print_json(render.alias_json(key, row))
    else:
        print(render.alias_line(row))
    return 0


async def run_alias_list(args: argparse.Namespace) -> int:
    key = _key(args)
    async with node_for(args) as node:
        rows = await node.channels.list_aliases(key)
    if args.json:
        print_json([render.alias_json(key, r) for r in rows])
        return 0
    for r in rows:
        print(render.alias_line(r))
    if not rows:
        print(f"{key} has no aliases")
    return 0


async def run_alias_history(args: argparse.Namespace) -> int:
    key = _key(args)
    async with node_for(args) as node:
        events = await node.channels.history(key, args.alias, max(1, min(args.limit, 100_000)))
    if args.json:
        print_json([render.event_json(e) for e in events])
    else:
        for e in events:
            print(render.event_line(e))
    return 0


async def run_alias_rollback(args: argparse.Namespace) -> int:
    return await _alias_change(args, "rollback")


async def run_alias_at(args: argparse.Namespace) -> int:
    key = _key(args)
    async with node_for(args) as node:
        when = parse_when(args.time, node.clock.now())
        ev = await node.channels.at(key, args.alias, when)
    if args.json:
        print_json(render.at_json(key, args.alias, when, ev))
    elif ev is None:
        print(f"{key} {args.alias} did not exist at {render.iso(when)}")
    else:
        split = f"; canary {ev.weight:g}% -> {ev.canary}" if ev.canary else ""
        print(f"{ev.to_sha}{split}  (since {render.iso(ev.at)}, {ev.action} by {ev.actor})")
    return 0


async def run_alias_canary(args: argparse.Namespace) -> int:
    from mirror.channels.plan import CanaryPlan, Gate

    key = _key(args)
    every = parse_duration(args.every)
    plan = CanaryPlan(args.percent, args.step, every, args.max if args.max is not None else 100.0,
                      tuple(Gate.parse(g) for g in args.gate), args.failure_limit, args.on_missing_metrics)
    async with node_for(args, online=True) as node:
        change = await node.channels.canary(key, args.alias, args.to, plan, _caller(), reason=args.reason)
        row = await node.channels.get(key, args.alias)
    _print_change(args, key, change, row)
    return 0


async def run_alias_promote(args: argparse.Namespace) -> int:
    return await _alias_change(args, "promote")


async def run_alias_abort(args: argparse.Namespace) -> int:
    return await _alias_change(args, "abort")


async def run_alias_delete(args: argparse.Namespace) -> int:
    return await _alias_change(args, "delete")


async def _alias_change(args: argparse.Namespace, what: str) -> int:
    """rollback, promote, abort, delete: one call on the alias, then what it serves now."""
    key = _key(args)
    async with node_for(args) as node:
        change = await getattr(node.channels, what)(key, args.alias, _caller(), reason=args.reason)
        row = None if what == "delete" else await node.channels.get(key, args.alias)
    _print_change(args, key, change, row)
    return 0


async def run_alias_sync_status(args: argparse.Namespace) -> int:
    async with node_for(args) as node:
        authority = node.channels.follows
        state = await node.catalog.channel_copy.state(authority) if authority else None
    out: dict[str, Any] = {"authority": authority or None, "following": bool(authority)}
    if state is not None:
        out.update(authority_key=state.authority_key, event=state.event, release_serial=state.release_serial,
                   applied_at=render.iso(state.applied_at), error=state.error or None,
                   error_at=render.iso(state.error_at))
    if args.json:
        print_json(out)
        return 0
    if not authority:
        print("this node decides its own releases and aliases (no [channels] authority)")
        return 0
    if state is None:
        print(f"follows {authority}: nothing copied yet (is the daemon running?)")
        return 0
    print(f"follows {authority} (key {state.authority_key[:16] or '?'}): copied up to its event {state.event}, "
          f"last change applied {out['applied_at'] or 'never'}")
    if state.error:
        print(f"pulls fail since {out['error_at']}: {state.error}; serving the last copy")
    return 0
