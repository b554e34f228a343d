#!/usr/bin/env python3
"""Benchmark LAN peers: three mirror nodes sharing one big file (issue 9).

Everything runs on 127.0.0.1: the fake Hub (a process serving a bf16-like safetensors
file from disk) and real `mirror serve` daemons peered with each other (tests/peerenv.py),
the clients run here. Each figure is printed next to its baseline measured in the same run:

  upstream bytes / file size, three cold nodes asked at once          target 1.00
  upstream bytes / file size, three cold nodes asked one after another target 1.00
  wall time of the three at once / one node alone (no peers)           target <= 1.3x
  MB/s of one node filling from a peer / the same node filling from
  the fake Hub (the peer path must not be slower than upstream)        target >= 0.9x
  peak RSS (VmHWM) of every node                                       target < 300 MiB

"One after another" waits for each node to have stored the file before the next is
asked, so the second and third fill from their peers' chunk stores (signed manifest,
chunk batches); "at once" makes one node (the rendezvous owner) fetch upstream while the
others follow its fill. The node keys are drawn so that, in the sequential site, node 0
owns the file (it fetches upstream itself) and node 1 owns a second file of the same
size: node 1's upstream baseline is then a real upstream fill by the same daemon.

Clients are raw HTTP GETs (http.client, `readinto` one reused buffer, one thread each),
not huggingface_hub: they discard the bytes, so three clients cost the two cores
little. A client checks the length and the first and last MiB against the source (the
daemons verify the whole sha256 before releasing a file's last 64 KiB, so a complete body
is a verified one). Timings are informative: nothing exits non-zero on a missed target.

Below the table, per phase: each client's time, the origin and speed each node's fill
logged (`mirror.fill` "fetched ... from peer|upstream"), and the CPU seconds each process
used (fake Hub, nodes, clients) against cores x wall time; for the three at once also the
CPU-bound floor (their CPU seconds spread over every core), which on 2 cores is above
1.3x by itself. `--logs DIR` keeps every daemon's log.

Usage: .venv/bin/python scripts/bench_peers.py [--size 1GiB] [--quick] [--logs DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.update(NO_PROXY="127.0.0.1")

from mirror.keys import NodeKey  # noqa: E402
from mirror.peers.membership import rendezvous_score  # noqa: E402
from mirror.store.layout import open_layout  # noqa: E402
from mirror.units import parse_size  # noqa: E402
from scripts.bench_proxy import MiB, HubProcess, cpu_seconds, rss_peak_mib, wait_ingested  # noqa: E402
from tests.daemon import MirrorDaemon  # noqa: E402
from tests.peerenv import PeerSite  # noqa: E402

REPO = "bench/peers"
CHECK = MiB  # bytes compared at each end of a download
FETCHED = re.compile(r"fetched \S+ (\S+) from (\w+): (\d+) bytes in ([\d.]+)s \((\d+) MB/s\)")


# --- the file -------------------------------------------------------------------------------


def write_bf16_safetensors(path: Path, size: int, seed: int) -> str:
    """A `size`-byte safetensors file of bf16 weights (normal(0, 0.02)), written 32 MiB at
    a time; returns its sha256. The header names BF16 tensors, so the store groups bytes
    and compresses it as it would a real checkpoint."""
    import json
    import struct

    import numpy as np

    header_len = 4096 - 8
    payload = size - 8 - header_len
    per = payload // 4 // 2 * 2
    sizes = [per, per, per, payload - 3 * per]
    entries, pos = {}, 0
    for i, n in enumerate(sizes):
        entries[f"model.layers.{i}.weight"] = {"dtype": "BF16", "shape": [n // 2], "data_offsets": [pos, pos + n]}
        pos += n
    text = json.dumps(entries, separators=(",", ":")).encode()
    head = struct.pack("<Q", header_len) + text + b" " * (header_len - len(text))
    rng = np.random.default_rng(seed)
    digest = hashlib.sha256(head)
    with open(path, "wb") as fh:
        fh.write(head)
        left = payload
        while left:
            step = min(left, 32 * MiB)
            f32 = rng.standard_normal((step + 1) // 2, dtype=np.float32) * np.float32(0.02)
            block = (f32.view(np.uint32) >> 16).astype("<u2").tobytes()[:step]
            fh.write(block)
            digest.update(block)
            left -= step
    return digest.hexdigest()


def ends(path: Path, size: int) -> tuple[bytes, bytes]:
    with open(path, "rb") as fh:
        head = fh.read(CHECK)
        fh.seek(size - CHECK)
        return head, fh.read(CHECK)


# --- clients --------------------------------------------------------------------------------


class Download:
    """One raw GET of the whole file, bytes discarded; `error` is None when the length
    and both ends matched the source."""

    def __init__(self, port: int, name: str, expect: tuple[bytes, bytes], size: int) -> None:
        self.port, self.name, self.expect, self.size = port, name, expect, size
        self.seconds = float("inf")
        self.error: str | None = "not run"

    def run(self, start: threading.Barrier | None = None, timeout: float = 600.0) -> "Download":
        if start is not None:
            start.wait(60)
        t = time.perf_counter()
        try:
            self._get(t + timeout)
        except (OSError, http.client.HTTPException, TimeoutError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        self.seconds = time.perf_counter() - t
        return self

    def _get(self, deadline: float) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request("GET", f"/{REPO}/resolve/main/{self.name}", headers={"Accept-Encoding": "identity"})
            resp = conn.getresponse()
            if resp.status != 200:
                self.error = f"HTTP {resp.status}: {resp.read(300)!r}"
                return
            buf = bytearray(MiB)
            head, tail = bytearray(), bytearray()
            got = 0
            while True:
                n = resp.readinto(buf)
                if not n:
                    break
                if got < CHECK:
                    head += buf[:min(n, CHECK - got)]
                if got + n > self.size - CHECK:
                    tail += buf[max(0, self.size - CHECK - got):n]
                got += n
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"download not done after {got} bytes")
            if got != self.size:
                self.error = f"got {got} of {self.size} bytes"
            elif (bytes(head), bytes(tail)) != self.expect:
                self.error = "content differs from the source"
            else:
                self.error = None
        finally:
            conn.close()


def download(node: MirrorDaemon, name: str, expect: tuple[bytes, bytes], size: int) -> Download:
    return Download(node.port, name, expect, size).run()


def at_once(nodes: list[MirrorDaemon], name: str, expect: tuple[bytes, bytes], size: int) -> tuple[float, list[Download]]:
    """All nodes asked at the same moment; the wall time until the last body ended."""
    barrier = threading.Barrier(len(nodes) + 1)
    jobs = [Download(n.port, name, expect, size) for n in nodes]
    threads = [threading.Thread(target=j.run, args=(barrier,), daemon=True) for j in jobs]
    for th in threads:
        th.start()
    barrier.wait(60)
    t = time.perf_counter()
    for th in threads:
        th.join(900)
    return time.perf_counter() - t, jobs


# --- the sites ------------------------------------------------------------------------------


def upstream_bytes(hub: HubProcess, sha: str) -> int:
    by_file = hub.counters()["bytes_sent_by_file"]
    return int(by_file.get(sha, 0))  # type: ignore[union-attr]


def drawn_keys(base: Path, owners: dict[str, int], n: int = 3, tries: int = 500) -> None:
    """Create node keys under base/node{i} until node owners[identity] owns each identity
    (rendezvous hashing over all n nodes, as membership.owner computes it)."""
    for _ in range(tries):
        dirs = [base / f"node{i}" for i in range(n)]
        keys = [NodeKey.load_or_create(open_layout(d).keys).public_hex for d in dirs]
        if all(max(range(n), key=lambda i: rendezvous_score(ident, keys[i])) == want for ident, want in owners.items()):
            return
        for d in dirs:
            shutil.rmtree(d)
    raise RuntimeError("could not draw node keys with the wanted owners")


def sources(nodes: list[MirrorDaemon], name: str) -> list[str]:
    """Per node, the origin and speed its fill of `name` logged (mirror.fill)."""
    out = []
    for i, node in enumerate(nodes):
        hits = [m for m in (FETCHED.search(line) for line in list(node.log)) if m and m[1] == name]
        out.append(f"node{i}: " + (f"{hits[-1][2]} {hits[-1][5]} MB/s" if hits else "no fill (stored)"))
    return out


class CpuMeter:
    """CPU seconds each process (the fake Hub, the nodes, this client process) used
    between construction and `used()`: where the cores went during a phase."""

    def __init__(self, hub: HubProcess, nodes: list[MirrorDaemon]) -> None:
        self.pids = [("hub", hub.proc.pid)] + [(f"node{i}", n.proc.pid) for i, n in enumerate(nodes)]  # type: ignore[union-attr]
        self.start = [cpu_seconds(pid) for _, pid in self.pids] + [time.process_time()]
        self.t = time.perf_counter()

    def used(self) -> str:
        now = [cpu_seconds(pid) for _, pid in self.pids] + [time.process_time()]
        wall = time.perf_counter() - self.t
        parts = [f"{name} {b - a:.1f}" for (name, _), a, b in zip(self.pids + [("clients", 0)], self.start, now)]
        self.total = sum(b - a for a, b in zip(self.start, now))
        return f"CPU s {', '.join(parts)} = {self.total:.1f} of {os.cpu_count() or 1} x {wall:.1f} s wall"


def rss_all(nodes: list[MirrorDaemon]) -> list[float]:
    return [rss_peak_mib(n.proc.pid) for n in nodes]  # type: ignore[union-attr]


def stop_all(nodes: list[MirrorDaemon], logs: Path | None = None) -> None:
    for n in nodes:
        if n.proc is not None and n.proc.poll() is None:
            n.stop(60)
        if logs is not None:
            logs.mkdir(parents=True, exist_ok=True)
            (logs / f"{n.data_dir.parent.name}-{n.data_dir.name}.log").write_text("\n".join(n.log) + "\n")


def check(jobs: list[Download]) -> None:
    bad = [f"{j.name} on :{j.port}: {j.error}" for j in jobs if j.error]
    if bad:
        raise RuntimeError("download failed: " + "; ".join(bad))


# --- main -----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GiB", help="file size (default 1GiB; e.g. 256MiB)")
    ap.add_argument("--quick", action="store_true", help="a 256 MiB file")
    ap.add_argument("--logs", type=Path, help="write every daemon's log into this directory")
    args = ap.parse_args()
    size = parse_size("256MiB" if args.quick else args.size)
    if size < 16 * MiB:
        ap.error("--size must be at least 16MiB")
    load0 = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-peers-", dir=os.environ.get("BENCH_DIR")))
    hub = HubProcess()
    rows: list[tuple[str, str, str, str, str, bool | None]] = []
    notes: list[str] = []
    running: list[MirrorDaemon] = []
    try:
        t0 = time.perf_counter()
        sha1 = write_bf16_safetensors(work / "src1", size, seed=1)
        sha2 = write_bf16_safetensors(work / "src2", size, seed=2)
        hub.post("/_fake/commit", {"repo_id": REPO, "files": {"a.safetensors": {"path": str(work / "src1")},
                                                              "b.safetensors": {"path": str(work / "src2")}}})
        expect_a, expect_b = ends(work / "src1", size), ends(work / "src2", size)
        notes.append(f"setup (two {size / MiB:.0f} MiB files written and committed): {time.perf_counter() - t0:.0f} s")
        mb = size / 1e6

        # 1. Baseline: one node alone (no peers), cold.
        alone = MirrorDaemon(work / "alone", hub.url)
        running = [alone.start()]
        hub.post("/_fake/reset", {})
        meter = CpuMeter(hub, [alone])
        solo = download(alone, "a.safetensors", expect_a, size)
        cpu_alone = meter.used()
        check([solo])
        solo_up = upstream_bytes(hub, sha1) / size
        wait_ingested(alone, 1, timeout=600)
        notes.append(f"alone: {solo.seconds:.2f} s ({mb / solo.seconds:.0f} MB/s), upstream {solo_up:.2f}x; "
                     + sources([alone], "a.safetensors")[0].replace("node0", "fill") + "; " + cpu_alone)
        rss_alone = rss_all([alone])[0]
        stop_all(running, args.logs)

        # 2. Three cold nodes asked at once.
        site = PeerSite(work / "at-once", hub, 3)  # type: ignore[arg-type]
        running = site.nodes
        site.wait_all_up()
        hub.post("/_fake/reset", {})
        meter = CpuMeter(hub, site.nodes)
        wall, jobs = at_once(site.nodes, "a.safetensors", expect_a, size)
        cpu_once = meter.used()
        check(jobs)
        once_up = upstream_bytes(hub, sha1) / size
        for n in site.nodes:
            wait_ingested(n, 1, timeout=600)
        notes.append("at once: clients " + ", ".join(f"{j.seconds:.2f} s" for j in jobs) + "; fills "
                     + ", ".join(sources(site.nodes, "a.safetensors")) + "; " + cpu_once)
        floor = meter.total / (os.cpu_count() or 1)
        notes.append(f"  at once, CPU-bound floor on {os.cpu_count()} cores: {floor:.2f} s = {floor / solo.seconds:.2f}x alone "
                     "(the CPU seconds the three used, spread perfectly over every core)")
        once_up_after = upstream_bytes(hub, sha1) / size
        rss_once = rss_all(site.nodes)
        stop_all(running, args.logs)

        # 3. Three cold nodes one after another; node 0 owns a, node 1 owns b.
        base = work / "sequential"
        drawn_keys(base, {f"sha256:{sha1}": 0, f"sha256:{sha2}": 1})
        site2 = PeerSite(base, hub, 3)  # type: ignore[arg-type]
        running = site2.nodes
        site2.wait_all_up()
        hub.post("/_fake/reset", {})
        seq: list[Download] = []
        cpu_seq = []
        for n in site2.nodes:
            meter = CpuMeter(hub, site2.nodes)
            seq.append(download(n, "a.safetensors", expect_a, size))
            cpu_seq.append(meter.used())
            check(seq[-1:])
            wait_ingested(n, 1, timeout=600)
        seq_up = upstream_bytes(hub, sha1) / size
        notes.append("one after another: clients " + ", ".join(f"{j.seconds:.2f} s" for j in seq) + "; fills "
                     + ", ".join(sources(site2.nodes, "a.safetensors")))
        notes += [f"  node{i} asked: {c}" for i, c in enumerate(cpu_seq)]
        # 4. Node 1's own upstream fill of b (it owns b: no peer is asked to fetch it).
        meter = CpuMeter(hub, site2.nodes)
        up = download(site2[1], "b.safetensors", expect_b, size)
        cpu_up = meter.used()
        check([up])
        wait_ingested(site2[1], 2, timeout=600)
        notes.append(f"node1 upstream baseline (b): {up.seconds:.2f} s; fill " + sources(site2.nodes, "b.safetensors")[1] + "; " + cpu_up)
        rss_seq = rss_all(site2.nodes)
        stop_all(running, args.logs)
        running = []

        peer_mbps, up_mbps = mb / seq[1].seconds, mb / up.seconds
        origin = [s.split(": ", 1)[1].split()[0] for s in sources(site2.nodes, "a.safetensors")]
        filled_from_peer = origin[1] == "peer"
        rows += [
            ("upstream bytes / size, 3 nodes at once", f"{once_up:.2f}", f"alone {solo_up:.2f}",
             f"{once_up / solo_up:.2f}", "1.00", abs(once_up - 1.0) < 0.005 and abs(once_up_after - once_up) < 0.005),
            ("upstream bytes / size, 3 one after another", f"{seq_up:.2f}", f"alone {solo_up:.2f}",
             f"{seq_up / solo_up:.2f}", "1.00", abs(seq_up - 1.0) < 0.005),
            ("wall time, 3 nodes at once", f"{wall:.2f} s", f"alone {solo.seconds:.2f} s",
             f"{wall / solo.seconds:.2f}x", "<= 1.3x", wall / solo.seconds <= 1.3),
            ("node1 filling from a peer (node0 holds it)" if filled_from_peer else f"node1 filled from {origin[1]}, NOT a peer",
             f"{peer_mbps:.0f} MB/s", f"upstream {up_mbps:.0f} MB/s",
             f"{peer_mbps / up_mbps:.2f}x", ">= 0.9x", filled_from_peer and peer_mbps / up_mbps >= 0.9),
            (f"node2 filling from two peers ({origin[2]})", f"{mb / seq[2].seconds:.0f} MB/s", f"upstream {up_mbps:.0f} MB/s",
             f"{up.seconds / seq[2].seconds:.2f}x", "(info)", None),
            ("peak RSS per node, at once (VmHWM)", " / ".join(f"{r:.0f}" for r in rss_once) + " MiB",
             f"alone {rss_alone:.0f} MiB", f"{max(rss_once) / rss_alone:.2f}x", "< 300 MiB", max(rss_once) < 300),
            ("peak RSS per node, one after another", " / ".join(f"{r:.0f}" for r in rss_seq) + " MiB",
             f"alone {rss_alone:.0f} MiB", f"{max(rss_seq) / rss_alone:.2f}x", "< 300 MiB", max(rss_seq) < 300),
        ]
    finally:
        stop_all(running, args.logs)
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nbench_peers: {size / MiB:.0f} MiB bf16-like safetensors, 3 nodes + fake Hub + clients on "
          f"{os.cpu_count()} cores, loopback; load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end\n")
    print(f"{'figure':<44} {'value':>18}   {'baseline (same run)':<22} {'ratio':>7}  {'target':<10} ok")
    for name, value, base_s, ratio, target, ok in rows:
        mark = "-" if ok is None else ("PASS" if ok else "MISS")
        print(f"{name:<44} {value:>18}   {base_s:<22} {ratio:>7}  {target:<10} {mark}")
    print()
    for line in notes:
        print("  " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
