#!/usr/bin/env python3
"""Benchmark of the chunk store against the targets of design.md §11 (ingest, dedup,
compression, full read), each figure next to a baseline measured in the same run.

    .venv/bin/python scripts/bench_store.py [--size-mib 1024] [--dir DIR]

It writes, in a temp directory under DIR (default: the system temp dir; it must be a real
disk, the same one the data directories use, not tmpfs):

- `base.safetensors`: SIZE MiB of bf16-like weights (normal, std 0.02, float32 truncated
  to its high 16 bits), in a few tensors behind a real safetensors header;
- `tuned.safetensors`: a fine-tuned variant: 10% of the 1 MiB blocks of the data section,
  picked at random, hold fresh random weights and the header is 56 bytes longer;
- `tuned-runs.safetensors` (only chunked and hashed, for comparison): the same share of
  blocks changed, but as runs of 16 consecutive blocks (whole tensors rewritten), which is
  the case design.md §4's reuse figure describes;

then ingests them into two data directories (compression on and off) and reads them back.
Baselines: one sha256 pass over the same file (ingest), and a sequential read of the
plain file with 1 MiB reads (full read). Every read, baseline included, is timed after a
warm-up pass, so all of them are served from the page cache.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import mmap
import os
import shutil
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# numpy only generates data; keep its BLAS threads from spinning beside the measurements.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mirror import config as config_mod  # noqa: E402
from mirror.manifest import Manifest  # noqa: E402
from mirror.node import Node, open_node  # noqa: E402
from mirror.store.chunker import cut  # noqa: E402
from mirror.store.chunkstore import chunk_id_of  # noqa: E402

MiB = 1 << 20
HEADER_GROWTH = 56
CHANGED_SHARE = 0.10

# design.md §11 targets
TARGET_INGEST_MBS = 500.0
TARGET_REUSE = 0.88
TARGET_STORED_OVER_LOGICAL = 0.70
TARGET_READ_MBS = 1200.0


# --- data --------------------------------------------------------------------------------------


def bf16_block(n_values: int, rng: np.random.Generator) -> bytes:
    f32 = rng.standard_normal(n_values, dtype=np.float32) * np.float32(0.02)
    return (f32.view(np.uint32) >> 16).astype("<u2").tobytes()


def header(data_len: int, n_tensors: int, pad_to: int | None = None) -> bytes:
    import json

    per = data_len // n_tensors // 2 * 2
    entries: dict[str, object] = {"__metadata__": {"format": "pt"}}
    pos = 0
    for i in range(n_tensors):
        n = per if i < n_tensors - 1 else data_len - pos
        entries[f"model.layers.{i}.mlp.weight"] = {"dtype": "BF16", "shape": [n // 2], "data_offsets": [pos, pos + n]}
        pos += n
    text = json.dumps(entries, separators=(",", ":")).encode()
    target = pad_to if pad_to is not None else -(-len(text) // 8) * 8
    text += b" " * (target - len(text))
    return struct.pack("<Q", len(text)) + text


def make_files(root: Path, size_mib: int) -> tuple[Path, Path, Path, int]:
    """Write the base file and its two variants; return their paths and the number of
    changed 1 MiB blocks."""
    data_len = size_mib * MiB
    n_tensors = max(4, size_mib // 64)
    head = header(data_len, n_tensors)
    head2 = header(data_len, n_tensors, pad_to=len(head) - 8 + HEADER_GROWTH)
    assert len(head2) == len(head) + HEADER_GROWTH
    n_blocks = data_len // MiB
    n_changed = max(1, round(n_blocks * CHANGED_SHARE))
    rng = np.random.default_rng(20240601)
    scattered = set(rng.choice(n_blocks, size=n_changed, replace=False).tolist())
    run = 16
    starts = rng.choice(n_blocks // run, size=max(1, n_changed // run), replace=False).tolist()
    runs = {s * run + i for s in starts for i in range(run)}
    gen = np.random.default_rng(7)
    fresh = np.random.default_rng(8)
    base, tuned, tuned_runs = root / "base.safetensors", root / "tuned.safetensors", root / "tuned-runs.safetensors"
    step = 64  # blocks per write
    with open(base, "wb") as fa, open(tuned, "wb") as fb, open(tuned_runs, "wb") as fc:
        fa.write(head)
        fb.write(head2)
        fc.write(head2)
        for first in range(0, n_blocks, step):
            count = min(step, n_blocks - first)
            data = bf16_block(count * MiB // 2, gen)
            fa.write(data)
            for out, changed in ((fb, scattered), (fc, runs)):
                view = bytearray(data)
                for b in range(first, first + count):
                    if b in changed:
                        lo = (b - first) * MiB
                        view[lo:lo + MiB] = bf16_block(MiB // 2, fresh)
                out.write(view)
    return base, tuned, tuned_runs, n_changed


def reused_share(path: Path, present: set[str]) -> float:
    """Share of the file's bytes in chunks whose ids are in `present` (no store involved)."""
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        try:
            return sum(n for off, n in cut(view) if chunk_id_of(view[off:off + n]) in present) / len(view)
        finally:
            view.release()


# --- measurements ----------------------------------------------------------------------------


def sha256_file(path: Path) -> tuple[str, float]:
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        t0 = time.perf_counter()
        h = hashlib.sha256(mm).hexdigest()
        return h, time.perf_counter() - t0


def read_plain(path: Path) -> float:
    buf = bytearray(MiB)
    with open(path, "rb", buffering=0) as fh:
        t0 = time.perf_counter()
        while fh.readinto(buf):
            pass
        return time.perf_counter() - t0


async def read_store(svc: Node, man: Manifest) -> float:
    t0 = time.perf_counter()
    n = 0
    async for piece in svc.reader.iter_range(man.chunks, 0, man.size):
        n += len(piece)
    dt = time.perf_counter() - t0
    assert n == man.size, (n, man.size)
    return dt


async def open_store(root: Path, name: str, compression: bool) -> Node:
    cfg = config_mod.load(env={}, overrides={"store": {"data_dir": str(root / name), "compression": compression}})
    return await open_node(cfg)


@dataclass
class Row:
    name: str
    value: str
    baseline: str
    ratio: str
    target: str
    ok: bool | None


def mbs(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


async def run(root: Path, size_mib: int) -> list[Row]:
    t0 = time.perf_counter()
    base, tuned, tuned_runs, changed = make_files(root, size_mib)
    size_a, size_b = base.stat().st_size, tuned.stat().st_size
    print(f"data: {base.name} {size_a / MiB:.0f} MiB, {tuned.name} ({changed} of {size_mib} 1 MiB blocks changed, "
          f"header +{HEADER_GROWTH} B) written in {time.perf_counter() - t0:.1f} s under {root}", flush=True)

    sha_a, _ = sha256_file(base)  # warm-up: the file is in the page cache from here on
    sha_a, t_sha = sha256_file(base)
    sha_b, _ = sha256_file(tuned)
    rows: list[Row] = []

    # Compression on: ingest the base, then the variant.
    svc = await open_store(root, "data-zstd", True)
    try:
        t0 = time.perf_counter()
        man_a = await svc.ingestor.ingest_path(base, f"sha256:{sha_a}")
        t_ingest = time.perf_counter() - t0
        stats_a = await svc.catalog.content.stats()
        before = set(await asyncio.get_running_loop().run_in_executor(None, lambda: list(svc.store.iter_ids())))
        t0 = time.perf_counter()
        man_b = await svc.ingestor.ingest_path(tuned, f"sha256:{sha_b}")
        t_ingest_b = time.perf_counter() - t0
        reused = sum(c.length for c in man_b.chunks if c.chunk_id in before)
        runs_share = await asyncio.get_running_loop().run_in_executor(None, reused_share, tuned_runs, before)
        await read_store(svc, man_a)  # warm-up
        t_read_z = await read_store(svc, man_a)
    finally:
        await svc.close()

    # Compression off: the same base file.
    svc = await open_store(root, "data-raw", False)
    try:
        t0 = time.perf_counter()
        man_raw = await svc.ingestor.ingest_path(base, f"sha256:{sha_a}")
        t_ingest_raw = time.perf_counter() - t0
        stats_raw = await svc.catalog.content.stats()
        await read_store(svc, man_raw)  # warm-up
        t_read_raw = await read_store(svc, man_raw)
    finally:
        await svc.close()

    read_plain(base)  # warm-up
    t_plain = read_plain(base)

    sha_mbs = mbs(size_a, t_sha)
    plain_mbs = mbs(size_a, t_plain)
    ing = mbs(size_a, t_ingest)
    rows.append(Row("ingest, compression on", f"{ing:.0f} MB/s", f"sha256 {sha_mbs:.0f} MB/s", f"{ing / sha_mbs:.3f}",
                    f">= {TARGET_INGEST_MBS:.0f} MB/s", ing >= TARGET_INGEST_MBS))
    ing_raw = mbs(size_a, t_ingest_raw)
    rows.append(Row("ingest, compression off", f"{ing_raw:.0f} MB/s", f"sha256 {sha_mbs:.0f} MB/s",
                    f"{ing_raw / sha_mbs:.3f}", "", None))
    ing_b = mbs(size_b, t_ingest_b)
    rows.append(Row("ingest of the variant (dedup)", f"{ing_b:.0f} MB/s", f"sha256 {sha_mbs:.0f} MB/s",
                    f"{ing_b / sha_mbs:.3f}", "", None))
    sol = stats_a.stored_bytes / size_a
    rows.append(Row("bf16 stored/logical, compression on", f"{sol:.3f}", f"off {stats_raw.stored_bytes / size_a:.3f}",
                    f"{sol / (stats_raw.stored_bytes / size_a):.3f}", f"<= {TARGET_STORED_OVER_LOGICAL:.2f}",
                    sol <= TARGET_STORED_OVER_LOGICAL))
    share = reused / size_b
    rows.append(Row("variant bytes already stored", f"{share:.3f}", f"{changed}/{size_mib} blocks changed",
                    f"ideal {1 - changed / size_mib:.3f}", f">= {TARGET_REUSE:.2f}", share >= TARGET_REUSE))
    rows.append(Row("  same share changed as 16 MiB runs", f"{runs_share:.3f}", f"{changed}/{size_mib} blocks changed",
                    f"ideal {1 - changed // 16 * 16 / size_mib:.3f}", "", None))
    rz = mbs(size_a, t_read_z)
    rows.append(Row("full read, compressed store", f"{rz:.0f} MB/s", f"plain file {plain_mbs:.0f} MB/s",
                    f"{rz / plain_mbs:.3f}", f">= {TARGET_READ_MBS:.0f} MB/s", rz >= TARGET_READ_MBS))
    rr = mbs(size_a, t_read_raw)
    rows.append(Row("full read, raw store", f"{rr:.0f} MB/s", f"plain file {plain_mbs:.0f} MB/s",
                    f"{rr / plain_mbs:.3f}", "", None))
    print(f"chunks: base {len(man_a.chunks)} (mean {size_a / max(1, len(man_a.chunks)) / MiB:.2f} MiB), "
          f"variant {len(man_b.chunks)}; stored base {stats_a.stored_bytes / MiB:.1f} MiB compressed, "
          f"{stats_raw.stored_bytes / MiB:.1f} MiB raw")
    return rows


def print_table(rows: list[Row]) -> None:
    cols = ["metric", "value", "baseline (same run)", "ratio", "target", "result"]
    cells = [[r.name, r.value, r.baseline, r.ratio, r.target, "" if r.ok is None else ("PASS" if r.ok else "MISS")] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024, help="size of the bf16 file (default 1024)")
    ap.add_argument("--dir", default=None, help="where to create the temp directory (a real disk; default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.dir))
    print(f"model-mirror store benchmark: {os.cpu_count()} CPUs, size {args.size_mib} MiB", flush=True)
    try:
        rows = asyncio.run(run(root, args.size_mib))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
