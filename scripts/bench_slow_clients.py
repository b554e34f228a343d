#!/usr/bin/env python3
"""Benchmark the daemon under slow readers and a spike of clients that go away.

Everything runs on 127.0.0.1: the fake Hub and the mirror are separate processes, the
clients run here. Each figure under load is printed next to its baseline measured in the
same run, on the same daemon, without the slow readers:

  /healthz latency (median / max)                          must stay responsive
  a small warm file (172 bytes): latency (median / max)    must stay responsive
  a 1 MiB Range of the warm big file: latency              must stay responsive
  a fast client downloading the whole warm big file: MB/s
  the daemon's peak RSS (VmHWM)                            target < 300 MiB
  after the slow readers close, and after a spike of clients that send a request and
  go away at once: seconds until the daemon reports no open streams (/healthz
  "streams"), and the small file's latency right after the spike

The slow readers are raw sockets that read `--rate` bytes/s each, half of them from the
warm (stored) big file and half from a big file that is not cached yet (served from its
fill). Every loop is bounded in count and time; the script stops by itself.

Usage: .venv/bin/python scripts/bench_slow_clients.py [--readers 100] [--spike 200]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.update(NO_PROXY="127.0.0.1")

from scripts.bench_proxy import MiB, HubProcess, rss_peak_mib, wait_ingested  # noqa: E402
from tests.daemon import MirrorDaemon  # noqa: E402

REPO = "bench/slow"
SMALL = b'{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,' \
        b' "num_attention_heads": 32, "num_hidden_layers": 32, "vocab_size": 32000, "x": 1}\n'


def write_bf16_like(path: Path, n: int, seed: int) -> None:
    """Compressible weights (normal(0, 0.02) bf16), so that serving them costs decoding."""
    import numpy as np

    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        left = n
        while left:
            step = min(left, 32 * MiB)
            f32 = rng.standard_normal(step // 2, dtype=np.float32) * np.float32(0.02)
            fh.write((f32.view(np.uint32) >> 16).astype("<u2").tobytes())
            left -= step


def request_time(port: int, path: str, timeout: float, headers: dict[str, str] | None = None) -> float:
    """Seconds for one whole GET on a fresh connection; inf on error or timeout."""
    t = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        if resp.status not in (200, 206):
            return float("inf")
    except (OSError, http.client.HTTPException):
        return float("inf")
    return time.perf_counter() - t


def open_streams(port: int) -> int | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/healthz")
        body = json.loads(conn.getresponse().read())
        conn.close()
    except (OSError, http.client.HTTPException, ValueError):
        return None
    value = body.get("streams")
    return value if isinstance(value, int) else None


def probe(port: int, seconds: float, timeout: float) -> dict[str, list[float]]:
    """Rounds of (healthz, small file, 1 MiB range) for `seconds`, at most 200 rounds."""
    out: dict[str, list[float]] = {"healthz": [], "small": [], "range": []}
    deadline = time.monotonic() + seconds
    for _ in range(200):
        if time.monotonic() > deadline:
            break
        out["healthz"].append(request_time(port, "/healthz", timeout))
        out["small"].append(request_time(port, f"/{REPO}/resolve/main/config.json", timeout))
        out["range"].append(request_time(port, f"/{REPO}/resolve/main/warm.safetensors", timeout,
                                         {"Range": f"bytes={100 * MiB}-{101 * MiB - 1}"}))
        time.sleep(0.3)
    return out


def fast_download(port: int, size: int, timeout: float) -> float:
    """MB/s of one whole GET of the warm big file (0 on failure)."""
    took = request_time(port, f"/{REPO}/resolve/main/warm.safetensors", timeout)
    return size / took / 1e6 if took != float("inf") else 0.0


async def slow_reader(port: int, path: str, rate: int, seconds: float, got: list[int]) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 30)
        await loop.sock_sendall(sock, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: identity\r\n\r\n".encode())
        deadline = loop.time() + seconds
        n = 0
        while loop.time() < deadline:
            await asyncio.sleep(0.5)
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, max(1, rate // 2)), 1.0)
            except TimeoutError:
                continue
            if not data:
                break
            n += len(data)
        got.append(n)
    except (OSError, TimeoutError):
        got.append(-1)
    finally:
        sock.close()


async def spike(port: int, path: str, n: int) -> int:
    """`n` clients send a GET at once and go away after the first bytes (or 10 s)."""
    loop = asyncio.get_running_loop()

    async def one() -> bool:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 30)
            await loop.sock_sendall(sock, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            return bool(await asyncio.wait_for(loop.sock_recv(sock, 1), 10))
        except (OSError, TimeoutError):
            return False
        finally:
            sock.close()

    return sum(await asyncio.gather(*(one() for _ in range(n))))


def drained_after(port: int, limit: float) -> str:
    """Seconds until /healthz reports no open streams (bounded by `limit`)."""
    t = time.monotonic()
    for _ in range(int(limit / 0.1)):
        n = open_streams(port)
        if n is None:
            return "n/a (no 'streams' in /healthz)"
        if n == 0:
            return f"{time.monotonic() - t:.1f} s"
        time.sleep(0.1)
    return f"> {limit:.0f} s ({open_streams(port)} still open)"


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    finite = [v for v in values if v != float("inf")]
    failed = len(values) - len(finite)
    if not finite:
        return f"all {failed} failed"
    s = f"{statistics.median(finite) * 1000:.0f} / {max(finite) * 1000:.0f} ms"
    return s + (f" ({failed} failed)" if failed else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readers", type=int, default=100)
    ap.add_argument("--rate", type=int, default=2048, help="bytes/s per slow reader")
    ap.add_argument("--seconds", type=float, default=20.0, help="duration of the slow-reader phase")
    ap.add_argument("--spike", type=int, default=200)
    ap.add_argument("--size-mib", type=int, default=256)
    args = ap.parse_args()
    size = args.size_mib * MiB
    timeout = 60.0  # a probe that takes longer counts as failed
    work = Path(tempfile.mkdtemp(prefix="bench-slow-", dir=os.environ.get("BENCH_DIR")))
    hub = HubProcess()
    rows: list[tuple[str, str, str]] = []
    m: MirrorDaemon | None = None
    try:
        write_bf16_like(work / "warm", size, seed=1)
        write_bf16_like(work / "cold", size, seed=2)
        hub.post("/_fake/commit", {"repo_id": REPO, "files": {
            "warm.safetensors": {"path": str(work / "warm")},
            "cold.safetensors": {"path": str(work / "cold")},
            "config.json": {"text": SMALL.decode()}}})
        m = MirrorDaemon(work / "data", hub.url).start()
        port = m.port
        for name in ("warm.safetensors", "config.json"):
            assert request_time(port, f"/{REPO}/resolve/main/{name}", 600) != float("inf")
        wait_ingested(m, 2)
        pid = m.proc.pid  # type: ignore[union-attr]

        base = probe(port, 5.0, timeout)
        base_fast = fast_download(port, size, 600)
        base_rss = rss_peak_mib(pid)

        loaded: dict[str, list[float]] = {}
        fast: list[float] = []
        got: list[int] = []

        def during() -> None:
            time.sleep(3.0)  # let every slow reader connect and start its stream
            loaded.update(probe(port, args.seconds - 8.0, timeout))
            fast.append(fast_download(port, size, timeout * 2))

        async def slow_phase() -> None:
            half = args.readers // 2
            paths = [f"/{REPO}/resolve/main/warm.safetensors"] * half + \
                    [f"/{REPO}/resolve/main/cold.safetensors"] * (args.readers - half)
            prober = threading.Thread(target=during)
            prober.start()
            await asyncio.gather(*(slow_reader(port, p, args.rate, args.seconds, got) for p in paths))
            await asyncio.to_thread(prober.join, 300)

        asyncio.run(slow_phase())
        load_rss = rss_peak_mib(pid)
        after_slow = drained_after(port, 60)
        spiked = asyncio.run(spike(port, f"/{REPO}/resolve/main/warm.safetensors", args.spike))
        small_after_spike = request_time(port, f"/{REPO}/resolve/main/config.json", timeout)
        after_spike = drained_after(port, 60)
        spike_rss = rss_peak_mib(pid)

        label = f"{args.readers} slow readers"
        rows.append(("/healthz latency, median / max", fmt(loaded["healthz"]), "baseline " + fmt(base["healthz"])))
        rows.append(("small warm file, median / max", fmt(loaded["small"]), "baseline " + fmt(base["small"])))
        rows.append(("1 MiB range of warm file, median / max", fmt(loaded["range"]), "baseline " + fmt(base["range"])))
        rows.append(("fast whole warm file", f"{fast[0] if fast else 0:.0f} MB/s", f"baseline {base_fast:.0f} MB/s"))
        rows.append(("daemon peak RSS (VmHWM)", f"{load_rss:.0f} MiB", f"baseline {base_rss:.0f} MiB (target < 300)"))
        ok = [g for g in got if g >= 0]
        rows.append(("slow readers: connected / bytes each", f"{len(ok)}/{args.readers}",
                     f"median {statistics.median(ok) if ok else 0:.0f} B"))
        rows.append(("streams drained after slow readers left", after_slow, ""))
        rows.append((f"spike of {args.spike}: got a first byte", f"{spiked}/{args.spike}", ""))
        rows.append(("small file right after the spike", fmt([small_after_spike]), ""))
        rows.append(("streams drained after the spike", after_spike, f"peak RSS now {spike_rss:.0f} MiB"))
        print(f"\nbench_slow_clients: {label} at {args.rate} B/s for {args.seconds:.0f} s, "
              f"{args.size_mib} MiB files, 2 workers, loopback\n")
        for name, value, base_s in rows:
            print(f"{name:<42} {value:>30}   {base_s}")
    finally:
        if m is not None and m.proc is not None and m.proc.poll() is None:
            m.stop()
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
