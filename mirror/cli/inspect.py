"""`mirror ls` and `mirror show`: what the mirror holds, from the catalog alone."""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Any, AsyncIterator

from mirror.cli.common import add_config_args, human_bytes, node_for, print_json
from mirror.model import REPO_TYPES


def register(sub: Any) -> None:
    p = sub.add_parser("ls", help="repos with their revisions, sizes, last access and pins")
    add_config_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run_ls)

    p = sub.add_parser("show", help="files of one revision: size, hash, cached, chunks, shared bytes")
    add_config_args(p)
    p.add_argument("spec", metavar="REPO[@REV]")
    p.add_argument("--repo-type", choices=REPO_TYPES, default="model")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run_show)


@contextlib.asynccontextmanager
async def open_catalog(args: argparse.Namespace) -> AsyncIterator[Any]:
    async with node_for(args) as node:
        yield node.catalog


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "never"


async def run_ls(args: argparse.Namespace) -> int:
    from mirror.admin.inspect import list_repos

    async with open_catalog(args) as catalog:
        repos = await list_repos(catalog)
    if args.json:
        print_json([r.to_json() for r in repos])
        return 0
    if not repos:
        print("no repos")
    for r in repos:
        print(f"{r.key} ({r.key.repo_type})  logical {human_bytes(r.logical_bytes)}  stored {human_bytes(r.stored_bytes)}"
              f"  last access {_when(r.last_access)}")
        for name, sha in r.refs.items():
            print(f"    {name or '(default)'} -> {sha[:12]}")
        for p in r.pins:
            print(f"    pinned {p.commit[:12]}" + (f" ({p.label})" if p.label else ""))
    return 0


async def run_show(args: argparse.Namespace) -> int:
    from mirror.admin.inspect import show_revision
    from mirror.admin.revisions import parse_spec

    key, rev = parse_spec(args.spec, args.repo_type)
    async with open_catalog(args) as catalog:
        view = await show_revision(catalog, key, rev)
    if args.json:
        print_json({
            "repo": key.repo_id,
            "repo_type": key.repo_type,
            "commit": view.commit,
            "refs": view.refs,
            "pinned": view.pinned,
            "files": [
                {"path": f.path, "size": f.size, "upstream_hash": f.lfs_sha256 or f.oid, "identity": f.identity,
                 "cached": f.cached, "chunks": f.chunks, "shared_bytes": f.shared_bytes,
                 "shared_share": round(f.shared_bytes / f.size, 4) if f.size else 0.0}
                for f in view.files
            ],
        })
        return 0
    refs = ", ".join(view.refs) or "no ref"
    print(f"{key}@{view.commit} ({refs}){'  pinned' if view.pinned else ''}")
    for f in view.files:
        share = f"{f.shared_bytes / f.size:6.1%}" if f.size and f.cached else "     -"
        print(f"  {'cached' if f.cached else 'absent'}  {human_bytes(f.size):>11}  {(f.lfs_sha256 or f.oid)[:16]}"
              f"  {f.chunks:4d} chunks  shared {share}  {f.path}")
    total = sum(f.size for f in view.files)
    print(f"{len(view.files)} files, {human_bytes(total)}; cached {human_bytes(view.cached_bytes)}, "
          f"shared with other revisions {human_bytes(view.shared_bytes)}")
    return 0
