#!/usr/bin/env python3
"""Benchmark object storage (issue 13 item 7) against a local moto S3 server, same run.

moto's server (tests/s3env.py: a subprocess on 127.0.0.1; not a real S3, whose latency
is tens of ms per request) behind the counting proxy of tests/s3env.py (FaultProxy with
no fault set: it records every request and the bytes of request bodies). A file of
`--size` bytes (random, incompressible) in chunks of 1 MiB, then:

  1. archive: the chunks go into packs (store/packs.py PackWriter re-encoding skipped:
     the frames as they are), uploaded and verified by S3PackStore (store/s3packs.py):
     requests per GiB archived (upload parts and read-back check), and bytes uploaded
     vs bytes stored (target 1.00: nothing uploaded twice);
  2. read back: every archived chunk in file order through the daemon's reader
     (store/reader.py ChunkReader, 4 chunks read ahead) over ChunkStore with the bucket
     archive and nothing hot, from a fresh store (cold window cache): GETs and HEADs per
     GiB and per 8 MiB of pack (target: at most one request per 8 MiB, no HEAD);
  3. read throughput of the file through the same reader from a bucket-backed store
     (`[store] backend = "s3"`: CachedBackend over S3Backend, its cache emptied) vs the
     same store on local files;
  4. the check a node makes before serving a stored file from that store: every chunk
     present? `ChunkStore.servable` (no request) vs `has` (a HEAD per uncached chunk,
     what the check cost before), same chunks, same run.

Usage: .venv/bin/python scripts/bench_s3.py [--size 256M] [--threads 8]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mirror.manifest import ChunkRef  # noqa: E402
from mirror.store.backend import ChunkBackend  # noqa: E402
from mirror.store.cached import CachedBackend  # noqa: E402
from mirror.store.chunkstore import ChunkStore, chunk_id_of  # noqa: E402
from mirror.store.codec import Codec  # noqa: E402
from mirror.store.layout import open_layout  # noqa: E402
from mirror.store.localfs import LocalBackend  # noqa: E402
from mirror.store.packs import PACK_TARGET  # noqa: E402
from mirror.store.reader import ChunkReader  # noqa: E402
from mirror.store.s3backend import S3Backend  # noqa: E402
from mirror.store.s3packs import WINDOW, S3PackStore  # noqa: E402
from mirror.units import parse_size  # noqa: E402
from tests.s3env import FaultProxy, MotoS3  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30


def chunks_of(size: int) -> list[tuple[str, bytes]]:
    codec = Codec()
    out = []
    for i in range(math.ceil(size / MiB)):
        raw = os.urandom(min(MiB, size - i * MiB))
        out.append((chunk_id_of(raw), codec.encode(raw, compress=False)))
    return out


async def stream(store: ChunkStore, refs: list[ChunkRef], threads: int) -> tuple[float, int]:
    with ThreadPoolExecutor(threads) as pool:
        reader = ChunkReader(store, pool)
        n = 0
        t = time.perf_counter()
        async for piece in reader.iter_range(refs, 0, sum(r.length for r in refs)):
            n += len(piece)
        return time.perf_counter() - t, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="256M", help="file size (default 256M; 1G for the issue's figure)")
    ap.add_argument("--threads", type=int, default=8, help="store worker threads (the daemon's default)")
    args = ap.parse_args()
    size = parse_size(args.size)
    chunks = chunks_of(size)
    refs = [ChunkRef(cid, min(MiB, size - i * MiB)) for i, (cid, _f) in enumerate(chunks)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    moto = MotoS3()
    print(f"file of {size / MiB:.0f} MiB in {len(chunks)} chunks of 1 MiB; moto_server on 127.0.0.1 (not a real S3)")
    try:
        with FaultProxy(moto.url) as proxy:
            bucket = moto.bucket("bench")
            layout = open_layout(tmp / "arch")

            def packs() -> S3PackStore:
                return S3PackStore(moto.client(bucket, "a", endpoint=proxy.url), layout.tmp, layout.pack_index, "b" * 64)

            # 1. Archive.
            archive = packs()
            t = time.perf_counter()
            stored = 0
            writer = archive.new_writer()
            for i, (cid, frame) in enumerate(chunks):
                writer.add(cid, frame)
                if writer.size >= PACK_TARGET or i == len(chunks) - 1:
                    writer.finish()
                    writer.check()
                    writer.publish()
                    stored += writer.size
                    writer = archive.new_writer() if i < len(chunks) - 1 else writer
            took = time.perf_counter() - t
            per_gib = proxy.count() * GiB / stored
            print(f"archive:  {stored / MiB:.0f} MiB in packs, {took:.2f} s; {proxy.count()} requests "
                  f"({proxy.count('PUT')} PUT, {proxy.count('POST')} POST, {proxy.count('GET')} GET read-back) "
                  f"= {per_gib:.0f} per GiB; uploaded/stored bytes {proxy.sent / stored:.4f}")

            # 2. Read back from the archive only, cold.
            proxy.clear()
            store = ChunkStore(LocalBackend(open_layout(tmp / "empty")), tmp / "empty" / "tmp", tmp / "empty" / "quarantine",
                               archive=packs(), compress=False)
            took, n = asyncio.run(stream(store, refs, args.threads))
            assert n == size
            gets, heads = proxy.count("GET"), proxy.count("HEAD")
            budget = math.ceil(stored / WINDOW)
            print(f"read:     archived file {n / MiB:.0f} MiB in {took:.2f} s ({n / took / 1e6:.0f} MB/s); "
                  f"{gets} GET, {heads} HEAD = {gets * GiB / stored:.0f} per GiB, "
                  f"{gets / (stored / WINDOW):.2f} per 8 MiB of pack (budget {budget} GETs: "
                  f"{'met' if gets <= budget and heads == 0 else 'MISSED'})")

            # 3. The file from a bucket-backed store with an emptied cache vs a local store.
            results = {}
            checks: dict[str, float] = {}
            for name in ("local", "s3"):
                lay = open_layout(tmp / name)
                backend: ChunkBackend = LocalBackend(lay)
                if name == "s3":
                    backend = CachedBackend(S3Backend(moto.client(moto.bucket("store"), "m")), LocalBackend(lay), 1 << 40)
                st = ChunkStore(backend, lay.tmp, lay.quarantine, compress=False)
                with ThreadPoolExecutor(args.threads) as pool:
                    list(pool.map(lambda cf: st.put_frame(*cf), chunks))
                if isinstance(backend, CachedBackend):
                    for cid, _f in chunks:
                        backend.drop_cached(cid)
                    # 4. Before serving a stored file the node checks its chunks are there:
                    #    `has` (a HEAD per uncached chunk, as before) vs `servable` (none).
                    for check in ("has", "servable"):
                        t = time.perf_counter()
                        present = all(getattr(st, check)(cid) for cid, _f in chunks)
                        checks[check] = time.perf_counter() - t
                        assert present
                took, n = asyncio.run(stream(st, refs, args.threads))
                assert n == size
                results[name] = n / took / 1e6
                print(f"store:    {name:5s} read of the file {took:.2f} s ({results[name]:.0f} MB/s)")
            print(f"store:    bucket-backed (emptied cache) / local = {results['s3'] / results['local']:.2f}")
            print(f"presence: {len(chunks)} uncached chunks of a stored file checked before serving it: "
                  f"{checks['servable'] * 1000:.1f} ms (servable, no request) vs {checks['has'] * 1000:.0f} ms "
                  f"(has, a HEAD each, before this change)")
    finally:
        moto.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
