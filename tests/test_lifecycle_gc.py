"""GC: exactly the unreachable chunks go (checked against a mark computed here from the
file bytes), young chunks and leased ones stay, repack of sparse packs, kill -9 at every
step."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import bf16_like, random_bytes, safetensors_bytes
from tests.lifecycle_util import DAY, add_revision, chunk_ids, hot_ids, open_node, pack_ids, past_clock, read_file, run_cli, sha

MiB = 1 << 20


def weights(seed: int, mib: int = 3) -> bytes:
    return safetensors_bytes(bf16_like(mib * MiB // 2, seed=seed), "BF16")


async def test_gc_removes_exactly_the_unreachable_chunks(data_dir: Path) -> None:
    clock = past_clock(0)
    svc = await open_node(data_dir, clock, gc_grace="1h", keep_revisions=0)
    try:
        a, b, c, shared = weights(1, mib=8), weights(2), random_bytes(2 * MiB, 3), random_bytes(600_000, 4)
        repo = await add_revision(svc, "org/m", sha(1), {"a.safetensors": a, "s.bin": shared})
        await add_revision(svc, "org/m", sha(2), {"b.safetensors": b, "s.bin": shared})
        await add_revision(svc, "org/m", sha(5), {"b.safetensors": b})
        await add_revision(svc, "org/m", sha(3), {"c.bin": c})
        clock.advance(40 * DAY)
        await svc.archiver.archive(older_than=DAY)  # every chunk now lives in a pack
        await add_revision(svc, "org/m", sha(4), {"c.bin": c, "d.bin": random_bytes(MiB, 5)})
        orphan = svc.store.put_raw(random_bytes(5000, 6))  # a crashed ingest's chunk, no row
        await svc.catalog.lifecycle.evict_revision(repo, sha(1), "test")
        await svc.catalog.lifecycle.evict_revision(repo, sha(2), "test")
        await svc.catalog.lifecycle.evict_revision(repo, sha(3), "test")
        # Nothing is old enough yet for the chunks of sha(4) and the orphan file.
        clock.advance(2 * 3600)
        dry = await svc.collector.gc(dry_run=True)
        assert dry.manifests_deleted == 2  # a.safetensors and s.bin; b and c are still used
        expected = chunk_ids(b, c, random_bytes(MiB, 5))
        rep = await svc.collector.gc()
        assert rep.manifests_deleted == 2
        present = hot_ids(svc) | set(await svc.catalog.lifecycle.archived())
        assert orphan.chunk_id in hot_ids(svc)  # young by mtime: maybe an ingest in flight
        assert present - {orphan.chunk_id} == expected
        assert pack_ids(svc) >= expected - hot_ids(svc)
        assert set(await svc.catalog.lifecycle.chunk_rows()) == expected
        assert rep.packs_repacked == 1  # a's and shared's chunks were most of the pack
        assert pack_ids(svc) == expected - chunk_ids(random_bytes(MiB, 5))
        for data in (b, c):
            assert await read_file(svc, data) == data
        assert (await svc.verifier.verify()).ok
        second = await svc.collector.gc()
        assert second.manifests_deleted == second.chunk_rows_deleted == second.packs_repacked == 0
    finally:
        await svc.close()


async def test_young_chunks_and_manifests_survive_the_grace(data_dir: Path) -> None:
    clock = past_clock(0)
    svc = await open_node(data_dir, clock, gc_grace="1h")
    try:
        data = weights(7)
        await svc.ingestor.ingest_bytes(data, "sha256:" + __import__("hashlib").sha256(data).hexdigest())
        clock.advance(1800)  # listed by nobody yet: an ingest whose listing is being written
        rep = await svc.collector.gc()
        assert rep.manifests_deleted == 0 and rep.chunk_rows_deleted == 0 and hot_ids(svc) == chunk_ids(data)
        clock.advance(3600)
        rep = await svc.collector.gc()
        assert rep.manifests_deleted == 1 and rep.chunk_rows_deleted == len(chunk_ids(data)) and not hot_ids(svc)
    finally:
        await svc.close()


async def test_reader_started_before_gc_gets_correct_bytes(data_dir: Path) -> None:
    clock = past_clock(0)
    svc = await open_node(data_dir, clock, gc_grace="0s")
    try:
        data = weights(8, mib=8)
        repo = await add_revision(svc, "org/m", sha(1), {"w.safetensors": data})
        man = await svc.catalog.content.get_manifest("sha256:" + __import__("hashlib").sha256(data).hexdigest())
        assert man is not None and len(man.chunks) > 1
        svc.reader.readahead = 1
        stream = svc.reader.iter_range(man.chunks, 0, man.size)
        got = [bytes(await stream.__anext__())]
        await svc.catalog.lifecycle.evict_revision(repo, sha(1), "test")
        clock.advance(DAY)
        rep = await svc.collector.gc()
        assert rep.manifests_deleted == 1 and rep.kept_leased == len(man.chunks)
        got += [bytes(p) async for p in stream]
        assert b"".join(got) == data
        rep = await svc.collector.gc()  # the lease is released: now they go
        assert not hot_ids(svc) and rep.chunk_files_deleted == len(man.chunks)
    finally:
        await svc.close()


@pytest.mark.parametrize("label", ["gc.manifests_deleted", "gc.file_deleted:2", "gc.rows_deleted", "gc.repacked"])
async def test_crash_at_each_gc_step_leaves_a_verified_store(tmp_path: Path, label: str) -> None:
    data_dir = tmp_path / "data"
    clock = past_clock(90)
    svc = await open_node(data_dir, clock, keep_revisions=0)
    gone, kept, hot_gone = weights(10), weights(11, mib=1), random_bytes(2 * MiB, 12)
    try:
        repo = await add_revision(svc, "org/m", sha(1), {"w.safetensors": gone})
        await add_revision(svc, "org/m", sha(2), {"w.safetensors": kept})
        clock.advance(30 * DAY)
        assert (await svc.archiver.archive(older_than=DAY)).packs == 1
        await add_revision(svc, "org/m", sha(3), {"x.bin": hot_gone})
        await svc.catalog.lifecycle.evict_revision(repo, sha(1), "test")
        await svc.catalog.lifecycle.evict_revision(repo, sha(3), "test")
    finally:
        await svc.close()
    env = {"MIRROR_LIFECYCLE_GC_GRACE": "0s"}
    spec = label if ":" in label else f"{label}:1"
    crashed = run_cli(data_dir, "gc", crash=spec, env=env)
    assert crashed.returncode == -9, crashed.stderr
    assert run_cli(data_dir, "verify").returncode == 0
    done = run_cli(data_dir, "gc", env=env)
    assert done.returncode == 0, done.stderr
    assert run_cli(data_dir, "verify").returncode == 0
    svc = await open_node(data_dir, past_clock(0))
    try:
        assert await read_file(svc, kept) == kept
        assert not (hot_ids(svc) | pack_ids(svc)) & chunk_ids(gone, hot_gone)
        assert set(await svc.catalog.lifecycle.chunk_rows()) == chunk_ids(kept)
    finally:
        await svc.close()
