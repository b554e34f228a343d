"""Lifecycle commands: `mirror archive`, `mirror thaw`, `mirror gc` (and, with a shared
bucket, `mirror gc --forget-node KEY`).

`thaw` of a revision with nothing in the archive (never archived, or thawed already)
changes nothing and exits 0 saying "nothing to thaw": the revision is hot, which is what
was asked, so scripts may thaw idempotently (like `unpin` of an unpinned revision); an
unknown revision is an error (exit 1).
"""

from __future__ import annotations

import argparse
from typing import Any

from mirror.audit.actor import cli_actor
from mirror.cli.common import add_config_args, human_bytes, node_for, print_json
from mirror.cli.progress import Progress
from mirror.config import parse_duration


def register(sub: Any) -> None:
    p = sub.add_parser("archive", help="move cold revisions' chunks into compressed archive packs")
    add_config_args(p)
    p.add_argument("--dry-run", action="store_true", help="show what would move, change nothing")
    p.add_argument("--older-than", metavar="DURATION", help="idle time that makes a revision cold (default lifecycle.archive_after)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run_archive)

    p = sub.add_parser("thaw", help="bring an archived revision back to the hot tier")
    add_config_args(p)
    p.add_argument("target", metavar="REPO@REV", help="for example org/model@main or datasets/org/data@<sha>")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run_thaw)

    p = sub.add_parser("gc", help="delete manifests and chunks no kept revision references")
    add_config_args(p)
    p.add_argument("--dry-run", action="store_true", help="show what would go, delete nothing")
    p.add_argument("--forget-node", metavar="KEY",
                   help="shared bucket: stop honouring the references of a node gone for good (its public key)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run_gc)


async def run_archive(args: argparse.Namespace) -> int:
    older = parse_duration(args.older_than) if args.older_than else None
    progress = Progress("archive", unit="chunk", quiet=args.json)
    async with node_for(args) as node:
        try:
            rep = await node.archiver.archive(older_than=older, dry_run=args.dry_run, actor=cli_actor(), progress=progress)
        finally:
            progress.close()
    if args.json:
        print_json({**rep.__dict__, "saved": rep.saved})
        return 0
    verb = "would archive" if rep.dry_run else "archived"
    print(f"{verb} {len(rep.revisions)} revisions: {rep.chunks} chunks, {human_bytes(rep.raw_bytes)} raw")
    if not rep.dry_run:
        print(f"hot {human_bytes(rep.hot_bytes)} -> archive {human_bytes(rep.archive_bytes)} in {rep.packs} packs; "
              f"saved {human_bytes(rep.saved)}")
    return 0


async def run_thaw(args: argparse.Namespace) -> int:
    from mirror.lifecycle.archive import find_revision

    async with node_for(args) as node:
        repo, sha = await find_revision(node.catalog.repos, args.target)
        rep = await node.archiver.thaw(repo, sha, actor=cli_actor()) if await node.archiver.has_archived(repo, sha) else None
    if args.json:
        print_json({"revision": args.target, "commit": sha, "thawed": rep is not None,
                    "chunks": rep.chunks if rep else 0, "raw_bytes": rep.raw_bytes if rep else 0})
    elif rep is None:
        print(f"nothing to thaw: {args.target} ({sha[:12]}) has nothing in the archive; it is in the hot tier")
    else:
        print(f"thawed {sha[:12]}: {rep.chunks} chunks, {human_bytes(rep.raw_bytes)} back in the hot tier")
    return 0


async def run_gc(args: argparse.Namespace) -> int:
    if args.forget_node:
        return await _forget_node(args)
    progress = Progress("gc", unit="chunk", quiet=args.json)
    async with node_for(args) as node:
        try:
            rep = await node.collector.gc(dry_run=args.dry_run, actor=cli_actor(), progress=progress)
        finally:
            progress.close()
    if args.json:
        print_json({**rep.__dict__, "bucket": rep.bucket.__dict__ if rep.bucket is not None else None})
        return 0
    verb = "would delete" if rep.dry_run else "deleted"
    print(f"{verb} {rep.manifests_deleted} manifests, {rep.chunk_files_deleted} chunk files "
          f"({human_bytes(rep.bytes_freed)}), {rep.chunk_rows_deleted} chunk rows; "
          f"packs: {rep.packs_deleted} deleted, {rep.packs_repacked} repacked")
    if rep.kept_young or rep.kept_leased:
        print(f"kept {rep.kept_young} chunks younger than gc_grace and {rep.kept_leased} being read")
    b = rep.bucket
    if b is not None:
        print(f"bucket: another collector ({b.busy[:16]}) holds the lease; not collected" if b.busy else
              f"bucket: deleted {b.deleted_manifests} manifests and {b.deleted_chunks} chunks; "
              f"{b.candidates} unreferenced objects go at a later run if still unreferenced")
    return 0


async def _forget_node(args: argparse.Namespace) -> int:
    """`gc --forget-node KEY`: remove a node's reference sets from the shared bucket."""
    import asyncio

    from mirror.errors import ConfigError

    async with node_for(args) as node:
        shared = node.collector.shared
        if shared is None:
            raise ConfigError("--forget-node needs [store] backend = \"s3\" (a shared bucket)")
        try:
            n = await asyncio.get_running_loop().run_in_executor(None, shared.collector.forget_node, args.forget_node)
        except ValueError as exc:
            raise ConfigError(f"--forget-node: {exc}") from None
        node.audit.record(cli_actor(), "lifecycle.bucket_forget", "store", node=args.forget_node, reference_sets=n)
    if args.json:
        print_json({"node": args.forget_node, "reference_sets_removed": n})
    else:
        print(f"removed {n} reference sets of node {args.forget_node[:16]}; its objects are collected after two gc runs")
    return 0
