"""`mirror serve`: run the daemon.

The daemon's log carries text from clients (paths, repo ids, headers): before anything
is served, `mirror.logsafe.install()` makes every record one escaped line and turns
aiohttp's parser tracebacks into rate-limited one-liners without header values. With
`[server] log_format = "json"` every record is then one JSON object per line
(mirror/jsonlog.py), the data dir notice included.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from mirror.cli.common import add_config_args, data_dir_notice, load_config


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the mirror daemon")
    add_config_args(p, creates_data_dir=True)
    p.add_argument("--host", help="address to listen on (server.host)")
    p.add_argument("--port", type=int, help="port to listen on (server.port; 0 = any free port)")
    p.add_argument("--upstream", metavar="URL", help="upstream Hub URL (upstream.url)")
    p.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    from mirror import jsonlog, logsafe
    from mirror.app import serve

    logsafe.install()
    logsafe.lean_records()

    server: dict[str, Any] = {}
    if args.host:
        server["host"] = args.host
    if args.port is not None:
        server["port"] = args.port
    upstream = {"url": args.upstream} if args.upstream else {}
    cfg = load_config(args, announce=False, server=server, upstream=upstream)
    if cfg.server.log_format == "json":
        jsonlog.install()  # from here every line on stderr is one JSON object
        logging.getLogger("mirror").info("%s", data_dir_notice(args, cfg))
    else:
        print(f"mirror: {data_dir_notice(args, cfg)}", file=sys.stderr)
    await serve(cfg)
    return 0
