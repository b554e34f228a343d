"""`mirror import-hf-cache [PATH]`: take in a huggingface_hub cache without downloading."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mirror.audit.actor import cli_actor
from mirror.cli.common import add_config_args, human_bytes, node_for, print_json
from mirror.cli.progress import Progress


def register(sub: Any) -> None:
    p = sub.add_parser("import-hf-cache", help="import a huggingface_hub cache dir (verified, no download)")
    add_config_args(p, creates_data_dir=True)
    p.add_argument("path", nargs="?", metavar="PATH",
                   help="cache dir (default: $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub)")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    from mirror.admin.hfcache import default_cache_dir

    root = Path(args.path).expanduser() if args.path else default_cache_dir()
    progress = Progress("import", quiet=args.quiet or args.json)
    async with node_for(args, recover_temps=True) as node:
        try:
            rep = await node.hfcache.run(root, progress)
        finally:
            progress.close()
        node.audit.record(cli_actor(), "hfcache.import", str(root.resolve()), repos=len(rep.repos),
                          blobs_imported=rep.blobs_imported, bytes_imported=rep.bytes_imported, revisions=rep.revisions,
                          skipped=len(rep.skipped))
    if args.json:
        print_json({
            "repos": rep.repos, "blobs_imported": rep.blobs_imported, "bytes_imported": rep.bytes_imported,
            "blobs_already_stored": rep.blobs_already_stored, "refs": rep.refs, "revisions": rep.revisions,
            "partial_revisions": rep.partial_revisions, "skipped": rep.skipped, "xet_tree_caches": rep.xet_tree_caches,
        })
    else:
        print(f"imported {rep.blobs_imported} blobs ({human_bytes(rep.bytes_imported)}) from {len(rep.repos)} repos; "
              f"{rep.blobs_already_stored} already stored; {rep.revisions} revisions listed; {rep.refs} refs")
        for rev in rep.partial_revisions:
            print(f"PARTIAL {rev}: the cache holds only some files of this commit (no trees/<commit>.json); "
                  "offline, only those are listed")
        for s in rep.skipped:
            print(f"SKIPPED {s}")
        for f in rep.xet_tree_caches:
            print(f"XET {f}: lists Xet hashes; huggingface_hub with hf_xet will ask this mirror for a Xet token "
                  f"and fail. Fix: mirror doctor --fix {root}")
    return 1 if rep.skipped else 0
