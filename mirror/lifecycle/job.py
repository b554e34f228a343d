"""The lifecycle job: one round of every lifecycle step, and the daemon's schedule.

A round thaws revisions read again, archives cold ones, evicts above the high watermark,
then collects garbage; each step takes the lifecycle lock itself, so a CLI command on
the same data directory makes the daemon skip a round rather than race it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable

from mirror.errors import LockBusy, MirrorError
from mirror.lifecycle.archive import Archiver
from mirror.lifecycle.evict import Evictor
from mirror.lifecycle.gc import Collector

log = logging.getLogger("mirror.lifecycle")


class LifecycleJob:
    def __init__(self, archiver: Archiver, evictor: Evictor, collector: Collector) -> None:
        self.archiver = archiver
        self.evictor = evictor
        self.collector = collector

    async def run_once(self) -> dict[str, object]:
        return {
            "thawed": await self.archiver.thaw_hot_again(),
            "archive": await self.archiver.archive(),
            "evict": await self.evictor.evict(),
            "gc": await self.collector.gc(),
        }

    async def relieve(self) -> None:
        """Evict above the watermarks, then collect: run when the data volume runs short
        of space (store/space.py), not on a schedule."""

        async def round_() -> None:
            evicted = await self.evictor.evict()
            collected = await self.collector.gc()
            log.info("space relief: evicted %d revisions, deleted %d chunk files (%d bytes)",
                     len(evicted.evicted), collected.chunk_files_deleted, collected.bytes_freed)

        await _guarded("space relief", round_())

    async def forever(self, interval: float) -> None:
        """`run_once` every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await _guarded("lifecycle round", self.run_once())


async def _guarded(what: str, work: Awaitable[object]) -> None:
    """Run one lifecycle round; a failure is logged, never raised (the next one retries)."""
    try:
        await work
    except LockBusy:
        log.info("%s: another lifecycle operation holds the lock; skipped", what)
    except MirrorError as exc:
        log.warning("%s failed: %s", what, exc.message)
    except Exception:
        log.exception("%s failed; will retry", what)
