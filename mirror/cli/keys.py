"""`mirror keys show|trust|revoke|list`: this node's public key and the keys it trusts (as
peers and as signers of manifests and bundles).

Trust is the catalog's `trusted_keys` (`keys trust`) plus `[peers] trust` in the config;
a revocation (`keys revoke`) wins over both, and a running daemon applies it within
its trust store's refresh (peers/auth.py `REFRESH`, 2 s): requests signed by the key are
refused with 403 PeerRevoked, and the peer is no longer used. Trust and revocation are
audited (`keys.trust`, `keys.revoke`).
"""

from __future__ import annotations

import argparse
from typing import Any

from mirror.audit.actor import cli_actor
from mirror.cli.common import add_config_args, load_config, node_for, print_json
from mirror.errors import UsageError


def register(sub: Any) -> None:
    p = sub.add_parser("keys", help="the node signing key and trusted keys")
    ksub = p.add_subparsers(dest="keys_command", metavar="ACTION")
    ksub.required = True
    show = ksub.add_parser("show", help="print this node's public key")
    add_config_args(show)
    show.add_argument("--json", action="store_true", help='machine-readable output ({"public_key": ...})')
    show.set_defaults(run=run_show)
    trust = ksub.add_parser("trust", help="trust a peer's or bundle signer's public key")
    add_config_args(trust, creates_data_dir=True)  # trusting a signer may precede the first import
    trust.add_argument("public_key", metavar="PUBKEY", help="64 hex characters (`mirror keys show` on that node)")
    trust.add_argument("--label", default="", help="a name for the key")
    trust.set_defaults(run=run_trust)
    revoke = ksub.add_parser("revoke", help="refuse a key from now on, as a peer and as a signer")
    add_config_args(revoke)
    revoke.add_argument("public_key", metavar="PUBKEY", help="64 hex characters")
    revoke.set_defaults(run=run_revoke)
    ls = ksub.add_parser("list", help="list trusted keys (from the catalog and [peers] trust) and revoked keys")
    add_config_args(ls)
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(run=run_list)


async def run_show(args: argparse.Namespace) -> int:
    from mirror.keys import NodeKey
    from mirror.store.layout import open_layout

    layout = open_layout(load_config(args).store.data_dir)
    key = NodeKey.load_or_create(layout.keys).public_hex
    if args.json:
        print_json({"public_key": key})
    else:
        print(key)
    return 0


async def run_trust(args: argparse.Namespace) -> int:
    from mirror.keys import parse_public_key

    key = parse_public_key(args.public_key)
    async with node_for(args) as node:
        await node.catalog.meta.trust(key, args.label)
        node.audit.record(cli_actor(), "keys.trust", key, label=args.label)
    print(f"trusted {key}" + (f" ({args.label})" if args.label else ""))
    return 0


async def run_revoke(args: argparse.Namespace) -> int:
    from mirror.keys import parse_public_key

    key = parse_public_key(args.public_key)
    async with node_for(args) as node:
        if key == node.key.public_hex:
            raise UsageError(f"{key} is this node's own key; it cannot be revoked here")
        fresh = await node.catalog.meta.revoke(key)
        node.audit.record(cli_actor(), "keys.revoke", key, already_revoked=not fresh)
    if fresh:
        print(f"revoked {key} (a running daemon refuses it within seconds)")
    else:
        print(f"{key} is already revoked")
    return 0


async def key_table(node: Any) -> list[dict[str, Any]]:
    """Every key this node knows: trusted (catalog, then config) and revoked."""
    trusted = await node.catalog.meta.trusted()
    revoked = await node.catalog.meta.revoked()
    own = node.key.public_hex
    rows: dict[str, dict[str, Any]] = {}

    def entry(key: str, source: str, label: str = "") -> dict[str, Any]:
        return {"public_key": key, "label": label, "source": source, "this_node": key == own,
                "revoked": key in revoked, "revoked_at": revoked.get(key)}

    for key, label in trusted.items():
        rows[key] = entry(key, "catalog", label)
    for key in node.config.peers.trust:
        if key in rows:
            rows[key]["source"] = "catalog+config"
        else:
            rows[key] = entry(key, "config")
    for key in revoked:
        rows.setdefault(key, entry(key, "revoked"))
    return list(rows.values())


async def run_list(args: argparse.Namespace) -> int:
    async with node_for(args) as node:
        table = await key_table(node)
    if args.json:
        print_json(table)
        return 0
    for r in table:
        if not r["revoked"]:
            notes = [r["label"]] + (["[peers] trust"] if "config" in r["source"] else [])
            print(f"{r['public_key']}  {', '.join(n for n in notes if n)}".rstrip())
    revoked = [r for r in table if r["revoked"]]
    if revoked:
        print("revoked:")
        for r in revoked:
            note = "  (in [peers] trust; the revocation wins)" if r["source"] == "config" else ""
            print(f"{r['public_key']}{note}")
    return 0
