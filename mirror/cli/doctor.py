"""`mirror doctor [PATH] [--fix]`: check a huggingface_hub cache (or a `local_dir`) for
what breaks a client moved onto the mirror, and with `--fix` repair it.

Checked now: tree cache files (`trees/<commit>.json`) whose entries carry a Xet hash.
huggingface_hub with hf_xet installed then skips the HEAD request and asks the mirror for
a Xet read token, which the mirror refuses; `--fix` removes the Xet hashes (the rest of
the listing stays), so the client makes the HEAD request and downloads over HTTP.
Needs no config and no data directory: it touches only the cache given.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mirror.cli.common import print_json
from mirror.errors import StorageError, UsageError


def register(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check a huggingface_hub cache for entries that break clients of the mirror")
    p.add_argument("path", nargs="?", metavar="PATH",
                   help="cache dir or local_dir (default: $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub)")
    p.add_argument("--fix", action="store_true", help="remove the Xet hashes from tree cache files")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mirror.admin import hftrees
    from mirror.admin.hfcache import default_cache_dir

    root = Path(args.path).expanduser() if args.path else default_cache_dir()
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory (a huggingface_hub cache or local_dir)")
    found: list[dict[str, Any]] = []
    try:
        for f in hftrees.tree_files(root):
            n = hftrees.xet_count(f)
            if n:
                fixed = hftrees.strip_xet(f) if args.fix else 0
                found.append({"file": str(f), "xet_entries": n, "fixed": bool(fixed)})
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot fix {root}: {exc}") from None
    problems = [x for x in found if not x["fixed"]]
    if args.json:
        print_json({"path": str(root), "xet_tree_caches": found, "ok": not problems})
    else:
        for x in found:
            state = "fixed: Xet hashes removed" if x["fixed"] else "run `mirror doctor --fix` to remove them"
            print(f"XET {x['file']}: {x['xet_entries']} entries carry a Xet hash; huggingface_hub with hf_xet "
                  f"would ask the mirror for a Xet token, which it refuses ({state})")
        print("ok" if not problems else "PROBLEMS FOUND")
    return 1 if problems else 0
