#!/usr/bin/env python3
"""Benchmark the cost of access control on warm small-file requests (issue 10 item 9).

Everything runs on 127.0.0.1: the fake Hub and two mirror daemons are separate
processes, the client (aiohttp, N concurrent requests) runs here. Both daemons hold the
same warm files; the figure is requests per second, measured in the same run, in
back-to-back rounds (which goes first alternates) between:

  auth off: the default config ([auth] anonymous_read = true), no token;
  auth on:  [auth] anonymous_read = false and a developer token with grants: every
            request authenticates the token and checks the role, the repo rules and
            the grants (the audit log records denials; none happen here).

Files are addressed by commit sha, so a warm request never asks upstream (the Hub's
request count during the rounds is printed). Target: on / off >= 0.90. On a shared,
busy machine the wall-clock rates are noisy, so the daemon's CPU time per request
(from /proc) is printed too: its ratio is the capacity cost of auth; and the gate's own
time per request, measured in-process, against that CPU time (the least noisy figure).

Usage: .venv/bin/python scripts/bench_auth.py [--files 200] [--requests 2000] [--concurrency 16] [--rounds 12]
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

from scripts.bench_proxy import HubProcess, cpu_seconds  # noqa: E402
from tests.daemon import MirrorDaemon  # noqa: E402

REPO = "bench/small"


def make_token(m: MirrorDaemon) -> str:
    out = subprocess.run([sys.executable, "-m", "mirror", "token", "create", "--name", "bench", "--role", "developer",
                          "--grant", "bench", "--json", "--config", str(m.config_path)], capture_output=True, text=True,
                         check=True)
    return str(json.loads(out.stdout)["token"])


async def fetch_all(base: str, paths: list[str], token: str | None, total: int, concurrency: int, *,
                    client_ids: bool = False, seen: set[str] | None = None) -> tuple[float, int]:
    """(requests per second, failures) for `total` GETs cycling over `paths`. With
    `client_ids`, request i sends X-Client-Id client-<i % 997> (a canary split); `seen`
    collects the X-Repo-Commit of every answer."""
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
                extra = {"X-Client-Id": f"client-{i % 997}"} if client_ids else None
                async with s.get(paths[i % len(paths)], headers=extra) as r:
                    await r.read()
                    failures += r.status != 200
                    if seen is not None:
                        seen.add(r.headers.get("X-Repo-Commit", ""))

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.perf_counter() - t), failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--size", type=int, default=4096, help="bytes per file")
    ap.add_argument("--requests", type=int, default=2000, help="requests per round")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=12)
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
        cpu: dict[str, list[float]] = {"off": [], "on": []}  # daemon CPU microseconds per request
        before = len(hub.counters()["requests"])  # type: ignore[arg-type]
        for i in range(args.rounds):
            order = (("off", off, None), ("on", on, token))
            for name, m, tok in order if i % 2 == 0 else order[::-1]:  # neither always goes first
                c0 = cpu_seconds(m.proc.pid)  # type: ignore[union-attr]
                r, failed = asyncio.run(fetch_all(m.url, paths, tok, args.requests, args.concurrency))
                cpu[name].append((cpu_seconds(m.proc.pid) - c0) / args.requests * 1e6)  # type: ignore[union-attr]
                assert failed == 0, f"{failed} requests failed ({name})"
                rps[name].append(r)
        upstream = len(hub.counters()["requests"]) - before  # type: ignore[arg-type]
        # The token-only daemon refuses a caller without a token (the cost measured is real).
        status = asyncio.run(_status(on.url + paths[0]))
        gate_token, gate_anon = asyncio.run(gate_cost(work))
    finally:
        for m in daemons:
            m.stop()
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)
    off_med, on_med = statistics.median(rps["off"]), statistics.median(rps["on"])
    off_cpu, on_cpu = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    print(f"\nbench_auth: {args.files} warm files of {args.size} B, {args.requests} requests x {args.rounds} rounds, "
          f"{args.concurrency} concurrent (aiohttp), {os.cpu_count()} cores, loopback\n")
    rows = [
        ("auth off (anonymous_read, no token)", off_med, rps["off"]),
        ("auth on (token required, developer + grants)", on_med, rps["on"]),
    ]
    for label, med, all_ in rows:
        print(f"{label:<46} {med:>8.0f} req/s   rounds {' / '.join(f'{x:.0f}' for x in all_)}")
    pairs = statistics.median(b / a for a, b in zip(rps["off"], rps["on"], strict=True))
    print(f"{'ratio on / off (requests per second)':<46} {on_med / off_med:>8.2f}         (target >= 0.90)")
    print(f"{'  median of back-to-back round pairs':<46} {pairs:>8.2f}")
    print(f"{'daemon CPU per request, off / on':<46} {off_cpu:>8.0f} / {on_cpu:.0f} us   rounds off "
          f"{' / '.join(f'{x:.0f}' for x in cpu['off'])}, on {' / '.join(f'{x:.0f}' for x in cpu['on'])}")
    print(f"{'capacity ratio on / off (CPU off / CPU on)':<46} {off_cpu / on_cpu:>8.2f}         "
          "(target >= 0.90; robust to a busy machine)")
    extra = gate_token - gate_anon
    print(f"{'gate per request, token / anonymous (in-process)':<46} {gate_token:>8.1f} / {gate_anon:.1f} us   "
          f"+{extra:.1f} us = {extra / off_cpu:.1%} of a request's daemon CPU -> ratio {off_cpu / (off_cpu + extra):.2f}")
    print(f"{'upstream requests during the rounds':<46} {upstream:>8d}         (warm: expect 0)")
    print(f"{'no token on the token-only daemon':<46} {status:>8d}         (expect 401)")
    return 0


async def gate_cost(work: Path, n: int = 20000) -> tuple[float, float]:
    """The gate's own time per request, in this process (no network, no other load in
    the loop): (developer token with grants, anonymous) in microseconds, best of 3."""
    import dataclasses

    from mirror.caller import Caller
    from mirror.config import Config
    from mirror.model import RepoKey
    from mirror.node import open_node

    base = Config()
    config = dataclasses.replace(base, store=dataclasses.replace(base.store, data_dir=work / "gate"),
                                 auth=dataclasses.replace(base.auth, anonymous_read=False))
    key = RepoKey("model", REPO)
    out = []
    async with await open_node(config) as node:
        token, _row = await node.tokens.create("bench", "developer", grants=["bench"])
        for caller, anonymous_read in ((Caller(hub_token=token, address="127.0.0.1"), False),
                                       (Caller(hub_token=None, address="127.0.0.1"), True)):
            node.gate.config = dataclasses.replace(node.gate.config, anonymous_read=anonymous_read)
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                for _ in range(n):
                    await node.gate.admit(caller, "files.read", key, target="/x")
                best = min(best, (time.perf_counter() - t) / n * 1e6)
            out.append(best)
    return out[0], out[1]


async def _status(url: str) -> int:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status


if __name__ == "__main__":
    raise SystemExit(main())
