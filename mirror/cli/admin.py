"""Store administration: `mirror verify`, `mirror stats`."""

from __future__ import annotations

import argparse
import shutil
import sqlite3
from typing import Any

from mirror.audit.actor import cli_actor
from mirror.cli.common import add_config_args, human_bytes, load_config, node_for, print_json
from mirror.cli.progress import Progress
from mirror.errors import StorageError


def register(sub: Any) -> None:
    p = sub.add_parser("verify", help="re-hash every chunk and check every manifest signature")
    add_config_args(p)
    p.add_argument("--repair", action="store_true", help="quarantine bad chunks and drop manifests that cannot be rebuilt")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run_verify)

    p = sub.add_parser("stats", help="logical and stored bytes, dedup and compression ratios")
    add_config_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run_stats)


async def run_verify(args: argparse.Namespace) -> int:
    config = load_config(args)
    progress = Progress("verify", unit="chunk", quiet=args.json)
    try:
        async with node_for(args, config=config) as node:
            try:
                rep = await node.verifier.verify(repair=args.repair, actor=cli_actor(), progress=progress)
            finally:
                progress.close()
    except (OSError, sqlite3.Error, StorageError) as exc:
        # A full or read-only disk while opening or closing the store: one line, no traceback.
        reason = exc.message if isinstance(exc, StorageError) else _reason(exc)
        raise StorageError(f"cannot verify {config.store.data_dir}: {reason}{_full(config.store.data_dir)}") from None
    if args.json:
        print_json(
            {
                "ok": rep.ok,
                "chunks_checked": rep.chunks_checked,
                "manifests_checked": rep.manifests_checked,
                "bad_chunks": rep.bad_chunks,
                "missing_chunks": rep.missing_chunks,
                "bad_manifests": rep.bad_manifests,
                "db_problems": rep.db_problems,
                "quarantined": rep.quarantined,
                "dropped_manifests": rep.dropped_manifests,
                "cleared_on_recheck": rep.cleared,
            }
        )
    else:
        print(f"checked {rep.chunks_checked} chunks and {rep.manifests_checked} manifests")
        for cid in rep.bad_chunks:
            print(f"BAD chunk {cid}")
        for cid in rep.missing_chunks:
            print(f"MISSING chunk {cid}")
        for ident in rep.bad_manifests:
            print(f"BAD signature on manifest {ident}")
        for problem in rep.db_problems:
            print(f"CATALOG {problem}")
        if args.repair and not rep.ok:
            print(f"repaired: quarantined {rep.quarantined} chunks, dropped {rep.dropped_manifests} manifests")
        print("ok" if rep.ok else "PROBLEMS FOUND")
    return 0 if rep.ok else 1


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc)


def _full(path: object) -> str:
    """A hint when the disk is full: SQLite then says only "disk I/O error"."""
    try:
        return " (the disk is full)" if shutil.disk_usage(str(path)).free < (1 << 20) else ""
    except OSError:
        return ""


async def run_stats(args: argparse.Namespace) -> int:
    from mirror.admin.inspect import store_stats

    async with node_for(args) as node:
        data = await store_stats(node.catalog)
    if args.json:
        print_json(data)
    else:
        print(f"files (contents)   {data['files']}")
        print(f"chunks             {data['chunks']}")
        print(f"logical bytes      {human_bytes(data['logical_bytes'])}")
        print(f"stored bytes       {human_bytes(data['stored_bytes'])}  ({data['stored_over_logical']:.3f} of logical)")
        print(f"dedup ratio        {data['dedup_ratio']:.3f}  (logical / unique)")
        print(f"compression ratio  {data['compression_ratio']:.3f}  (stored / unique)")
        print(f"upstream fetched   {human_bytes(data['upstream_bytes_fetched'])}")
        print(f"bytes served       {human_bytes(data['bytes_served'])}")
    return 0

