"""`mirror keys show|trust|list`: this node's public key and the keys it trusts (for peer
manifests and bundles)."""

from __future__ import annotations

import argparse
from typing import Any

from mirror.cli.common import add_config_args, load_config, node_for, print_json


def register(sub: Any) -> None:
    p = sub.add_parser("keys", help="the node signing key and trusted keys")
    ksub = p.add_subparsers(dest="keys_command", metavar="ACTION")
    ksub.required = True
    show = ksub.add_parser("show", help="print this node's public key")
    add_config_args(show)
    show.set_defaults(run=run_show)
    trust = ksub.add_parser("trust", help="trust a peer's or bundle signer's public key")
    add_config_args(trust, creates_data_dir=True)  # trusting a signer may precede the first import
    trust.add_argument("public_key", metavar="PUBKEY", help="64 hex characters (`mirror keys show` on that node)")
    trust.add_argument("--label", default="", help="a name for the key")
    trust.set_defaults(run=run_trust)
    ls = ksub.add_parser("list", help="list trusted keys")
    add_config_args(ls)
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(run=run_list)


async def run_show(args: argparse.Namespace) -> int:
    from mirror.keys import NodeKey
    from mirror.store.layout import open_layout

    layout = open_layout(load_config(args).store.data_dir)
    print(NodeKey.load_or_create(layout.keys).public_hex)
    return 0


async def run_trust(args: argparse.Namespace) -> int:
    from mirror.keys import parse_public_key

    key = parse_public_key(args.public_key)
    async with node_for(args) as node:
        await node.catalog.meta.trust(key, args.label)
    print(f"trusted {key}" + (f" ({args.label})" if args.label else ""))
    return 0


async def run_list(args: argparse.Namespace) -> int:
    async with node_for(args) as node:
        trusted = await node.catalog.meta.trusted()
    if args.json:
        print_json([{"public_key": k, "label": v} for k, v in trusted.items()])
    else:
        for k, v in trusted.items():
            print(f"{k}  {v}")
    return 0
