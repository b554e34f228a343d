"""Lifecycle benchmark: archive size and read speed for 1 GiB of bf16 weights, and GC time
for 100,000 chunks, each beside its baseline measured in the same run.

    .venv/bin/python scripts/bench_lifecycle.py [--size-mib 1024] [--gc-chunks 100000]

1. A safetensors file of bf16-like weights (normal, std 0.02, high 16 bits of float32) is
   ingested into a store with compression off and one with it on. Each is archived; the
   archive's stored size is printed against the hot size and the logical size (targets:
   never larger than hot; <= 0.70 of logical), and a full read from the archive against
   a full read from the hot tier (target >= 300 MB/s).
2. 100,000 small chunks with catalog rows are synthesised, half referenced by a listed
   revision's manifest; `gc` removes the other half (target < 30 s). Baseline: walking
   and unlinking the same number of files in an identical directory, without the catalog.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mirror import config as config_mod  # noqa: E402
from mirror.clock import FakeClock  # noqa: E402
from mirror.lifecycle.policy import Policy  # noqa: E402
from mirror.manifest import ChunkRef, Manifest  # noqa: E402
from mirror.model import FileEntry, RepoKey  # noqa: E402
from mirror.node import Node, open_node as open_mirror_node  # noqa: E402
from mirror.store.chunkstore import PutResult  # noqa: E402
from mirror.store.codec import HEADER, MAGIC, RAW  # noqa: E402
from tests.conftest import safetensors_header  # noqa: E402

MiB = 1 << 20
DAY = 86400.0


def make_weights(path: Path, size: int) -> str:
    """Write a bf16 safetensors file of about `size` bytes; return its sha256 identity."""
    n_tensors = 8
    per = size // n_tensors // 2 * 2
    header = safetensors_header([(f"model.layers.{i}.weight", "BF16", per) for i in range(n_tensors)])
    h = hashlib.sha256(header)
    rng = np.random.default_rng(0)
    with open(path, "wb") as fh:
        fh.write(header)
        left = per * n_tensors
        while left:
            n = min(left, 64 * MiB)
            f32 = rng.standard_normal(n // 2, dtype=np.float32) * np.float32(0.02)
            block = (f32.view(np.uint32) >> 16).astype("<u2").tobytes()
            fh.write(block)
            h.update(block)
            left -= n
    return "sha256:" + h.hexdigest()


async def open_node(root: Path, clock: FakeClock, compression: bool) -> Node:
    cfg = config_mod.load(env={}, overrides={"store": {"data_dir": str(root), "compression": compression},
                                             "lifecycle": {"keep_revisions": 0, "gc_grace": "0s"}})
    return await open_mirror_node(cfg, clock=clock)


async def full_read(svc: Node, identity: str) -> float:
    man = await svc.catalog.content.get_manifest(identity)
    assert man is not None
    t = time.perf_counter()
    n = 0
    async for piece in svc.reader.iter_range(man.chunks, 0, man.size):
        n += len(piece)
    dt = time.perf_counter() - t
    assert n == man.size
    return n / dt / 1e6


async def bench_archive(work: Path, src: Path, identity: str, compression: bool) -> None:
    root = work / f"store-{'z' if compression else 'raw'}"
    clock = FakeClock(time.time() - 100 * DAY)
    svc = await open_node(root, clock, compression)
    try:
        logical = src.stat().st_size
        t = time.perf_counter()
        await svc.ingestor.ingest_path(src, identity)
        ingest_s = time.perf_counter() - t
        repo = await svc.catalog.repos.repo_id(RepoKey("model", "bench/weights"))
        assert repo is not None
        await svc.catalog.repos.put_listing(repo, "0" * 40, [FileEntry("model.safetensors", "file", "1" * 40, logical, identity.split(":")[1], 134)])
        hot = await svc.catalog.lifecycle.stored_bytes()
        hot_read = await full_read(svc, identity)
        clock.advance(60 * DAY)
        t = time.perf_counter()
        rep = await svc.archiver.archive(older_than=DAY)
        archive_s = time.perf_counter() - t
        arch = await svc.catalog.lifecycle.stored_bytes()
        assert not list(svc.store.iter_ids()), "hot copies left after archive"
        arch_read = await full_read(svc, identity)
        label = "compression on " if compression else "compression off"
        print(f"[{label}] logical {logical / MiB:.1f} MiB, ingest {logical / ingest_s / 1e6:.0f} MB/s")
        print(f"[{label}] hot {hot / MiB:.1f} MiB ({hot / logical:.3f} of logical) -> archive {arch / MiB:.1f} MiB "
              f"({arch / logical:.3f} of logical, {arch / hot:.3f} of hot); saved {rep.saved / MiB:.1f} MiB; "
              f"archiving took {archive_s:.1f} s ({logical / archive_s / 1e6:.0f} MB/s)")
        print(f"[{label}] full read: hot {hot_read:.0f} MB/s (baseline), archive {arch_read:.0f} MB/s "
              f"({arch_read / hot_read:.2f} of hot)")
    finally:
        await svc.close()
        shutil.rmtree(root, ignore_errors=True)


def synth_chunks(root: Path, n: int) -> list[tuple[str, bytes]]:
    """Write n small raw chunk files under a chunks/ tree without fsync (setup only)."""
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        raw = rng.bytes(512)
        import blake3

        cid = blake3.blake3(raw).hexdigest()
        d = root / "chunks" / cid[:2] / cid[2:4]
        d.mkdir(parents=True, exist_ok=True)
        (d / cid).write_bytes(HEADER.pack(MAGIC, RAW, 0, 0, len(raw), len(raw)) + raw)
        out.append((cid, raw))
    return out


async def bench_gc(work: Path, n: int) -> None:
    base = work / "gc-baseline"
    t = time.perf_counter()
    ids = synth_chunks(base, n)
    synth_s = time.perf_counter() - t
    # Baseline: walk the tree and unlink half the files, no catalog.
    doomed = {cid for cid, _ in ids[::2]}
    t = time.perf_counter()
    for dirpath, _dirs, names in os.walk(base / "chunks"):
        for name in names:
            if name in doomed:
                os.unlink(os.path.join(dirpath, name))
    baseline_s = time.perf_counter() - t

    root = work / "gc-store"
    clock = FakeClock(time.time() - 10 * DAY)
    svc = await open_node(root, clock, False)
    try:
        ids = synth_chunks(root, n)
        await svc.catalog.content.add_chunks(PutResult(cid, len(raw), len(raw) + 16, RAW, True) for cid, raw in ids)
        kept = ids[1::2]
        # The kept half, as the files of one listed revision (1,000 chunks per manifest).
        repo = await svc.catalog.repos.repo_id(RepoKey("model", "bench/gc"))
        assert repo is not None
        entries = []
        for j in range(0, len(kept), 1000):
            part = kept[j:j + 1000]
            digest = hashlib.sha256(str(j).encode()).hexdigest()
            man = Manifest(f"sha256:{digest}", 512 * len(part), tuple(ChunkRef(c, 512) for c, _ in part)).signed(svc.key)
            await svc.catalog.content.put_manifest(man)
            entries.append(FileEntry(f"part-{j}.bin", "file", "2" * 40, man.size, digest, 134))
        await svc.catalog.repos.put_listing(repo, "3" * 40, entries)
        clock.advance(DAY)
        t = time.perf_counter()
        rep = await svc.collector.gc(policy=Policy(gc_grace=0))
        gc_s = time.perf_counter() - t
        assert rep.chunk_files_deleted == n - len(kept), rep
        assert len(list(svc.store.iter_ids())) == len(kept)
        print(f"[gc] {n} chunks ({len(kept)} kept) synthesised in {synth_s:.1f} s; gc {gc_s:.2f} s "
              f"(deleted {rep.chunk_files_deleted} files and {rep.chunk_rows_deleted} rows); "
              f"baseline walk+unlink of the same files {baseline_s:.2f} s ({gc_s / baseline_s:.1f}x)")
    finally:
        await svc.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--gc-chunks", type=int, default=100_000)
    ap.add_argument("--only", choices=("archive", "gc"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-lifecycle-", dir=os.environ.get("BENCH_DIR")))
    try:
        if args.only != "gc":
            src = work / "model.safetensors"
            identity = make_weights(src, args.size_mib * MiB)
            for compression in (False, True):
                await bench_archive(work, src, identity, compression)
        if args.only != "archive":
            await bench_gc(work, args.gc_chunks)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
