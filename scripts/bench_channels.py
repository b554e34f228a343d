#!/usr/bin/env python3
"""Benchmark the cost of resolving a release alias on warm small-file requests (issue 11
item 9): a GET by alias and by canary alias against the same GET by commit sha.

Everything runs on 127.0.0.1: the fake Hub and one mirror daemon are separate processes,
the client (aiohttp, N concurrent requests) runs here. The daemon holds every file warm
(two commits, both fetched once); the rounds then alternate, back to back, between:

  sha:    /{repo}/resolve/<40-hex commit>/<file>
  alias:  /{repo}/resolve/prod/<file>          prod -> the first commit
  canary: /{repo}/resolve/serve/<file>         serve -> first commit, 30% (sticky, by
                                               X-Client-Id) to the second

Every request of a round sends its own X-Client-Id, so the canary split is exercised.
The figure is requests per second per round, and the ratio of medians against the sha
rounds of the same run (target >= 0.95), with the daemon's CPU time per request (from
/proc, robust to a busy machine) and the in-process cost of one alias look-up.

Usage: .venv/bin/python scripts/bench_channels.py [--files 200] [--requests 2000] [--concurrency 16] [--rounds 9]
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


from scripts.bench_auth import fetch_all  # noqa: E402
from scripts.bench_proxy import HubProcess, cpu_seconds  # noqa: E402
from tests.daemon import MirrorDaemon  # noqa: E402

REPO = "bench/small"


def cli(m: MirrorDaemon, *argv: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "mirror", *argv, "--json", "--config", str(m.config_path)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


async def lookup_cost(work: Path, n: int = 50000) -> tuple[float, float]:
    """In process: one alias look-up and one canary look-up (stamp stat + dict + hash),
    microseconds, best of 3."""
    import dataclasses

    from mirror.caller import Caller
    from mirror.channels.plan import CanaryPlan
    from mirror.config import Config
    from mirror.model import FileEntry, RepoKey
    from mirror.node import open_node

    base = Config()
    config = dataclasses.replace(base, store=dataclasses.replace(base.store, data_dir=work / "inproc"))
    key, admin = RepoKey("model", REPO), Caller(principal="bench", role="admin")
    out = []
    async with await open_node(config) as node:
        repo = await node.catalog.repos.repo_id(key)
        assert repo is not None
        for sha in ("1" * 40, "2" * 40):
            await node.catalog.repos.put_listing(repo, sha, [FileEntry("a", "file", "0" * 40, 1)])
        await node.channels.set(key, "prod", "1" * 40, admin, reason="bench", force=True)
        await node.channels.set(key, "serve", "1" * 40, admin, reason="bench", force=True)
        await node.channels.canary(key, "serve", "2" * 40, CanaryPlan(30.0), admin)
        table = node.channels.table
        for name in ("prod", "serve"):
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                for i in range(n):
                    await table.pick(repo, name, f"id:client-{i % 997}")
                best = min(best, (time.perf_counter() - t) / n * 1e6)
            out.append(best)
    return out[0], out[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--size", type=int, default=4096, help="bytes per file")
    ap.add_argument("--requests", type=int, default=2000, help="requests per round")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-channels-", dir=os.environ.get("BENCH_DIR")))
    hub = HubProcess()
    m: MirrorDaemon | None = None
    try:
        files = {f"f{i:04d}.json": {"random": args.size, "seed": i} for i in range(args.files)}
        sha1 = str(hub.post("/_fake/commit", {"repo_id": REPO, "files": files})["sha"])
        sha2 = str(hub.post("/_fake/commit", {"repo_id": REPO, "files": {"extra.txt": {"random": 10, "seed": 1}}})["sha"])
        m = MirrorDaemon(work / "data", hub.url, server={"access_log": False}).start()
        names = list(files)
        for sha in (sha1, sha2):  # warm both commits
            _r, failed = asyncio.run(fetch_all(m.url, [f"/{REPO}/resolve/{sha}/{n}" for n in names], None, len(names), 4))
            assert failed == 0, f"{failed} warm-up requests failed"
        cli(m, "alias", "set", REPO, "prod", sha1, "--reason", "bench")
        cli(m, "alias", "set", REPO, "serve", sha1, "--reason", "bench")
        cli(m, "alias", "canary", REPO, "serve", "--to", sha2, "--percent", "30")
        kinds = {"sha": sha1, "alias": "prod", "canary": "serve"}
        paths = {k: [f"/{REPO}/resolve/{rev}/{n}" for n in names] for k, rev in kinds.items()}
        rps: dict[str, list[float]] = {k: [] for k in kinds}
        cpu: dict[str, list[float]] = {k: [] for k in kinds}
        served: dict[str, set[str]] = {k: set() for k in kinds}
        before = len(hub.counters()["requests"])  # type: ignore[arg-type]
        order = list(kinds)
        for i in range(args.rounds):
            for kind in order[i % 3:] + order[:i % 3]:  # each kind goes first as often
                c0 = cpu_seconds(m.proc.pid)  # type: ignore[union-attr]
                r, failed = asyncio.run(fetch_all(m.url, paths[kind], None, args.requests, args.concurrency,
                                                  client_ids=True, seen=served[kind]))
                cpu[kind].append((cpu_seconds(m.proc.pid) - c0) / args.requests * 1e6)  # type: ignore[union-attr]
                assert failed == 0, f"{failed} requests failed ({kind})"
                rps[kind].append(r)
        upstream = len(hub.counters()["requests"]) - before  # type: ignore[arg-type]
        alias_us, canary_us = asyncio.run(lookup_cost(work))
    finally:
        if m is not None:
            m.stop()
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nbench_channels: {args.files} warm files of {args.size} B, {args.requests} requests x {args.rounds} rounds, "
          f"{args.concurrency} concurrent (aiohttp), {os.cpu_count()} cores, loopback\n")
    med = {k: statistics.median(v) for k, v in rps.items()}
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    for kind, label in (("sha", "by commit sha (baseline)"), ("alias", "by alias prod"),
                        ("canary", "by canary alias serve (30%)")):
        print(f"{label:<34} {med[kind]:>8.0f} req/s  CPU {cmed[kind]:>5.0f} us/req   rounds "
              f"{' / '.join(f'{x:.0f}' for x in rps[kind])}")
    for kind in ("alias", "canary"):
        pairs = statistics.median(b / a for a, b in zip(rps["sha"], rps[kind], strict=True))
        print(f"{'ratio ' + kind + ' / sha (req/s)':<34} {med[kind] / med['sha']:>8.2f}  (target >= 0.95; median of "
              f"round pairs {pairs:.2f}; CPU ratio {cmed['sha'] / cmed[kind]:.2f})")
    print(f"{'alias look-up in process':<34} {alias_us:>8.2f} us (canary {canary_us:.2f} us) = "
          f"{canary_us / cmed['sha']:.1%} of a request's daemon CPU")
    print(f"{'commits served by the canary alias':<34} {len(served['canary'] - {''}):>8d}  (expect 2: both sides)")
    print(f"{'upstream requests during the rounds':<34} {upstream:>8d}  (warm: expect 0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
