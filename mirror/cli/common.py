"""Options shared by commands (the config file, the data directory override, -v) and
`node_for`, the one way a command opens the node it works on.

Every command says on stderr which data directory it uses (unless --quiet), and only
commands that write new content (`creates_data_dir=True` at registration: serve, pull,
sync, import, import-hf-cache, keys trust) may create one; the others refuse a data
directory that does not exist, or a non-empty directory that is not a mirror's, instead
of creating an empty mirror where the user did not mean one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator

from mirror import config as config_mod
from mirror.config import Config, StoreConfig
from mirror.errors import MirrorError, UsageError
from mirror.store.layout import Layout
from mirror.units import human_bytes  # noqa: F401 - the commands' import of it

if TYPE_CHECKING:
    from mirror.node import Node


def add_config_args(p: argparse.ArgumentParser, *, creates_data_dir: bool = False) -> None:
    p.add_argument("--config", "-c", metavar="FILE", help="TOML config file (default: $MIRROR_CONFIG or built-in defaults)")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (overrides store.data_dir)")
    # SUPPRESS: absent unless given here, so `mirror -v CMD` (the top-level flag) still counts.
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    p.set_defaults(creates_data_dir=creates_data_dir)


def load_config(args: argparse.Namespace, *, announce: bool = True, **extra: dict[str, Any]) -> Config:
    """The command's config (flags in `extra`, table -> key -> value); unless `announce`
    is false (the daemon logs it as a record instead: `data_dir_notice`), the data dir
    notice goes to stderr."""
    overrides: dict[str, dict[str, Any]] = {k: dict(v) for k, v in extra.items()}
    if getattr(args, "data_dir", None):
        overrides.setdefault("store", {})["data_dir"] = args.data_dir
    cfg = config_mod.load(args.config, overrides=overrides)
    logging.getLogger("mirror.cli").debug("configuration (%s): %s", cfg.source, cfg)
    root = Path(cfg.store.data_dir).resolve()
    origin = _data_dir_origin(args, cfg)
    if not getattr(args, "creates_data_dir", False):
        _require_data_dir(root, origin)
    if announce and not getattr(args, "quiet", False):
        print(f"mirror: {data_dir_notice(args, cfg)}", file=sys.stderr)
    return cfg


def data_dir_notice(args: argparse.Namespace, cfg: Config) -> str:
    return f"data dir {Path(cfg.store.data_dir).resolve()} ({_data_dir_origin(args, cfg)})"


def _data_dir_origin(args: argparse.Namespace, cfg: Config) -> str:
    if getattr(args, "data_dir", None):
        return "--data-dir"
    if os.environ.get("MIRROR_STORE_DATA_DIR"):
        return "MIRROR_STORE_DATA_DIR"
    if cfg.store.data_dir != StoreConfig().data_dir and cfg.source != "<defaults>":
        return f"store.data_dir in {cfg.source}"
    return "the built-in default"


def _require_data_dir(root: Path, origin: str) -> None:
    """Refuse what a command that only reads or manages existing content must not create."""
    layout = Layout(root)
    if not root.exists():
        raise UsageError(f"data dir {root} ({origin}) does not exist; this command does not create one "
                         "(name the mirror's with --data-dir DIR or --config FILE)")
    if not root.is_dir():
        raise UsageError(f"data dir {root} ({origin}) is not a directory")
    if not (layout.marker.exists() or layout.catalog_db.exists()) and any(root.iterdir()):
        raise UsageError(f"data dir {root} ({origin}) is not a model-mirror data dir (no {layout.marker.name} file)")


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


def parse_when(text: str, now: float, flag: str = "--time") -> float:
    """A point in time from the shell: unix seconds, ISO 8601 (UTC unless it carries an
    offset; a trailing Z works), or a duration ago ("2h", "30m")."""
    from datetime import datetime, timezone

    from mirror.units import parse_duration

    t = text.strip()
    try:
        return float(t)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        try:
            return now - parse_duration(t)
        except MirrorError:
            raise UsageError(f"{flag} {text!r}: use ISO 8601 (2026-11-29T12:00:00Z), unix seconds, or a duration "
                             "ago (2h)") from None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
