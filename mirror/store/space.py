"""Free space on the data volume, and what the node does when it runs low.

A fill needs room for its spool and then its chunks (about twice the file at worst,
before the spool is removed), above `min_free`. `SpaceGuard.room_for(size)` answers that
from one statvfs call, cached for a second on the injected clock. When space is short,
the node keeps serving (misses stream from upstream without caching, resolve/direct.py)
and the guard calls `on_low` (the node starts eviction and GC), at most once per
`relieve_every` seconds.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from mirror.clock import Clock

log = logging.getLogger("mirror.store")

_CACHE_SECONDS = 1.0


class SpaceGuard:
    def __init__(self, root: Path, min_free: int, clock: Clock, *, on_low: Callable[[], object] | None = None,
                 relieve_every: float = 60.0) -> None:
        """`on_low` runs (at most once per `relieve_every` seconds) when a fill does not
        fit: the node starts eviction and GC there."""
        self.root = root
        self.min_free = min_free
        self.clock = clock
        self.relieve_every = relieve_every
        self.on_low = on_low
        self._free: tuple[float, int] | None = None
        self._last_relief = float("-inf")
        self._low = False

    def free(self) -> int:
        """Bytes available to this process on the data volume (cached briefly)."""
        now = self.clock.monotonic()
        if self._free is None or now - self._free[0] > _CACHE_SECONDS:
            try:
                st = os.statvfs(self.root)
                self._free = (now, st.f_bavail * st.f_frsize)
            except OSError:
                self._free = (now, 0)
        return self._free[1]

    def forget(self) -> None:
        """Measure again at the next question (after a write failed for lack of space)."""
        self._free = None

    def room_for(self, size: int) -> bool:
        """True when a fill of `size` bytes fits above `min_free`."""
        free = self.free()
        low = free < self.min_free
        if low != self._low:
            self._low = low
            if low:
                log.warning("low on space in %s: %d bytes free (keeping %d); new fills are shed", self.root, free, self.min_free)
            else:
                log.info("space is back in %s: %d bytes free; caching again", self.root, free)
        ok = free - 2 * size >= self.min_free
        if not ok:
            self.relieve()
        return ok

    def relieve(self) -> None:
        now = self.clock.monotonic()
        if self.on_low is not None and now - self._last_relief >= self.relieve_every:
            self._last_relief = now
            self.on_low()
