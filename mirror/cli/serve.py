"""`mirror serve`: run the daemon.

The daemon's log carries text from clients (paths, repo ids, headers): before anything
is served, `mirror.logsafe.install()` makes every record one escaped line and turns
aiohttp's parser tracebacks into rate-limited one-liners without header values.
"""

from __future__ import annotations

import argparse
from typing import Any

from mirror.cli.common import add_config_args, load_config


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the mirror daemon")
    add_config_args(p, creates_data_dir=True)
    p.add_argument("--host", help="address to listen on (server.host)")
    p.add_argument("--port", type=int, help="port to listen on (server.port; 0 = any free port)")
    p.add_argument("--upstream", metavar="URL", help="upstream Hub URL (upstream.url)")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    from mirror import logsafe
    from mirror.app import serve

    logsafe.install()

    server: dict[str, Any] = {}
    if args.host:
        server["host"] = args.host
    if args.port is not None:
        server["port"] = args.port
    upstream = {"url": args.upstream} if args.upstream else {}
    cfg = load_config(args, server=server, upstream=upstream)
    await serve(cfg)
    return 0
