#!/usr/bin/env python3
"""Benchmark the cost of access control on warm small-file requests (issue 10 item 9).

Everything runs on 127.0.0.1: the fake Hub and two mirror daemons are separate
processes, the client (aiohttp, N concurrent requests) runs here. Both daemons hold the
same warm files; the figure is requests per second, measured in the same run,
alternating rounds between:

  auth off: the default config ([auth] anonymous_read = true), no token;
  auth on:  [auth] anonymous_read = false and a developer token with grants: every
            request authenticates the token and checks the role, the repo rules and
            the grants (the audit log records denials; none happen here).

Files are addressed by commit sha, so a warm request never asks upstream (the Hub's
request count during the rounds is printed). Target: on / off >= 0.90.

Usage: .venv/bin/python scripts/bench_auth.py [--files 200] [--requests 4000] [--concurrency 16] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.update(NO_PROXY="127.0.0.1")

import aiohttp  # noqa: E402

from scripts.bench_proxy import HubProcess  # noqa: E402
from tests.daemon import MirrorDaemon  # noqa: E402

REPO = "bench/small"


def make_token(m: MirrorDaemon) -> str:
    out = subprocess.run([sys.executable, "-m", "mirror", "token", "create", "--name", "bench", "--role", "developer",
                          "--grant", "bench", "--json", "--config", str(m.config_path)], capture_output=True, text=True,
                         check=True)
    return str(json.loads(out.stdout)["token"])


async def fetch_all(base: str, paths: list[str], token: str | None, total: int, concurrency: int) -> tuple[float, int]:
    """(requests per second, failures) for `total` GETs cycling over `paths`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, connector=conn, headers=headers, auto_decompress=False) as s:
        failures = 0
        next_i = 0

        async def worker() -> None:
            nonlocal failures, next_i
            while next_i < total:
                i = next_i
                next_i += 1
                async with s.get(paths[i % len(paths)]) as r:
                    await r.read()
                    failures += r.status != 200

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.perf_counter() - t), failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--size", type=int, default=4096, help="bytes per file")
    ap.add_argument("--requests", type=int, default=4000, help="requests per round")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-auth-", dir=os.environ.get("BENCH_DIR")))
    hub = HubProcess()
    daemons: list[MirrorDaemon] = []
    try:
        files = {f"f{i:04d}.json": {"random": args.size, "seed": i} for i in range(args.files)}
        sha = str(hub.post("/_fake/commit", {"repo_id": REPO, "files": files})["sha"])
        paths = [f"/{REPO}/resolve/{sha}/{name}" for name in files]
        off = MirrorDaemon(work / "off", hub.url, server={"access_log": False})
        on = MirrorDaemon(work / "on", hub.url, server={"access_log": False}, auth={"anonymous_read": False})
        token = make_token(on)
        daemons += [off.start(), on.start()]
        # Warm both: every file once, then a round that must not reach upstream.
        for m, tok in ((off, None), (on, token)):
            _rps, failed = asyncio.run(fetch_all(m.url, paths, tok, len(paths), 4))
            assert failed == 0, f"{failed} warm-up requests failed on {m.url}"
        rps: dict[str, list[float]] = {"off": [], "on": []}
        before = len(hub.counters()["requests"])  # type: ignore[arg-type]
        for _ in range(args.rounds):
            for name, m, tok in (("off", off, None), ("on", on, token)):
                r, failed = asyncio.run(fetch_all(m.url, paths, tok, args.requests, args.concurrency))
                assert failed == 0, f"{failed} requests failed ({name})"
                rps[name].append(r)
        upstream = len(hub.counters()["requests"]) - before  # type: ignore[arg-type]
        # The token-only daemon refuses a caller without a token (the cost measured is real).
        status = asyncio.run(_status(on.url + paths[0]))
    finally:
        for m in daemons:
            m.stop()
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)
    off_med, on_med = statistics.median(rps["off"]), statistics.median(rps["on"])
    print(f"\nbench_auth: {args.files} warm files of {args.size} B, {args.requests} requests x {args.rounds} rounds, "
          f"{args.concurrency} concurrent (aiohttp), {os.cpu_count()} cores, loopback\n")
    rows = [
        ("auth off (anonymous_read, no token)", off_med, rps["off"]),
        ("auth on (token required, developer + grants)", on_med, rps["on"]),
    ]
    for label, med, all_ in rows:
        print(f"{label:<46} {med:>8.0f} req/s   rounds {' / '.join(f'{x:.0f}' for x in all_)}")
    print(f"{'ratio on / off':<46} {on_med / off_med:>8.2f}         (target >= 0.90)")
    print(f"{'upstream requests during the rounds':<46} {upstream:>8d}         (warm: expect 0)")
    print(f"{'no token on the token-only daemon':<46} {status:>8d}         (expect 401)")
    return 0


async def _status(url: str) -> int:
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            return r.status


if __name__ == "__main__":
    raise SystemExit(main())
