"""Options shared by commands (the config file, the data directory override) and
`node_for`, the one way a command opens the node it works on."""

from __future__ import annotations

import argparse
import contextlib
import json
from typing import TYPE_CHECKING, Any, AsyncIterator

from mirror import config as config_mod
from mirror.config import Config

if TYPE_CHECKING:
    from mirror.node import Node


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="FILE", help="TOML config file (default: $MIRROR_CONFIG or built-in defaults)")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (overrides store.data_dir)")


def load_config(args: argparse.Namespace, **extra: dict[str, Any]) -> Config:
    overrides: dict[str, dict[str, Any]] = {k: dict(v) for k, v in extra.items()}
    if getattr(args, "data_dir", None):
        overrides.setdefault("store", {})["data_dir"] = args.data_dir
    return config_mod.load(args.config, overrides=overrides)


@contextlib.asynccontextmanager
async def node_for(
    args: argparse.Namespace, *, config: Config | None = None, online: bool = False, recover_temps: bool = False
) -> AsyncIterator["Node"]:
    """Open the node on the command's data directory (node.py builds it), closed on
    exit. `online` opens the upstream session; `recover_temps` removes temps of dead
    writers (commands that write)."""
    from mirror.node import open_node

    async with await open_node(config or load_config(args), recover_temps=recover_temps, online=online) as node:
        yield node


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"
