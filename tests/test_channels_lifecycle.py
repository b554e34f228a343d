"""Commits a release or an alias names (both sides of a canary) are pinned: never archived
away from the hot tier, never evicted, never collected (issue 11 item 6). In process, on
a FakeClock, with real ingested content."""

from __future__ import annotations

from pathlib import Path

from mirror.caller import Caller
from mirror.channels.plan import CanaryPlan
from mirror.lifecycle.policy import Policy
from mirror.model import RepoKey
from tests.conftest import random_bytes
from tests.lifecycle_util import DAY, add_revision, chunk_ids, hot_ids, open_node, past_clock, read_file, sha

MiB = 1 << 20
KEY = RepoKey("model", "org/m")
ADMIN = Caller(principal="test-admin", role="admin")


async def test_released_and_aliased_commits_survive_archive_eviction_and_gc(data_dir: Path) -> None:
    clock = past_clock(0)
    svc = await open_node(data_dir, clock, high_watermark="3M", low_watermark="1M", gc_grace="1h",
                          archive_after="1d", keep_revisions=0)
    try:
        files = {i: random_bytes(MiB, seed=100 + i) for i in range(6)}
        for i, data in files.items():
            await add_revision(svc, "org/m", sha(i), {"w.bin": data})
        # No upstream in this test: names are forced past the shadowing check.
        await svc.releases.create(KEY, "v1.0.0", sha(0), ADMIN, force=True)
        await svc.channels.set(KEY, "prod", sha(1), ADMIN, reason="stable", force=True)
        await svc.channels.canary(KEY, "prod", sha(2), CanaryPlan(10.0), ADMIN)
        await svc.channels.set(KEY, "staging", sha(3), ADMIN, reason="qa", force=True)
        kept = {sha(0), sha(1), sha(2), sha(3)}
        clock.advance(30 * DAY)
        archived = await svc.archiver.archive()
        assert set(archived.revisions) == {sha(4), sha(5)}  # only the unnamed ones go cold
        evicted = (await svc.evictor.evict()).evicted
        assert evicted and not set(evicted) & kept
        await svc.collector.gc(policy=Policy(gc_grace=0))
        hot = hot_ids(svc)
        for i in range(4):
            assert chunk_ids(files[i]) <= hot, i  # still in the hot tier
            assert await read_file(svc, files[i]) == files[i]
        # Moving the alias away releases the old target to the policy.
        await svc.channels.delete(KEY, "staging", ADMIN, reason="qa done")
        clock.advance(DAY)
        assert sha(3) in (await svc.evictor.evict()).evicted
        assert (await svc.verifier.verify()).ok
    finally:
        await svc.close()


async def test_naming_an_archived_revision_brings_it_back_to_the_hot_tier(data_dir: Path) -> None:
    clock = past_clock(0)
    svc = await open_node(data_dir, clock, archive_after="1d", keep_revisions=0)
    try:
        old, new = random_bytes(MiB, seed=7), random_bytes(MiB, seed=8)
        await add_revision(svc, "org/m", sha(1), {"w.bin": old})
        await add_revision(svc, "org/m", sha(2), {"w.bin": new})
        clock.advance(30 * DAY)
        assert set((await svc.archiver.archive()).revisions) == {sha(1), sha(2)}
        assert not chunk_ids(old) & hot_ids(svc)
        await svc.channels.set(KEY, "prod", sha(1), ADMIN, reason="roll back to the old model", force=True)
        assert chunk_ids(old) <= hot_ids(svc)  # thawed when the alias named it
        await svc.releases.create(KEY, "v2.0.0", sha(2), ADMIN, force=True)
        assert chunk_ids(new) <= hot_ids(svc)
        assert (await svc.archiver.archive()).revisions == []  # and kept hot
        assert (await svc.verifier.verify()).ok
    finally:
        await svc.close()
