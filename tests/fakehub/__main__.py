"""Run a FakeHub as a process: `python -m tests.fakehub --port 0 --print-url`.

Prints `FAKEHUB_URL=http://127.0.0.1:PORT CDN_URL=http://127.0.0.1:PORT2` once both origins listen,
then serves until SIGINT or SIGTERM. Drive it through the `/_fake/` API (see `control.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from .server import FakeHub
from .state import MiB


async def main(args: argparse.Namespace) -> None:
    hub = FakeHub(host=args.host, port=args.port, cdn_port=args.cdn_port, lfs_threshold=args.lfs_threshold)
    await hub.start()
    if args.print_url:
        print(f"FAKEHUB_URL={hub.url} CDN_URL={hub.cdn_url}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await hub.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.fakehub", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cdn-port", type=int, default=0)
    parser.add_argument("--lfs-threshold", type=int, default=10 * MiB)
    parser.add_argument("--print-url", action="store_true")
    asyncio.run(main(parser.parse_args()))
