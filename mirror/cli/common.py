"""Options shared by commands: the config file and the data directory override."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mirror import config as config_mod
from mirror.config import Config


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="FILE", help="TOML config file (default: $MIRROR_CONFIG or built-in defaults)")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (overrides store.data_dir)")


def load_config(args: argparse.Namespace, **extra: dict[str, Any]) -> Config:
    overrides: dict[str, dict[str, Any]] = {k: dict(v) for k, v in extra.items()}
    if getattr(args, "data_dir", None):
        overrides.setdefault("store", {})["data_dir"] = args.data_dir
    return config_mod.load(args.config, overrides=overrides)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"
