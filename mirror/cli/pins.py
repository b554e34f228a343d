"""`mirror pin REPO@REV` and `mirror unpin REPO@REV`: keep a revision whatever the
lifecycle policy says (listed by `mirror ls`). Both are audited (`pin.add`, `pin.remove`)."""

from __future__ import annotations

import argparse
from typing import Any

from mirror.audit.actor import cli_actor
from mirror.cli.common import add_config_args, node_for, print_json
from mirror.model import REPO_TYPES


def register(sub: Any) -> None:
    p = sub.add_parser("pin", help="keep a revision (REPO@REV) whatever the lifecycle policy says")
    add_config_args(p)
    p.add_argument("spec", metavar="REPO@REV")
    p.add_argument("--repo-type", choices=REPO_TYPES, default="model")
    p.add_argument("--label", default="", help="a note shown by `mirror ls` (default: the revision name)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run_pin)

    p = sub.add_parser("unpin", help="release a pinned revision")
    add_config_args(p)
    p.add_argument("spec", metavar="REPO@REV")
    p.add_argument("--repo-type", choices=REPO_TYPES, default="model")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run_unpin)


async def run_pin(args: argparse.Namespace) -> int:
    from mirror.admin.pins import pin
    from mirror.admin.revisions import parse_spec

    key, rev = parse_spec(args.spec, args.repo_type)
    async with node_for(args) as node:
        commit = await pin(node.catalog, key, rev, args.label)
        node.audit.record(cli_actor(), "pin.add", f"{key}@{commit}", label=args.label or (rev or ""))
    if args.json:
        print_json({"repo": key.repo_id, "repo_type": key.repo_type, "commit": commit, "pinned": True,
                    "label": args.label or (rev or "")})
    else:
        print(f"pinned {key}@{commit}")
    return 0


async def run_unpin(args: argparse.Namespace) -> int:
    from mirror.admin.pins import unpin
    from mirror.admin.revisions import parse_spec

    key, rev = parse_spec(args.spec, args.repo_type)
    async with node_for(args) as node:
        commit, removed = await unpin(node.catalog, key, rev)
        node.audit.record(cli_actor(), "pin.remove", f"{key}@{commit}", was_pinned=removed)
    if args.json:
        print_json({"repo": key.repo_id, "repo_type": key.repo_type, "commit": commit, "pinned": False,
                    "was_pinned": removed})
    else:
        print(f"unpinned {key}@{commit}" if removed else f"{key}@{commit} was not pinned")
    return 0
