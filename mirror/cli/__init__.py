"""The `mirror` command line. One module per command group; each parses, calls services
and prints. Every expected failure is one line on stderr and a non-zero exit, never a
traceback: `MirrorError.exit_code` decides the status (2 for usage and config errors).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Sequence

from mirror import __version__
from mirror.cli import admin, bundle, doctor, hfcache, inspect, keys, lifecycle, pins, serve, sync
from mirror.errors import MirrorError

_GROUPS = [serve, sync, inspect, pins, hfcache, doctor, bundle, keys, admin, lifecycle]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"mirror: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mirror", description="Local mirror and pull-through cache for the Hugging Face Hub")
    parser.add_argument("--version", action="version", version=f"model-mirror {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for group in _GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        result = args.run(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except MirrorError as exc:
        print(f"mirror: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mirror: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"mirror: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
