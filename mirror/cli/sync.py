"""`mirror pull` (warm one revision) and `mirror sync` (the watch list, for cron).

Both plan and fetch through the node's `Syncer` (`mirror.sync`), with the same fills
client requests use; `sync` holds `locks/sync.lock`
so overlapping cron runs are harmless. `mirror sync --from URL [--repo PATTERN]...`
replicates another mirror node instead (its `Replicator`, peers/replicate.py: the
source's changelog, verified manifests, missing chunks only), under the same lock; the
Hub is not asked. Runs that change content are audited (`sync.pull`, `sync.run`,
`sync.from`; outcome 'error' when anything failed). Exit status: 0 success (or "already running"), 1 when anything
failed (listed), 2 for usage or config errors.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from mirror.audit.actor import cli_actor
from mirror.caller import Caller
from mirror.cli.common import add_config_args, human_bytes, load_config, node_for, print_json
from mirror.cli.progress import Progress
from mirror.config import SyncRepo
from mirror.errors import MirrorError, UsageError
from mirror.model import REPO_TYPES


def register(sub: Any) -> None:
    p = sub.add_parser("pull", help="warm the cache with one revision of a repo")
    add_config_args(p, creates_data_dir=True)
    p.add_argument("repo", metavar="REPO", help="repo id, e.g. org/name")
    p.add_argument("--revision", "-r", default="", help="branch, tag or commit (default: the default branch)")
    p.add_argument("--repo-type", choices=REPO_TYPES, default="model")
    p.add_argument("--include", action="append", default=[], metavar="GLOB", help="only paths matching (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="skip paths matching (repeatable)")
    _common(p)
    p.set_defaults(run=run_pull)

    p = sub.add_parser("sync", help="bring the watch list ([[sync.repos]]) up to date; for cron")
    add_config_args(p, creates_data_dir=True)
    p.add_argument("--dry-run", action="store_true", help="print the plan (files and bytes to fetch) and stop")
    p.add_argument("--wait", action="store_true", help="wait for a running sync instead of exiting")
    p.add_argument("--from", dest="source", metavar="URL",
                   help="replicate the mirror node at URL (its key must be trusted here, and ours there) instead of the watch list")
    p.add_argument("--repo", action="append", default=[], metavar="REPO",
                   help="with --from: only repos matching (org/name, datasets/org/name, globs; repeatable)")
    _common(p)
    p.set_defaults(run=run_sync_cmd)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token", help="Hub token for gated/private repos (default: $HF_TOKEN)")
    p.add_argument("--concurrency", type=int, default=4, help="files fetched at once (default 4)")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.add_argument("--quiet", "-q", action="store_true", help="print only failures (for cron mail)")


def _caller(args: argparse.Namespace) -> Caller:
    return Caller(hub_token=args.token or os.environ.get("HF_TOKEN") or None, address="cli")


def _prepare(args: argparse.Namespace) -> None:
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if args.quiet:
        logging.getLogger("mirror").setLevel(logging.WARNING)


async def run_pull(args: argparse.Namespace) -> int:
    _prepare(args)
    spec = SyncRepo(args.repo, args.repo_type, (args.revision,), tuple(args.include), tuple(args.exclude))
    progress = Progress(f"pull {args.repo}", quiet=args.quiet or args.json, log_lines=True)
    async with node_for(args, online=True, recover_temps=True) as node:
        try:
            report = await node.syncer.run(repos=[spec], caller=_caller(args), concurrency=args.concurrency, progress=progress)
        finally:
            progress.close()
        target = ("" if args.repo_type == "model" else f"{args.repo_type}s/") + args.repo
        _audit_sync(node, "sync.pull", f"{target}@{args.revision}" if args.revision else target, report)
    return _render(report, args)


async def run_sync_cmd(args: argparse.Namespace) -> int:
    _prepare(args)
    if args.source is not None:
        return await _run_from(args)
    if args.repo:
        raise UsageError("--repo goes with --from (the watch list of `mirror sync` is [[sync.repos]])")
    config = load_config(args)
    if not config.sync.repos:
        raise UsageError(f"{config.source}: the watch list is empty (add [[sync.repos]] tables)")
    progress = Progress("sync", quiet=args.quiet or args.json, log_lines=True)
    async with node_for(args, config=config, online=True, recover_temps=True) as node:
        async with node.syncer.lock.held_async(wait=args.wait):
            try:
                report = await node.syncer.run(caller=_caller(args), dry_run=args.dry_run, concurrency=args.concurrency, progress=progress)
            finally:
                progress.close()
        if not args.dry_run:
            _audit_sync(node, "sync.run", "watch list", report)
    return _render(report, args)


def _audit_sync(node: Any, action: str, target: str, report: Any) -> None:
    node.audit.record(cli_actor(), action, target, "ok" if report.ok else "error",
                      repos=[str(r.plan.key) for r in report.repos],
                      files_fetched=sum(r.files_fetched for r in report.repos),
                      bytes_fetched=sum(r.bytes_fetched for r in report.repos), failures=len(report.failures))


def _render(report: Any, args: argparse.Namespace) -> int:
    from mirror.sync.run import summary_line

    if args.json:
        print_json(report.to_json())
        return 0 if report.ok else 1
    for rep in [] if args.quiet else report.repos:
        plan = rep.plan
        for rv in plan.revisions:
            state = "updated" if rv.updated else "unchanged"
            print(f"{plan.key}@{rv.revision or '(default)'} -> {rv.commit[:12]} ({state}, {rv.files} files)")
        if report.dry_run:
            print(f"{plan.key}: would fetch {len(plan.fetch)} files ({human_bytes(plan.fetch_bytes)}), "
                  f"reuse {human_bytes(plan.reused_bytes)}")
            for t in plan.fetch:
                print(f"  fetch {t.entry.path} ({human_bytes(t.entry.size)}) @{t.commit[:12]}")
        else:
            print(f"{plan.key}: fetched {rep.files_fetched} files ({human_bytes(rep.bytes_fetched)}), "
                  f"reused {human_bytes(plan.reused_bytes)}")
    if not report.dry_run and not args.quiet:
        print(summary_line(report))
    for failure in report.failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 0 if report.ok else 1


async def _run_from(args: argparse.Namespace) -> int:
    from mirror.peers.replicate import source_url

    source_url(args.source)  # a bad URL is a usage error before anything is opened
    if args.dry_run:
        raise UsageError("--dry-run does not go with --from")
    if any(not r.strip() for r in args.repo):
        raise UsageError("--repo needs a repo id or pattern")
    async with node_for(args, online=True, recover_temps=True) as node:
        try:
            report = await node.replicator.run(args.source, args.repo or None, wait=args.wait)
        except MirrorError as exc:
            node.audit.record(cli_actor(), "sync.from", args.source, "error", repos=args.repo, error=exc.message)
            raise
        node.audit.record(cli_actor(), "sync.from", report.source, "ok" if report.ok else "error", repos=args.repo,
                          source_key=report.source_key, revisions=report.revisions, refs=report.refs, files=report.files,
                          bytes_fetched=report.bytes_fetched, serial_from=report.serial_from, serial=report.serial,
                          failures=len(report.failures))
    if args.json:
        print_json(report.to_json())
        return 0 if report.ok else 1
    if not args.quiet:
        print(f"sync --from {report.source}: {report.revisions} revisions, {report.refs} refs, {report.files} files copied "
              f"({report.chunks_fetched} chunks, {human_bytes(report.bytes_fetched)} fetched; {report.chunks_present} chunks "
              f"already here), {report.files_present} already complete, {report.files_absent} not stored at the source; "
              f"serial {report.serial_from} -> {report.serial}")
    for failure in report.failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 0 if report.ok else 1
