"""Eviction: above the high watermark, least recently used unpinned revisions go first,
down to the low watermark, each logged and audited; GC then frees their bytes."""

from __future__ import annotations

from pathlib import Path

from mirror.lifecycle.policy import Policy, Watermark, revision_access
from tests.conftest import random_bytes
from tests.lifecycle_util import DAY, add_revision, chunk_ids, hot_ids, open_node, past_clock, read_file, sha

MiB = 1 << 20


async def test_watermark_evicts_least_recently_used_first(data_dir: Path) -> None:
    clock = past_clock(0)
    # Five 2 MiB revisions (10 MiB); budget 7 MiB high, 5 MiB low.
    svc = await open_node(data_dir, clock, high_watermark="7M", low_watermark="5M", gc_grace="1h")
    try:
        files = {i: random_bytes(2 * MiB, seed=i) for i in range(5)}
        repo = 0
        for i, data in files.items():
            repo = await add_revision(svc, "org/m", sha(i), {"w.bin": data})
        await svc.catalog.pins.pin(repo, sha(0), "keep")  # the oldest, but pinned
        clock.advance(DAY)
        for i in (3, 1, 4):  # access order: 2 never, then 3, 1, 4
            svc.catalog.meta.touch(repo, sha(i))
            clock.advance(3600 * 2)
        access = await revision_access(svc.catalog, repo)
        assert set(access) == {sha(1), sha(3), sha(4)} and access[sha(4)][1] == 1
        rep = await svc.evictor.evict()
        # 10 MiB used, 5 MiB to free: 2 (never read), 3, 1 go; pinned 0 and recent 4 stay.
        assert rep.evicted == [sha(2), sha(3), sha(1)]
        audit = await svc.catalog.lifecycle.audit_log("evict")
        assert [a[2].split()[3].rstrip(":") for a in audit] == [sha(2), sha(3), sha(1)]
        assert await svc.catalog.repos.get_listing(repo, sha(2)) is None
        await svc.collector.gc(policy=Policy(gc_grace=0))
        assert hot_ids(svc) == chunk_ids(files[0], files[4])
        assert await svc.catalog.lifecycle.stored_bytes() <= 5 * MiB
        assert await read_file(svc, files[4]) == files[4]
        assert (await svc.verifier.verify()).ok
        assert (await svc.evictor.evict()).evicted == []  # under the mark now
    finally:
        await svc.close()


async def test_recently_read_revisions_are_not_evicted(data_dir: Path) -> None:
    clock = past_clock(0)
    svc = await open_node(data_dir, clock, high_watermark="1M", low_watermark="1M", gc_grace="1h")
    try:
        repo = await add_revision(svc, "org/m", sha(1), {"w.bin": random_bytes(2 * MiB, 1)})
        await add_revision(svc, "org/m", sha(2), {"w.bin": random_bytes(2 * MiB, 2)})
        clock.advance(DAY)
        svc.catalog.meta.touch(repo, sha(2))  # a stream may be running in another process
        assert (await svc.evictor.evict()).evicted == [sha(1)]
    finally:
        await svc.close()


async def test_percent_watermarks_use_the_volume(data_dir: Path) -> None:
    clock = past_clock(0)
    svc = await open_node(data_dir, clock, gc_grace="0s")
    try:
        await add_revision(svc, "org/m", sha(1), {"w.bin": random_bytes(MiB, 1)})
        clock.advance(DAY)
        assert Watermark.parse("90%") == Watermark(percent=0.9)
        assert (await svc.evictor.evict(policy=Policy(high=Watermark(percent=1.0), low=Watermark(percent=0.99), gc_grace=0))).evicted == []
        rep = await svc.evictor.evict(policy=Policy(high=Watermark(percent=0.0001), low=Watermark(percent=0.0001), gc_grace=0))
        assert rep.evicted == [sha(1)] and rep.used > rep.high
    finally:
        await svc.close()
