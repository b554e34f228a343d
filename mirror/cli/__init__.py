"""The `mirror` command line. One module per command group; each parses, calls services
and prints. Every expected failure is one line on stderr and a non-zero exit, never a
traceback: `MirrorError.exit_code` decides the status (2 for usage and config errors);
an OS-level failure (ENOSPC, EACCES, EROFS, ...) or a SQLite error ("database or disk is
full") is exit 1 with the path and the reason; a closed stdout (`| head`) ends quietly.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import sqlite3
import sys
from typing import Sequence

from mirror import __version__
from mirror.cli import (admin, audit, bundle, channels, doctor, hfcache, inspect, keys, lifecycle, metrics, peers, pins,
                        quarantine, serve, sync, tokens, webhook)
from mirror.errors import MirrorError
from mirror.logsafe import TEXT_FORMAT

_GROUPS = [serve, sync, inspect, pins, hfcache, doctor, bundle, keys, peers, tokens, admin, lifecycle, audit, quarantine,
           channels, metrics, webhook]


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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormatter(TEXT_FORMAT, brief=not args.verbose))
    # -v before or after the command
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    logging.getLogger("aiosqlite").setLevel(logging.INFO)  # at DEBUG it logs every statement
    try:
        token = os.environ.get("MIRROR_TOKEN")
        if token:
            from mirror.cli import guard

            asyncio.run(guard.check(args, token))
        result = args.run(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        sys.stdout.flush()  # here, so a closed stdout is handled below, not at exit
        return int(result or 0)
    except MirrorError as exc:
        print(f"mirror: {_one_line(exc.message)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mirror: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`mirror ls | head`): stop quietly, and keep the
        # interpreter's final flush of stdout from raising again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except OSError as exc:
        print(f"mirror: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        text = _one_line(str(exc))
        hint = " (is the data dir's disk full or read-only?)" if "disk" in text or "readonly" in text else ""
        print(f"mirror: catalog database error: {text}{hint}", file=sys.stderr)
        return 1


class _LogFormatter(logging.Formatter):
    """Log lines; with `brief`, a record carrying an OS-level or SQLite failure (a full
    or read-only disk seen by a component that logs it with its traceback) is one line
    naming the failure. Tracebacks of anything else stay, and -v shows them all."""

    def __init__(self, fmt: str, *, brief: bool) -> None:
        super().__init__(fmt)
        self.brief = brief

    def format(self, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        if self.brief and isinstance(exc, (OSError, sqlite3.Error)):
            why = describe_os_error(exc) if isinstance(exc, OSError) else _one_line(str(exc))
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None,
                                            "msg": f"{record.getMessage()}: {why}", "args": ()})
        return super().format(record)


def describe_os_error(exc: OSError) -> str:
    """'<path>: <reason> (<ERRNO>)' on one line, whatever the OSError carries."""
    reason = exc.strerror or _one_line(str(exc)) or type(exc).__name__
    code = errno.errorcode.get(exc.errno or 0)
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    return (f"{where}: " if where else "") + reason + (f" ({code})" if code else "")


def _one_line(text: str) -> str:
    return " ".join(text.splitlines()).strip()
