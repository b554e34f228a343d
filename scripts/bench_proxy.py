#!/usr/bin/env python3
"""Benchmark the pull-through proxy against direct downloads from the fake Hub.

Everything runs on 127.0.0.1: the fake Hub and the mirror are separate processes, the
clients run here. Each figure is printed next to its baseline measured in the same run:

  cold download through the mirror / direct from the fake Hub  (hf_hub_download)  >= 0.90
  warm download through the mirror / direct                    (hf_hub_download)  >= 0.95
  cold time to first byte: mirror - direct                     (raw GET)          <= +50 ms
  warm raw GET MB/s with an efficient client (aiohttp), and its ratio to direct
  upstream copies for 8 concurrent cold clients                                    == 1
  the daemon's peak RSS, for a small file and for the big one (flat in size)      < 300 MiB

Usage: .venv/bin/python scripts/bench_proxy.py [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.update(HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_UPDATE_CHECK="1", NO_PROXY="127.0.0.1")
os.environ.pop("HF_ENDPOINT", None)

import aiohttp  # noqa: E402
from huggingface_hub import hf_hub_download  # noqa: E402

from tests.daemon import MirrorDaemon  # noqa: E402

MiB = 1 << 20


class HubProcess:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.fakehub", "--port", "0", "--print-url"], cwd=ROOT,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.url = line.split()[0].split("=", 1)[1]

    def post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.loads(r.read() or b"{}")  # type: ignore[no-any-return]

    def counters(self) -> dict[str, object]:
        with urllib.request.urlopen(self.url + "/_fake/counters", timeout=60) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def write_random(path: Path, n: int, seed: int) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        left = n
        while left:
            step = min(left, 64 * MiB)
            fh.write(rng.bytes(step))
            left -= step


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed_download(endpoint: str, filename: str, cache: Path) -> float:
    t = time.perf_counter()
    hf_hub_download("bench/model", filename, endpoint=endpoint, cache_dir=cache)
    return time.perf_counter() - t


def ttfb(url: str) -> float:
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(url)
    t = time.perf_counter()
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("GET", u.path)
    resp = conn.getresponse()
    while resp.status in (301, 302, 307) and resp.getheader("Location"):
        loc = urlsplit(resp.getheader("Location") or "")
        resp.read()
        conn.close()
        conn = http.client.HTTPConnection(loc.hostname, loc.port, timeout=60)
        conn.request("GET", loc.path + ("?" + loc.query if loc.query else ""))
        resp = conn.getresponse()
    resp.read(1)
    first = time.perf_counter() - t
    conn.close()
    return first


async def raw_get_mbps(url: str) -> float:
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        t = time.perf_counter()
        n = 0
        async with s.get(url, headers={"Accept-Encoding": "identity"}) as r:
            async for piece in r.content.iter_chunked(4 * MiB):
                n += len(piece)
        return n / (time.perf_counter() - t) / 1e6


async def concurrent_gets(url: str, n: int) -> list[int]:
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async def one() -> int:
            got = 0
            async with s.get(url) as r:
                async for piece in r.content.iter_chunked(4 * MiB):
                    got += len(piece)
            return got

        return await asyncio.gather(*(one() for _ in range(n)))


def wait_ingested(m: MirrorDaemon, files: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-m", "mirror", "stats", "--json", "--config", str(m.config_path)],
                             capture_output=True, text=True)
        if out.returncode == 0 and json.loads(out.stdout)["files"] >= files:
            return
        time.sleep(0.5)
    raise RuntimeError("ingest did not finish")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    args = ap.parse_args()
    size = args.size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="bench-proxy-", dir=os.environ.get("BENCH_DIR")))
    hub = HubProcess()
    results: list[tuple[str, str, str, str]] = []
    try:
        # Files on disk (page-cached), so the fake Hub spends little CPU making bytes.
        specs = {"big.safetensors": size, "ttfb.safetensors": 64 * MiB, "herd.safetensors": 256 * MiB, "small.safetensors": 64 * MiB}
        files = {}
        for i, (name, n) in enumerate(specs.items()):
            path = work / f"src-{name}"
            write_random(path, n, seed=i + 1)
            files[name] = {"path": str(path)}
        hub.post("/_fake/commit", {"repo_id": "bench/model", "files": files})
        # Peak RSS of a daemon that served only a 64 MiB file (cold, then warm).
        small = MirrorDaemon(work / "small", hub.url).start()
        timed_download(small.url, "small.safetensors", work / "c-small1")
        wait_ingested(small, 1)
        timed_download(small.url, "small.safetensors", work / "c-small2")
        rss_small = rss_peak_mib(small.proc.pid)  # type: ignore[union-attr]
        small.stop()

        m = MirrorDaemon(work / "data", hub.url).start()
        direct = min(timed_download(hub.url, "big.safetensors", work / f"c-direct{i}") for i in range(2))
        cpu0 = (cpu_seconds(hub.proc.pid), cpu_seconds(m.proc.pid), time.process_time())  # type: ignore[union-attr]
        cold = timed_download(m.url, "big.safetensors", work / "c-cold")
        cpu1 = (cpu_seconds(hub.proc.pid), cpu_seconds(m.proc.pid), time.process_time())  # type: ignore[union-attr]
        used = [b - a for a, b in zip(cpu0, cpu1)]
        wait_ingested(m, 1)
        warm = min(timed_download(m.url, "big.safetensors", work / f"c-warm{i}") for i in range(2))
        mb = size / 1e6
        results.append(("cold download via mirror (hf_hub_download)", f"{mb / cold:.0f} MB/s", f"direct {mb / direct:.0f} MB/s",
                        f"ratio {direct / cold:.2f} (target >= 0.90)"))
        results.append(("  cold: CPU seconds hub / mirror / client", " / ".join(f"{u:.2f}" for u in used),
                         f"capacity {2 * cold:.2f} (2 cores)", f"busy {sum(used) / (2 * cold):.0%}"))
        results.append(("warm download via mirror (hf_hub_download)", f"{mb / warm:.0f} MB/s", f"direct {mb / direct:.0f} MB/s",
                        f"ratio {direct / warm:.2f} (target >= 0.95)"))

        t_direct = min(ttfb(hub.url + "/bench/model/resolve/main/ttfb.safetensors") for _ in range(3))
        t_cold = ttfb(m.url + "/bench/model/resolve/main/ttfb.safetensors")
        results.append(("cold time to first byte", f"{t_cold * 1000:.1f} ms", f"direct {t_direct * 1000:.1f} ms",
                        f"+{(t_cold - t_direct) * 1000:.1f} ms (target <= +50 ms)"))

        direct_raw = asyncio.run(raw_get_mbps(hub.url + "/bench/model/resolve/main/big.safetensors"))
        warm_raw = max(asyncio.run(raw_get_mbps(m.url + "/bench/model/resolve/main/big.safetensors")) for _ in range(2))
        results.append(("warm raw GET (aiohttp client)", f"{warm_raw:.0f} MB/s", f"direct {direct_raw:.0f} MB/s",
                        f"ratio {warm_raw / direct_raw:.2f}"))

        hub.post("/_fake/reset", {})
        got = asyncio.run(concurrent_gets(m.url + "/bench/model/resolve/main/herd.safetensors", 8))
        counters = hub.counters()
        sent = sum(int(v) for v in counters["bytes_sent_by_file"].values())  # type: ignore[union-attr]
        copies = sent / (256 * MiB)
        results.append(("upstream copies, 8 concurrent cold clients", f"{copies:.2f}", "ideal 1",
                        f"all complete: {all(g == 256 * MiB for g in got)} (target == 1)"))
        rss_big = rss_peak_mib(m.proc.pid)  # type: ignore[union-attr]
        results.append(("daemon peak RSS", f"{rss_big:.0f} MiB after {args.size_mib} MiB + 256 MiB herd", f"{rss_small:.0f} MiB after 64 MiB",
                        "target < 300 MiB, flat in size"))
        m.stop()
    finally:
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nbench_proxy: {args.size_mib} MiB file, 2 cores, loopback\n")
    for name, value, base, verdict in results:
        print(f"{name:<46} {value:>34}   {base:<28} {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
