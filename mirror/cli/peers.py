"""`mirror peers [--json]`: the peers this node knows and how they are doing.

The running daemon writes its peer table to `<data_dir>/peers.json` after every health
round (membership.py `Peers.save`, about once a second); this command reads it, so it
shows exactly what the daemon uses, discovered peers included, without asking anyone.
When the file is missing or older than `STALE_ROUNDS` health intervals (plus one peer
timeout: a round can wait that long for a dead peer), no daemon is keeping it: the
command says so on stderr and probes the configured static peers itself, once, with a
signed `hello` each (LAN discovery is the daemon's; a probe only knows `[peers] nodes`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from mirror.cli.common import add_config_args, human_bytes, load_config, node_for, print_json
from mirror.config import Config
from mirror.store.layout import Layout

STALE_ROUNDS = 3
COLUMNS = ("URL", "SOURCE", "KEY", "STATE", "LATENCY", "LAST SEEN", "SENT", "RECEIVED", "FAILURES", "DOWN FOR", "REASON")


def register(sub: Any) -> None:
    p = sub.add_parser("peers", help="the LAN peers of this node: state, latency, bytes, failures")
    add_config_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output (the daemon's peers.json snapshot)")
    p.set_defaults(run=run_peers)


def stale_after(config: Config) -> float:
    return STALE_ROUNDS * config.peers.health_interval + config.peers.timeout


def read_state(path: Path, max_age: float, now: float) -> tuple[dict[str, Any] | None, str]:
    """The daemon's snapshot when it is fresh, else (None, why not)."""
    try:
        snap = json.loads(path.read_text())
        written = float(snap["written_at"])
        if not isinstance(snap.get("peers"), list):
            raise TypeError("no peer list")
    except FileNotFoundError:
        return None, f"{path} does not exist"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"{path} is unreadable ({exc})"
    age = now - written
    if age > max_age:
        return None, f"{path} was written {age:.0f}s ago"
    return snap, ""


async def run_peers(args: argparse.Namespace) -> int:
    config = load_config(args)
    path = Layout(Path(config.store.data_dir).resolve()).peer_state
    snap, why = read_state(path, stale_after(config), time.time())
    if snap is None:
        print(f"mirror: the daemon is not running here ({why}); probing the {len(config.peers.nodes)} "
              "configured peers once", file=sys.stderr)
        async with node_for(args, config=config, online=True) as node:
            await node.peers.check_all(due_only=False)
            snap = node.peers.snapshot()
    if args.json:
        print_json(snap)
    else:
        print_table(snap, time.time())
    return 0


def _age(t: float | None, now: float) -> str:
    return "-" if t is None else f"{max(0.0, now - t):.0f}s ago"


def row(p: dict[str, Any], now: float) -> list[str]:
    latency = p.get("latency_ms")
    return [
        p.get("url", ""), p.get("source", ""), (p.get("key") or "-")[:16], p.get("state", ""),
        "-" if latency is None else f"{latency:.1f} ms", _age(p.get("last_seen"), now),
        human_bytes(p.get("bytes_out", 0)), human_bytes(p.get("bytes_in", 0)), str(p.get("failures", 0)),
        f"{p['down_for']:.0f}s" if p.get("down_for") else "-", p.get("reason", ""),
    ]


def print_table(snap: dict[str, Any], now: float) -> None:
    print(f"this node {snap.get('public_key', '')[:16]} at {snap.get('url') or '(not serving)'}")
    peers = snap.get("peers", [])
    if not peers:
        print("no peers ([peers] nodes, or discovery = true)")
        return
    rows = [list(COLUMNS)] + [row(p, now) for p in peers]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    for r in rows:
        print(("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1]).rstrip())
