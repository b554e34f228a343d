"""`mirror quarantine list|show|release|scan`: files refused because a scan found them
unsafe or could not scan them (scan/quarantine.py), and an admin's way out.

A verdict belongs to the content (its identity, `sha256:...`), so releasing it releases
every path that serves those bytes. Releases are audited with the CLI's actor
(`cli:<user>`); a running daemon sees a release at its next request for the file.
`scan` scans stored files of the scanned kinds that have no verdict yet (imports,
bundles, files stored before scanning was on) without waiting for a client; `--rescan`
also those refused before (a scan that failed, a newer scanner). Clean verdicts are not
scanned again: a running daemon remembers them.
"""

from __future__ import annotations

import argparse
import getpass
import re
import time
from typing import Any

from mirror.cli.common import add_config_args, node_for, print_json
from mirror.model import REPO_TYPES


def register(sub: Any) -> None:
    p = sub.add_parser("quarantine", help="files refused by the pickle and safetensors scans, and releasing them")
    qsub = p.add_subparsers(dest="quarantine_command", metavar="ACTION")
    qsub.required = True

    ls = qsub.add_parser("list", help="quarantined files (--all: every scan verdict)")
    add_config_args(ls)
    ls.add_argument("--all", action="store_true", help="also clean and released files")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(run=run_list)

    show = qsub.add_parser("show", help="the scan verdict of one content")
    add_config_args(show)
    show.add_argument("spec", metavar="IDENTITY_OR_REPO@REV:PATH",
                      help="sha256:<hex> (or a unique prefix), or a file as org/name@rev:path")
    show.add_argument("--repo-type", choices=REPO_TYPES, default="model")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(run=run_show)

    rel = qsub.add_parser("release", help="let a quarantined content be served (audited)")
    add_config_args(rel)
    rel.add_argument("identity", metavar="IDENTITY", help="sha256:<hex> or sha1:<hex> (or a unique prefix)")
    rel.add_argument("--reason", default="", help="why it is safe to serve (kept in the audit log)")
    rel.add_argument("--json", action="store_true", help="machine-readable output")
    rel.set_defaults(run=run_release)

    scan = qsub.add_parser("scan", help="scan stored files that have no verdict yet")
    add_config_args(scan)
    scan.add_argument("repo", nargs="?", metavar="REPO", help="only this repo (default: every repo)")
    scan.add_argument("--repo-type", choices=REPO_TYPES, default="model")
    scan.add_argument("--rescan", action="store_true",
                      help="also scan again files found unsafe or unscannable (a newer scanner, a failed scan); "
                           "releases are kept")
    scan.add_argument("--json", action="store_true", help="machine-readable output")
    scan.set_defaults(run=run_scan)


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def _state(scan: Any) -> str:
    if scan.verdict == "clean":
        return "clean"
    return "QUARANTINED" if scan.quarantined else "released"


async def run_list(args: argparse.Namespace) -> int:
    async with node_for(args) as node:
        scans = await node.catalog.scans.listing(everything=args.all)
    if args.json:
        print_json([s.to_json() for s in scans])
        return 0
    if not scans:
        print("no scanned files" if args.all else "nothing is quarantined")
    for s in scans:
        print(f"{_state(s):<11} {s.identity}  {s.repo}@{s.commit[:12]}:{s.path}  ({_when(s.scanned_at)})")
        if s.findings:
            print(f"            {s.verdict}: {'; '.join(s.findings)}")
    return 0


async def run_show(args: argparse.Namespace) -> int:
    async with node_for(args) as node:
        if not _is_identity(args.spec):
            identity, where = await _file_identity(node, args.spec, args.repo_type)
            scan = await node.catalog.scans.get(identity)
            if scan is None:
                if args.json:
                    print_json({"identity": identity, "file": where, "verdict": None, "quarantined": False})
                else:
                    print(f"{where} ({identity}) has not been scanned")
                return 0
        else:
            scan = await node.quarantine.lookup(args.spec)
    if args.json:
        print_json(scan.to_json())
        return 0
    print(f"identity:  {scan.identity}")
    print(f"file:      {scan.repo}@{scan.commit}:{scan.path}")
    print(f"state:     {_state(scan)}")
    print(f"verdict:   {scan.verdict} by {scan.scanner} at {_when(scan.scanned_at)}")
    for f in scan.findings:
        print(f"finding:   {f}")
    if scan.released_at is not None:
        print(f"released:  {_when(scan.released_at)} by {scan.released_by}" + (f" ({scan.release_reason})" if scan.release_reason else ""))
    elif scan.quarantined:
        print(f"release:   mirror quarantine release {scan.identity} --reason '...'")
    return 0


async def _file_identity(node: Any, spec: str, repo_type: str) -> tuple[str, str]:
    """The content identity of a file named `org/name@rev:path` (or `org/name:path`),
    from the catalog alone."""
    from mirror.admin.revisions import local_commit, parse_spec
    from mirror.errors import EntryNotFound, UsageError

    repo, at, rest = spec.partition("@")
    if at:
        rev, sep, path = rest.partition(":")
        repo_rev = f"{repo}@{rev}"
    else:
        repo_rev, sep, path = spec.partition(":")
    if not sep or not path:
        raise UsageError(f"not a file spec: {spec!r} (use org/name@revision:path or an identity sha256:...)")
    key, rev = parse_spec(repo_rev, repo_type)
    repo, commit = await local_commit(node.catalog, key, rev)
    listing = await node.catalog.repos.get_listing(repo, commit)
    entry = (listing or {}).get(path)
    if entry is None or entry.kind != "file":
        raise EntryNotFound(f"{path} is not a file of {key}@{commit[:12]} in this mirror")
    return entry.identity, f"{key}@{commit[:12]}:{path}"


def _is_identity(text: str) -> bool:
    return text.startswith(("sha256:", "sha1:")) or re.fullmatch(r"[0-9a-f]{4,64}", text) is not None


async def run_release(args: argparse.Namespace) -> int:
    actor = cli_actor()
    async with node_for(args) as node:
        scan = await node.quarantine.release(args.identity, actor, args.reason)
    if args.json:
        print_json(scan.to_json())
    else:
        print(f"released {scan.identity} ({scan.repo}@{scan.commit[:12]}:{scan.path}); audited as {actor}")
    return 0


async def run_scan(args: argparse.Namespace) -> int:
    from mirror.admin.revisions import parse_spec
    from mirror.errors import MirrorError
    from mirror.model import FileEntry, RepoKey
    from mirror.resolve.spool import FillTarget
    from mirror.scan.quarantine import scanned_suffixes

    actor = cli_actor()
    results: list[dict[str, Any]] = []
    failed = 0
    async with node_for(args) as node:
        repo = None
        if args.repo:
            key, _rev = parse_spec(args.repo, args.repo_type)
            repo = (key.repo_type, key.repo_id)
        seen: set[str] = set()
        for c in await node.catalog.scans.unscanned(scanned_suffixes(), repo, rescan=args.rescan):
            target = FillTarget(RepoKey(c.repo_type, c.repo_id), c.commit,
                                FileEntry(c.path, "file", c.oid, c.size, c.lfs_sha256))
            if target.identity in seen:
                continue
            seen.add(target.identity)
            man = await node.catalog.content.get_manifest(target.identity)
            if man is None:
                continue
            row = {"identity": target.identity, "file": f"{target.key}@{c.commit[:12]}:{c.path}"}
            try:
                verdict = await node.quarantine.scan_stored(target, man, actor)
                row |= {"verdict": verdict.verdict, "findings": list(verdict.findings)}
            except MirrorError as exc:
                failed += 1
                row |= {"verdict": None, "error": exc.message}
            results.append(row)
    if args.json:
        print_json(results)
    else:
        for r in results:
            detail = "; ".join(r.get("findings") or []) or r.get("error", "")
            print(f"{r['verdict'] or 'FAILED':<7} {r['file']}" + (f"  ({detail})" if detail else ""))
        print(f"{len(results)} files scanned, {sum(1 for r in results if r['verdict'] not in (None, 'clean'))} quarantined"
              + (f", {failed} could not be read" if failed else ""))
    return 1 if failed else 0
