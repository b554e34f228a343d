"""`mirror export REPO@REV... -o FILE [--since PREV]` and `mirror import FILE`: signed
bundles for air-gapped sites (format in mirror/admin/bundle.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mirror.audit.actor import cli_actor
from mirror.cli.common import add_config_args, human_bytes, node_for, print_json
from mirror.cli.progress import Progress
from mirror.model import REPO_TYPES


def register(sub: Any) -> None:
    p = sub.add_parser("export", help="write revisions (metadata, manifests, chunks) to a signed bundle")
    add_config_args(p)
    p.add_argument("specs", nargs="+", metavar="REPO@REV")
    p.add_argument("--repo-type", choices=REPO_TYPES, default="model")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument("--since", metavar="PREV_BUNDLE", help="leave out chunks PREV_BUNDLE carried")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(run=run_export)

    p = sub.add_parser("import", help="verify a bundle and store its revisions")
    add_config_args(p, creates_data_dir=True)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(run=run_import)


async def run_export(args: argparse.Namespace) -> int:
    from mirror.admin.revisions import parse_spec

    specs = [parse_spec(s, args.repo_type) for s in args.specs]
    progress = Progress("export", quiet=args.quiet or args.json)
    async with node_for(args) as node:
        try:
            rep = await node.exporter.run(specs, Path(args.output), since=Path(args.since) if args.since else None,
                                          progress=progress)
        finally:
            progress.close()
        node.audit.record(cli_actor(), "bundle.export", str(Path(args.output).resolve()),
                          revisions=[f"{k}@{r or ''}" for k, r in specs], files=rep.files, chunks=rep.chunks, bytes=rep.bytes)
    data = {"revisions": rep.revisions, "files": rep.files, "manifests": rep.manifests, "chunks": rep.chunks,
            "chunks_omitted": rep.chunks_omitted, "bytes": rep.bytes, "output": args.output}
    if args.json:
        print_json(data)
    else:
        print(f"wrote {args.output}: {rep.revisions} revisions, {rep.files} files, {rep.chunks} chunks "
              f"({rep.chunks_omitted} left out), {human_bytes(rep.bytes)}")
    return 0


async def run_import(args: argparse.Namespace) -> int:
    progress = Progress("import", quiet=args.quiet or args.json)
    async with node_for(args, recover_temps=True) as node:
        try:
            rep = await node.bundles.run(Path(args.file), progress)
        finally:
            progress.close()
        node.audit.record(cli_actor(), "bundle.import", str(Path(args.file).resolve()), signer=rep.signer,
                          revisions=rep.revisions, manifests=rep.manifests, chunks_new=rep.chunks_new)
    if args.json:
        print_json({"signer": rep.signer, "revisions": rep.revisions, "manifests": rep.manifests,
                    "chunks_new": rep.chunks_new, "chunks_carried": rep.chunks_carried})
    else:
        print(f"imported {rep.revisions} revisions, {rep.manifests} files, {rep.chunks_new} new chunks "
              f"(signed by {rep.signer[:16]}...)")
    return 0
