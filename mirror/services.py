"""The non-HTTP core of a node, opened the same way by the daemon and by the CLI:
layout, chunk store, catalog, node key, worker pools, ingestor and reader.

Two thread pools: `executor` (`store.workers` threads) does the CPU work of the store
(hashing, compression, decompression, verification) for ingest and reads alike;
`write_executor` (`WRITE_THREADS`) only writes and fsyncs chunk temp files, so that
waiting for the disk never holds a CPU worker.

Opening runs startup recovery: temp files of interrupted writes are removed (a staged
chunk is never referenced before it is published, so dropping it is always safe).
"""

from __future__ import annotations

import ctypes
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mirror.catalog import Catalog
from mirror.clock import Clock, SystemClock
from mirror.config import Config
from mirror.ingest import Ingestor
from mirror.keys import NodeKey
from mirror.store.chunkstore import ChunkStore
from mirror.store.fsio import process_alive
from mirror.store.layout import Layout, open_layout
from mirror.store.leases import LeaseTable
from mirror.store.packs import PackStore
from mirror.store.reader import ChunkReader

log = logging.getLogger("mirror")

# Concurrent chunk writes + fsyncs. Measured on this machine's disk, 700 KiB files written
# and fsynced: 590 MB/s from one thread, 850 from two, about 1 GB/s from four and beyond.
WRITE_THREADS = 4


@dataclass
class Services:
    config: Config
    clock: Clock
    layout: Layout
    store: ChunkStore
    catalog: Catalog
    key: NodeKey
    executor: ThreadPoolExecutor
    ingestor: Ingestor
    reader: ChunkReader
    write_executor: ThreadPoolExecutor

    async def close(self) -> None:
        await self.catalog.close()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.write_executor.shutdown(wait=True, cancel_futures=True)


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _tune_malloc() -> None:
    """Keep chunk-sized buffers (up to 4 MiB, one or more per chunk read or written) on
    the heap. glibc serves large blocks with a fresh mmap each (and gives trimmed heap
    tops back to the kernel), so every 1-4 MiB buffer is page-faulted and zeroed again:
    measured here, decoding a 1 MiB bf16 chunk ran at 560 MB/s with glibc's defaults,
    390 MB/s with the threshold fixed at 1 MiB (chunks average 1 MiB, so most still got
    an mmap), and 930 MB/s with these settings (design.md §11)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # the largest value glibc accepts on 64-bit
        libc.mallopt(_M_TRIM_THRESHOLD, 128 << 20)
    except (OSError, AttributeError):
        pass


def recover(layout: Layout) -> int:
    """Remove temp files left by interrupted writes of processes that are gone (temps
    carry their writer's pid, so a CLI run never removes a live daemon's temps)."""
    removed = 0
    for name in os.listdir(layout.tmp):
        if _writer_alive(name):
            continue
        try:
            os.unlink(layout.tmp / name)
            removed += 1
        except OSError:
            pass
    return removed


def _writer_alive(name: str) -> bool:
    parts = name.split(".")
    if len(parts) < 4 or not parts[-3].isdigit():
        return False
    pid = int(parts[-3])
    return pid != os.getpid() and process_alive(pid)


async def open_services(config: Config, *, clock: Clock | None = None, recover_temps: bool = True) -> Services:
    _tune_malloc()
    clock = clock or SystemClock()
    layout = open_layout(config.store.data_dir)
    if recover_temps:
        n = recover(layout)
        if n:
            log.info("recovery: removed %d temp files of interrupted writes", n)
    store = ChunkStore(layout, compress=config.store.compression)
    store.archive = PackStore(Path(config.lifecycle.archive_dir) if config.lifecycle.archive_dir else layout.archive)
    catalog = await Catalog.open(layout.catalog_db, clock)
    try:
        key = NodeKey.load_or_create(layout.keys)
        await catalog.meta.trust(key.public_hex, "this node")
    except BaseException:
        await catalog.close()  # a refused key must not leak the catalog's connection
        raise
    executor = ThreadPoolExecutor(max_workers=config.store.workers, thread_name_prefix="store")
    write_executor = ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="store-write")
    ingestor = Ingestor(store, catalog, key, executor, write_executor)
    reader = ChunkReader(store, executor, leases=LeaseTable())
    return Services(config, clock, layout, store, catalog, key, executor, ingestor, reader, write_executor)
