#!/usr/bin/env python3
"""Benchmark the chunk backends on a bucket against the local one (issue 13, the backend).

moto's S3 server (tests/s3env.py: a subprocess on 127.0.0.1; not a real S3, whose
latency is tens of ms per request) and a local data dir, same run. For each backend: put
N chunk frames of 1 MiB (random, incompressible), then get them all back, one thread and
then `--threads` threads; and the requests a cold read through the cache costs (counted
by the fault proxy in front of moto, with no fault set).

  local:     LocalBackend (write_atomic: temp, fsync, rename, directory fsync)
  s3:        S3Backend (create-only PUT, one ranged GET)
  s3-cached: CachedBackend over S3Backend (PUT + local copy; gets after a restart with an
             empty cache: GET + local copy)

Usage: .venv/bin/python scripts/bench_s3_backend.py [--chunks 100] [--threads 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mirror.store.backend import ChunkBackend  # noqa: E402
from mirror.store.cached import CachedBackend  # noqa: E402
from mirror.store.chunkstore import chunk_id_of  # noqa: E402
from mirror.store.codec import Codec  # noqa: E402
from mirror.store.layout import open_layout  # noqa: E402
from mirror.store.localfs import LocalBackend  # noqa: E402
from mirror.store.s3backend import S3Backend  # noqa: E402
from tests.s3env import FaultProxy, MotoS3  # noqa: E402

MiB = 1 << 20


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run(name: str, make: Callable[[], ChunkBackend], chunks: list[tuple[str, bytes]], threads: int) -> None:
    total = sum(len(f) for _c, f in chunks) / 1e6
    for n in (1, threads):
        backend = make()
        with ThreadPoolExecutor(n) as pool:
            put = timed(lambda: list(pool.map(lambda cf: backend.put(*cf), chunks)))
            if isinstance(backend, CachedBackend):  # a restart with an empty cache
                for cid, _f in chunks:
                    backend.drop_cached(cid)
            get = timed(lambda: list(pool.map(lambda cf: backend.get(cf[0]), chunks)))
        print(f"{name:10s} {n} thread{'s' if n > 1 else ' '}  put {put:6.2f} s ({total / put:6.0f} MB/s)   "
              f"get {get:6.2f} s ({total / get:6.0f} MB/s)   put+get {put + get:6.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=100)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    codec = Codec()
    chunks = []
    for _ in range(args.chunks):
        raw = os.urandom(MiB)
        chunks.append((chunk_id_of(raw), codec.encode(raw, compress=False)))
    tmp = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    moto = MotoS3()
    try:
        print(f"{args.chunks} chunks of 1 MiB; moto_server on 127.0.0.1 (not a real S3)")
        dirs = iter(range(1000))
        run("local", lambda: LocalBackend(open_layout(tmp / f"local{next(dirs)}")), chunks, args.threads)
        run("s3", lambda: S3Backend(moto.client(moto.bucket("bench"), "m")), chunks, args.threads)
        run("s3-cached", lambda: CachedBackend(S3Backend(moto.client(moto.bucket("bench"), "m")),
                                               LocalBackend(open_layout(tmp / f"cache{next(dirs)}")), 1 << 40),
            chunks, args.threads)
        with FaultProxy(moto.url) as proxy:
            bucket = moto.bucket("count")
            cache = CachedBackend(S3Backend(moto.client(bucket, "m", endpoint=proxy.url)),
                                  LocalBackend(open_layout(tmp / "counted")), 1 << 40)
            for cid, f in chunks[:10]:
                cache.put(cid, f)
            writes = dict(PUT=proxy.count("PUT"), HEAD=proxy.count("HEAD"), GET=proxy.count("GET"))
            proxy.clear()
            for cid, _f in chunks[:10]:
                cache.drop_cached(cid)
                cache.get(cid)
            print(f"requests for 10 new chunks put: {writes} (the first put also writes the bucket's FORMAT "
                  f"marker: a PUT and a GET)")
            print(f"requests for 10 cold chunk reads: GET {proxy.count('GET')}, HEAD {proxy.count('HEAD')}")
    finally:
        moto.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
