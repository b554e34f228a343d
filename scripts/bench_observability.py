#!/usr/bin/env python3
"""Benchmark the cost of observability on warm GETs (issue 12 item 8).

Everything runs on 127.0.0.1: the fake Hub and three mirror daemons are separate
processes, the client (aiohttp) runs here. The daemons hold the same warm files; in the
same run it measures, first one daemon at a time in back-to-back rounds whose order
rotates, then (small files) the three loaded at once:

  off:     [server] metrics = false, access_log = false (no /metrics route, no wrappers,
           no request observer, no access line);
  metrics: [server] metrics = true, access_log = false (every request counted and timed,
           file bytes counted by source, chunk reads timed), /metrics scraped after every
           round as Prometheus would;
  on:      metrics as above and access_log = true (one access line per request, written
           to a log file): the issue's "metrics and access logging on".

  small: warm 4 KiB files x 200, N concurrent requests: requests per second, and the
         daemon's CPU time per request (from /proc: robust to a busy machine);
  small at once: the three daemons loaded together for a few seconds a round (N
         connections each, one client): requests per second and CPU per request of
         each over the same moments, so a neighbour's burst on a shared host falls on
         every side alike (rounds one at a time see it on one side only, which made
         their ratios wander by 10-20% here);
  big:   one warm 1 GiB file (the fake Hub's random source), one stream: MB/s, and the
         daemon's CPU seconds per GiB.

Target: on / off >= 0.97 for both (for small files, judged on the at-once rounds, the
least exposed to the machine's noise); metrics / off tells the share of the metrics alone.
On a busy shared machine the wall-clock rates and even CPU per request are noisy, so the
in-process cost of the code each side adds per request is printed too (the least noisy
figure). Files are addressed by commit sha, so warm requests never ask upstream. Daemon
logs go to files (as under journald or a file handler), not to a pipe this process would
have to drain.

`--calibrate` runs the same with all three daemons off (an A/A run): the spread of its
ratios is the noise floor of this machine, to read the real run's ratios against.

Usage: .venv/bin/python scripts/bench_observability.py [--files 200] [--requests 2000] [--concurrency 16]
           [--rounds 10] [--big-mib 1024] [--big-rounds 4] [--together-rounds 10] [--together-seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.update(NO_PROXY="127.0.0.1")

import aiohttp  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from scripts.bench_auth import fetch_all  # noqa: E402
from scripts.bench_proxy import HubProcess, raw_get_mbps, wait_ingested  # noqa: E402
from tests.daemon import MirrorDaemon  # noqa: E402

SMALL, BIG = "bench/small", "bench/big"
MiB = 1 << 20
_PORT_LINE = re.compile(r"serving on http://127\.0\.0\.1:(\d+)")


class LoggedDaemon(MirrorDaemon):
    """A daemon whose log (stderr) goes to a file."""

    def start(self, timeout: float = 60.0) -> "LoggedDaemon":
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MIRROR_", "HF_"))}
        with open(self.log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "mirror", "serve", "--config", str(self.config_path)],
                                    stdout=subprocess.DEVNULL, stderr=log, env=env, text=True)
        self.proc = proc
        deadline = time.monotonic() + timeout
        while not (m := _PORT_LINE.search(self.log_path.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mirror did not start:\n" + self.log_path.read_text()[-3000:])
            time.sleep(0.05)
        self.port = int(m.group(1))
        return self


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of the process, in nanoseconds' precision (the scheduler's
    own account, /proc/PID/task/TID/schedstat), not the 10 ms ticks of /proc/PID/stat."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return total / 1e9


def cli(m: MirrorDaemon, *argv: str) -> str:
    return subprocess.run([sys.executable, "-m", "mirror", *argv, "--config", str(m.config_path)],
                          capture_output=True, text=True, check=True).stdout


def scrape(m: MirrorDaemon, token: str) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], float, int]:
    """(samples, seconds, bytes) of one /metrics scrape."""
    req = urllib.request.Request(m.url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read()
    took = time.perf_counter() - t
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}
    return samples, took, len(body)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--size", type=int, default=4096, help="bytes per small file")
    ap.add_argument("--requests", type=int, default=2000, help="small-file requests per round")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--big-rounds", type=int, default=4)
    ap.add_argument("--together-rounds", type=int, default=10)
    ap.add_argument("--together-seconds", type=float, default=3.0)
    ap.add_argument("--calibrate", action="store_true",
                    help="an A/A run: all three daemons with metrics and access log off, to show the noise floor")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-obs-", dir=os.environ.get("BENCH_DIR")))
    hub = HubProcess()
    daemons: list[LoggedDaemon] = []
    try:
        files = {f"f{i:04d}.json": {"random": args.size, "seed": i} for i in range(args.files)}
        sha = str(hub.post("/_fake/commit", {"repo_id": SMALL, "files": files})["sha"])
        big_sha = str(hub.post("/_fake/commit", {"repo_id": BIG, "files": {"big.bin": {"random": args.big_mib * MiB,
                                                                                        "seed": 7}}})["sha"])
        paths = [f"/{SMALL}/resolve/{sha}/{name}" for name in files]
        big = f"/{BIG}/resolve/{big_sha}/big.bin"
        off = LoggedDaemon(work / "off", hub.url, server={"access_log": False, "metrics": False})
        cal = args.calibrate
        met = LoggedDaemon(work / "metrics", hub.url, server={"access_log": False, "metrics": not cal})
        on = LoggedDaemon(work / "on", hub.url, server={"access_log": not cal, "metrics": not cal})
        tokens = {} if cal else {
            m: json.loads(cli(m, "token", "create", "--name", "prometheus", "--role", "auditor", "--json"))["token"]
            for m in (met, on)}
        daemons += [off.start(), met.start(), on.start()]
        sides = (("off", off), ("metrics", met), ("on", on))
        for m in (off, met, on):  # warm: every file once, ingested
            _rps, failed = asyncio.run(fetch_all(m.url, paths, None, len(paths), 4))
            assert failed == 0, f"{failed} warm-up requests failed on {m.url}"
            asyncio.run(raw_get_mbps(m.url + big))
            wait_ingested(m, args.files + 1)
        print(f"warm: {args.files} small files and {args.big_mib} MiB stored on every daemon", flush=True)
        sent_on = len(paths) + 1
        rps: dict[str, list[float]] = {name: [] for name, _m in sides}
        cpu: dict[str, list[float]] = {name: [] for name, _m in sides}  # daemon CPU microseconds per request
        mbps: dict[str, list[float]] = {name: [] for name, _m in sides}
        cpu_gib: dict[str, list[float]] = {name: [] for name, _m in sides}
        scrapes: list[tuple[float, int]] = []
        before = len(hub.counters()["requests"])  # type: ignore[arg-type]
        for i in range(args.rounds):
            for name, m in sides[i % 3:] + sides[:i % 3]:  # each goes first, second and third in turn
                c0 = cpu_seconds(m.proc.pid)  # type: ignore[union-attr]
                r, failed = asyncio.run(fetch_all(m.url, paths, None, args.requests, args.concurrency))
                cpu[name].append((cpu_seconds(m.proc.pid) - c0) / args.requests * 1e6)  # type: ignore[union-attr]
                assert failed == 0, f"{failed} requests failed ({name})"
                rps[name].append(r)
                if m in tokens:
                    _s, took, size = scrape(m, tokens[m])
                    scrapes.append((took, size))
                sent_on += args.requests if name == "on" else 0
        both_rps: dict[str, list[float]] = {name: [] for name, _m in sides}
        both_cpu: dict[str, list[float]] = {name: [] for name, _m in sides}
        for i in range(args.together_rounds):  # who starts first rotates too
            got = asyncio.run(together(sides[i % 3:] + sides[:i % 3], paths, args.together_seconds, args.concurrency))
            for name, (n, r, c) in got.items():
                both_rps[name].append(r)
                both_cpu[name].append(c)
                sent_on += n if name == "on" else 0
        for i in range(args.big_rounds):
            for name, m in sides[i % 3:] + sides[:i % 3]:
                c0 = cpu_seconds(m.proc.pid)  # type: ignore[union-attr]
                mbps[name].append(asyncio.run(raw_get_mbps(m.url + big)))
                cpu_gib[name].append((cpu_seconds(m.proc.pid) - c0) / (args.big_mib / 1024))  # type: ignore[union-attr]
                sent_on += name == "on"
        upstream = len(hub.counters()["requests"]) - before  # type: ignore[arg-type]
        samples, took, size = scrape(on, tokens[on]) if not cal else ({}, 0.0, 0)
        counted = sum(v for (n, lab), v in samples.items() if n == "mirror_http_requests_total" and ("group", "files") in lab)
        store_bytes = samples.get(("mirror_file_sent_bytes_total", (("source", "store"),)), 0.0)
        access_lines = sum(1 for line in on.log_path.read_text().splitlines() if "mirror.access" in line)
        metrics_us, access_us, via_logging_us = asyncio.run(edge_cost(work))
    finally:
        for d in daemons:
            d.stop()
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nbench_observability: {args.files} warm files of {args.size} B, {args.requests} requests x {args.rounds} "
          f"rounds, {args.concurrency} concurrent; one {args.big_mib} MiB file x {args.big_rounds} rounds; "
          f"{os.cpu_count()} cores, loopback (aiohttp client)\n")

    def show(label: str, figures: dict[str, list[float]], unit: str, higher_is_better: bool = True) -> None:
        for side in ("off", "metrics", "on"):
            med = statistics.median(figures[side])
            rounds = " / ".join(f"{x:.3g}" for x in figures[side])
            print(f"{label + ' ' + side:<46} {med:>9.3g} {unit:<6} rounds {rounds}")
        for side, target in (("metrics", ""), ("on", "   (target >= 0.97)")):
            off_med, side_med = statistics.median(figures["off"]), statistics.median(figures[side])
            ratio = side_med / off_med if higher_is_better else off_med / side_med
            pairs = statistics.median((b / a if higher_is_better else a / b)
                                      for a, b in zip(figures["off"], figures[side], strict=True))
            print(f"{'  ratio ' + side + ' / off':<46} {ratio:>9.3f}        median of same-round pairs {pairs:.3f}{target}")

    print("one daemon at a time (rounds in rotating order):")
    show("small files, req/s", rps, "req/s")
    show("small files, daemon CPU us/request", cpu, "us", higher_is_better=False)
    print(f"the three daemons loaded at once ({args.together_rounds} rounds of {args.together_seconds:g} s, "
          f"{args.concurrency} connections each): the same moments of a shared machine for every side")
    show("small files at once, req/s", both_rps, "req/s")
    show("small files at once, daemon CPU us/request", both_cpu, "us", higher_is_better=False)
    show(f"{args.big_mib} MiB warm GET, MB/s", mbps, "MB/s")
    show(f"{args.big_mib} MiB warm GET, daemon CPU s/GiB", cpu_gib, "s", higher_is_better=False)
    off_cpu = statistics.median(cpu["off"])
    extra = metrics_us + access_us
    print(f"{'in-process cost per request: metrics / access line':<46} {metrics_us:>9.1f} / {access_us:.1f} us = "
          f"{extra / off_cpu:.1%} of a request's daemon CPU (off) -> capacity ratio {off_cpu / (off_cpu + extra):.3f}; "
          f"metrics alone {off_cpu / (off_cpu + metrics_us):.3f}")
    print(f"{'  the same access line through logging (before)':<46} {via_logging_us:>9.1f} us        "
          f"{via_logging_us / access_us:.1f}x the direct line")
    if cal:
        print("calibration (A/A): every side is 'off'; its ratios show how far identical daemons differ here")
        return 0
    print(f"{'scrape of /metrics (after each round)':<46} {statistics.median(t for t, _ in scrapes) * 1000:>9.1f} ms"
          f"         {statistics.median(s for _, s in scrapes) / 1024:.1f} KiB")
    print(f"{'file requests counted / sent (on)':<46} {counted:>9.0f} / {sent_on}")
    print(f"{'bytes counted from the store (on)':<46} {store_bytes / MiB:>9.1f} MiB")
    print(f"{'access lines written (on)':<46} {access_lines:>9d}")
    print(f"{'upstream requests during the rounds':<46} {upstream:>9d}        (warm: expect 0)")
    return 0


async def load_for(base: str, paths: list[str], seconds: float, concurrency: int) -> tuple[int, int]:
    """(requests answered, failures) of `concurrency` connections GETting `paths` in turn
    for `seconds`."""
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, connector=conn, auto_decompress=False) as s:
        done = failures = 0
        deadline = time.monotonic() + seconds

        async def worker(k: int) -> None:
            nonlocal done, failures
            i = k
            while time.monotonic() < deadline:
                async with s.get(paths[i % len(paths)]) as r:
                    await r.read()
                    failures += r.status != 200
                done += 1
                i += concurrency

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return done, failures


async def together(sides: tuple[tuple[str, LoggedDaemon], ...], paths: list[str], seconds: float,
                   concurrency: int) -> dict[str, tuple[int, float, float]]:
    """Load every daemon at once for `seconds`: name -> (requests, req/s, daemon CPU us
    per request). Whatever else the machine does then, every side lives through it."""
    c0 = {name: cpu_seconds(m.proc.pid) for name, m in sides}  # type: ignore[union-attr]
    t = time.perf_counter()
    results = await asyncio.gather(*(load_for(m.url, paths, seconds, concurrency) for _name, m in sides))
    elapsed = time.perf_counter() - t
    out = {}
    for (name, m), (n, failed) in zip(sides, results, strict=True):
        assert failed == 0 and n > 0, f"{failed} of {n} requests failed ({name})"
        out[name] = (n, n / elapsed, (cpu_seconds(m.proc.pid) - c0[name]) / n * 1e6)  # type: ignore[union-attr]
    return out


async def edge_cost(work: Path, n: int = 20000) -> tuple[float, float, float]:
    """In-process microseconds per warm small-file request of (the metrics: request
    observer, first-byte signal, file source counting, chunk read timing; the access
    line, written to a file with the daemon's format and escaping filter; the same line
    through `logging`, as before http/accesslog.py), best of 3: the daemons' own code
    around a handler and a source that do nothing, minus the same without it. No network
    and no other load in the loop: the least noisy figure on a busy machine."""
    import logging

    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request
    from aiohttp.web_urldispatcher import UrlMappingMatchInfo

    from mirror.http.auth import ROUTE_ACTIONS
    from mirror.http.metrics import METRICS, metrics_middleware, on_prepare
    from mirror.http.accesslog import AccessLog
    from mirror.http.middleware import ACCESS_LOG, access_middleware
    from mirror.logsafe import TEXT_FORMAT, EscapingFilter
    from mirror.obs.metrics import Metrics
    from mirror.obs.wrappers import CountedSource, TimedChunks

    app = web.Application()
    metrics = Metrics()
    app[METRICS] = metrics
    resp = web.Response(body=b"x" * 4096)
    piece = b"x" * 4096

    async def handler(_request: web.Request) -> web.StreamResponse:
        return resp

    class Source:
        kind = "store"

        async def iter(self, start: int, end: int):  # type: ignore[no-untyped-def]
            yield piece

    class Store:
        verify_reads = True

        def read(self, cid: str, expected_len: int | None = None) -> bytes:
            return piece

    route = app.router.add_get("/{ns}/{name}/resolve/{rev}/{path:.+}", handler)
    req = make_mocked_request("GET", "/bench/small/resolve/0123456789abcdef/f0001.json", app=app)
    match = UrlMappingMatchInfo({"ns": "bench", "name": "small", "rev": "0123456789abcdef", "path": "f0001.json"}, route)
    match.add_app(app)
    req._match_info = match  # what the router sets: a real route, as in the daemon
    app[ROUTE_ACTIONS] = {handler: ("files.read", False)}
    chunks = TimedChunks(Store(), metrics)  # type: ignore[arg-type]
    store = Store()

    async def bare() -> None:
        await handler(req)
        async for _p in Source().iter(0, 1):
            pass
        store.read("c")

    async def observed() -> None:
        await metrics_middleware(req, handler)
        await on_prepare(req, resp)
        metrics.file_requests.add(("store",))
        pieces = CountedSource(Source(), metrics.file_bytes).iter(0, 1)  # type: ignore[arg-type]
        async for _p in pieces:
            pass
        await pieces.aclose()  # type: ignore[attr-defined]
        chunks.read("c")

    async def logged() -> None:
        await access_middleware(req, handler)

    async def plain() -> None:
        await handler(req)

    # The daemon's logging, on a root of its own: one stream handler with the escaping
    # filter and the text layout, writing to a file.
    root = logging.getLogger("bench-root")
    root.propagate = False
    stream = open(work / "edge-access.log", "w")
    handler_ = logging.StreamHandler(stream)
    handler_.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler_.addFilter(EscapingFilter())
    root.addHandler(handler_)
    access = logging.getLogger("mirror.access")
    saved = access.level, access.propagate, access.handlers[:]
    access.setLevel(logging.INFO)
    app[ACCESS_LOG] = AccessLog(root)
    assert app[ACCESS_LOG].direct

    async def via_logging() -> None:  # the line as it was written before: a logging record
        access.info('%s "%s %s" %d %d %.1fms id=%s group=%s source=%s cache=%s', "127.0.0.1", "GET", req.path, 200,
                    4096, 0.4, "5f0c21d9a0000001", "files.read", "store", "hit", extra={"access": {}})

    async def nothing() -> None:
        pass

    try:
        best: dict[str, float] = {}
        for _ in range(3):
            for name, fn in (("bare", bare), ("observed", observed), ("plain", plain), ("logged", logged)):
                t = time.perf_counter()
                for _ in range(n):
                    await fn()
                best[name] = min(best.get(name, float("inf")), (time.perf_counter() - t) / n * 1e6)
            access.propagate, access.handlers[:] = False, [handler_]
            try:
                for name, fn in (("nothing", nothing), ("via_logging", via_logging)):
                    t = time.perf_counter()
                    for _ in range(n):
                        await fn()
                    best[name] = min(best.get(name, float("inf")), (time.perf_counter() - t) / n * 1e6)
            finally:
                access.propagate, access.handlers[:] = saved[1], saved[2]
    finally:
        access.setLevel(saved[0])
        root.removeHandler(handler_)
        handler_.close()
    return best["observed"] - best["bare"], best["logged"] - best["plain"], best["via_logging"] - best["nothing"]


if __name__ == "__main__":
    raise SystemExit(main())
