"""Read leases: the chunks that in-process readers are streaming right now.

A `ChunkReader` holds a lease on a manifest's chunk ids for as long as it streams them;
GC in the same process never deletes a leased chunk (threat-model T27, C8). Leases are
counted, so two streams of one file each hold their own. Thread-safe.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Iterable


class LeaseTable:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: Counter[str] = Counter()

    def acquire(self, chunk_ids: Iterable[str]) -> tuple[str, ...]:
        ids = tuple(set(chunk_ids))
        with self._lock:
            self._held.update(ids)
        return ids

    def release(self, ids: tuple[str, ...]) -> None:
        with self._lock:
            self._held.subtract(ids)
            for cid in ids:
                if self._held[cid] <= 0:
                    del self._held[cid]

    def is_held(self, cid: str) -> bool:
        with self._lock:
            return cid in self._held

    def held(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._held)
