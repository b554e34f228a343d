"""The non-HTTP core of a node, opened the same way by the daemon and by the CLI:
layout, chunk store, catalog, node key, worker pool, ingestor and reader.

Opening runs startup recovery: temp files of interrupted writes are removed (a staged
chunk is never referenced before it is published, so dropping it is always safe).
"""

from __future__ import annotations

import ctypes
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mirror.catalog import Catalog
from mirror.clock import Clock, SystemClock
from mirror.config import Config
from mirror.ingest import Ingestor
from mirror.keys import NodeKey
from mirror.store.chunkstore import ChunkStore
from mirror.store.layout import Layout, open_layout
from mirror.store.reader import ChunkReader

log = logging.getLogger("mirror")


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

    async def close(self) -> None:
        await self.catalog.close()
        self.executor.shutdown(wait=True, cancel_futures=True)


def _tune_malloc() -> None:
    # glibc's dynamic mmap threshold makes repeated 1-4 MiB buffers slow (design.md §11).
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD: fixed at 1 MiB
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
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def open_services(config: Config, *, clock: Clock | None = None, recover_temps: bool = True) -> Services:
    _tune_malloc()
    clock = clock or SystemClock()
    layout = open_layout(config.store.data_dir)
    if recover_temps:
        n = recover(layout)
        if n:
            log.info("recovery: removed %d temp files of interrupted writes", n)
    store = ChunkStore(layout, compress=config.store.compression)
    catalog = await Catalog.open(layout.catalog_db, clock)
    key = NodeKey.load_or_create(layout.keys)
    await catalog.meta.trust(key.public_hex, "this node")
    executor = ThreadPoolExecutor(max_workers=config.store.workers, thread_name_prefix="store")
    ingestor = Ingestor(store, catalog, key, executor)
    reader = ChunkReader(store, executor)
    return Services(config, clock, layout, store, catalog, key, executor, ingestor, reader)
