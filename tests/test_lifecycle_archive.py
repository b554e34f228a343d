"""Archive tier: cold revisions move to packs and stay byte-exact; pinned and recent ones
stay hot; thaw; a reader racing the archive; kill -9 at every archive step."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.conftest import bf16_like, random_bytes, safetensors_bytes
from tests.lifecycle_util import DAY, add_revision, chunk_ids, hot_ids, open_node, pack_ids, past_clock, read_file, run_cli, sha

MiB = 1 << 20


def weights(seed: int, mib: int = 3) -> bytes:
    return safetensors_bytes(bf16_like(mib * MiB // 2, seed=seed), "BF16")


async def test_idle_revisions_are_archived_and_stay_readable(data_dir: Path) -> None:
    clock = past_clock(0)
    svc = await open_node(data_dir, clock, archive_after="30d", keep_revisions=1)
    try:
        old, pinned, recent, current = weights(1), weights(2), weights(3), weights(4)
        shared = random_bytes(300_000, seed=9)
        await add_revision(svc, "org/m", sha(1), {"model.safetensors": old, "a.bin": shared})
        repo = await add_revision(svc, "org/m", sha(2), {"model.safetensors": pinned})
        await svc.catalog.pins.pin(repo, sha(2), "prod")
        await add_revision(svc, "org/m", sha(3), {"model.safetensors": recent, "a.bin": shared})
        await add_revision(svc, "org/m", sha(4), {"model.safetensors": current}, ref="main")
        clock.advance(40 * DAY)
        svc.catalog.meta.touch(repo, sha(3))  # read recently
        dry = await svc.archiver.archive(dry_run=True)
        assert dry.revisions == [sha(1)] and hot_ids(svc) >= chunk_ids(old)
        rep = await svc.archiver.archive()
        assert rep.revisions == [sha(1)]
        assert rep.chunks == len(chunk_ids(old)) and rep.packs == 1
        assert 0 < rep.archive_bytes <= 0.75 * rep.hot_bytes and rep.saved > 0
        assert not (hot_ids(svc) & chunk_ids(old))
        assert pack_ids(svc) == chunk_ids(old)
        assert hot_ids(svc) >= chunk_ids(pinned, recent, current, shared)
        # Byte-exact through the reader, whole and by range.
        assert await read_file(svc, old) == old
        assert await read_file(svc, old, 1_000_003, 2_500_000) == old[1_000_003:2_500_000]
        assert all(svc.store.has(c) for c in chunk_ids(old))
        assert (await svc.verifier.verify()).ok
        # A second run has nothing to do.
        assert (await svc.archiver.archive()).chunks == 0
        audit = await svc.catalog.lifecycle.audit_log("archive")
        assert len(audit) == 1 and "1 revisions" in audit[0][2]
    finally:
        await svc.close()


async def test_thaw_and_automatic_thaw_after_hits(data_dir: Path) -> None:
    clock = past_clock(0)
    svc = await open_node(data_dir, clock, archive_after="30d", keep_revisions=0, thaw_after_hits=2, compression=True)
    try:
        a, b = weights(5), weights(6)
        repo = await add_revision(svc, "org/m", sha(1), {"w.safetensors": a})
        await add_revision(svc, "org/m", sha(2), {"w.safetensors": b})
        clock.advance(31 * DAY)
        await svc.archiver.archive()
        assert not hot_ids(svc) & chunk_ids(a, b)
        await svc.archiver.thaw(repo, sha(1))
        assert hot_ids(svc) >= chunk_ids(a)
        assert not (set(await svc.catalog.lifecycle.archived()) & chunk_ids(a))
        assert await read_file(svc, a) == a
        # sha(2): two reads after archiving bring it back on the next round.
        svc.catalog.meta.touch(repo, sha(2))
        assert await svc.archiver.thaw_hot_again((await _policy(svc))) == 0
        svc.catalog.meta.touch(repo, sha(2))
        assert await svc.archiver.thaw_hot_again((await _policy(svc))) == 1
        assert hot_ids(svc) >= chunk_ids(b)
        assert (await svc.verifier.verify()).ok
    finally:
        await svc.close()


async def _policy(svc):  # type: ignore[no-untyped-def]
    from mirror.lifecycle.policy import Policy

    return Policy.from_config(svc.config.lifecycle)


async def test_reader_started_before_archive_gets_correct_bytes(data_dir: Path) -> None:
    clock = past_clock(0)
    svc = await open_node(data_dir, clock, keep_revisions=0)
    try:
        data = weights(7, mib=8)
        await add_revision(svc, "org/m", sha(1), {"w.safetensors": data})
        man = await svc.catalog.content.get_manifest(f"sha256:{hashlib.sha256(data).hexdigest()}")
        assert man is not None
        svc.reader.readahead = 1
        stream = svc.reader.iter_range(man.chunks, 0, man.size)
        got = [bytes(await stream.__anext__())]
        clock.advance(60 * DAY)
        rep = await svc.archiver.archive()
        assert rep.chunks == len(man.chunks) and not hot_ids(svc)
        got += [bytes(p) async for p in stream]
        assert b"".join(got) == data
    finally:
        await svc.close()


@pytest.mark.parametrize("label", ["archive.copied", "archive.verified", "archive.flipped", "archive.deleted:2"])
async def test_crash_at_each_archive_step_leaves_a_verified_store(tmp_path: Path, label: str) -> None:
    data_dir = tmp_path / "data"
    svc = await open_node(data_dir, past_clock(90))
    contents = [weights(10), weights(11)]
    try:
        for i, c in enumerate(contents):
            await add_revision(svc, "org/m", sha(i), {"w.safetensors": c})
    finally:
        await svc.close()
    every = chunk_ids(*contents)
    spec = label if ":" in label else f"{label}:1"
    crashed = run_cli(data_dir, "archive", "--older-than", "1d", crash=spec)
    assert crashed.returncode == -9, crashed.stderr
    assert run_cli(data_dir, "verify").returncode == 0
    svc = await open_node(data_dir, past_clock(0))
    try:
        assert every <= hot_ids(svc) | pack_ids(svc)  # never both copies gone
    finally:
        await svc.close()
    done = run_cli(data_dir, "archive", "--older-than", "1d")
    assert done.returncode == 0, done.stderr
    assert run_cli(data_dir, "verify").returncode == 0
    svc = await open_node(data_dir, past_clock(0))
    try:
        assert not hot_ids(svc) & every and pack_ids(svc) >= every
        for c in contents:
            assert await read_file(svc, c) == c
    finally:
        await svc.close()
    gc = run_cli(data_dir, "gc", env={"MIRROR_LIFECYCLE_GC_GRACE": "0s"})
    assert gc.returncode == 0, gc.stderr
    assert run_cli(data_dir, "verify").returncode == 0


async def test_crash_during_thaw(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    clock = past_clock(90)
    svc = await open_node(data_dir, clock)
    data = weights(12)
    try:
        await add_revision(svc, "org/m", sha(1), {"w.safetensors": data})
        clock.advance(60 * DAY)
        await svc.archiver.archive(older_than=DAY)
    finally:
        await svc.close()
    crashed = run_cli(data_dir, "thaw", f"org/m@{sha(1)}", crash="thaw.copied:1")
    assert crashed.returncode == -9, crashed.stderr
    assert run_cli(data_dir, "verify").returncode == 0
    done = run_cli(data_dir, "thaw", f"org/m@{sha(1)[:10]}")
    assert done.returncode == 0, done.stderr
    svc = await open_node(data_dir, past_clock(0))
    try:
        assert hot_ids(svc) >= chunk_ids(data) and await read_file(svc, data) == data
    finally:
        await svc.close()
    assert run_cli(data_dir, "verify").returncode == 0


def test_end_to_end_archive_under_a_running_daemon(tmp_path: Path) -> None:
    """Real daemon + fake Hub + huggingface_hub: a file cached by the daemon is archived
    by `mirror archive` in another process while the daemon runs, and is then served
    byte-exact (whole, and by Range) with the upstream down; `mirror thaw` brings it back."""
    import time as _time

    from tests.hubenv import MirrorDaemon  # sets the client environment first
    from huggingface_hub import hf_hub_download
    from tests.fakehub import FakeHub

    data = weights(20, mib=6)
    with FakeHub.running() as hub:
        commit = hub.commit("org/model", {"config.json": b"{}", "model.safetensors": data})
        data_dir = tmp_path / "data"
        with MirrorDaemon(data_dir, hub.url, lifecycle={"keep_revisions": 0, "gc_grace": "0s"}) as mirror:
            path = hf_hub_download("org/model", "model.safetensors", revision=commit, cache_dir=tmp_path / "c1", endpoint=mirror.url)
            assert Path(path).read_bytes() == data
            deadline = _time.monotonic() + 20
            while not _files(data_dir / "chunks") or any((data_dir / "spool").iterdir()):
                assert _time.monotonic() < deadline, "the fill was not ingested"
                _time.sleep(0.1)
            _time.sleep(0.3)
            cfg = ["--config", str(mirror.config_path)]
            done = run_cli(data_dir, "archive", "--older-than", "0s", *cfg)
            assert done.returncode == 0, done.stderr
            assert "archived 1 revisions" in done.stdout and "saved" in done.stdout
            assert not _files(data_dir / "chunks")
            hub.down()
            path = hf_hub_download("org/model", "model.safetensors", revision=commit, cache_dir=tmp_path / "c2", endpoint=mirror.url)
            assert Path(path).read_bytes() == data
            status, _h, body = mirror.get(f"/org/model/resolve/{commit}/model.safetensors", {"Range": "bytes=1000-2500000"})
            assert status == 206 and body == data[1000:2500001]
            hub.up()
            thawed = run_cli(data_dir, "thaw", f"org/model@{commit}", *cfg)
            assert thawed.returncode == 0, thawed.stderr
            assert _files(data_dir / "chunks")
            status, _h, body = mirror.get(f"/org/model/resolve/{commit}/model.safetensors")
            assert status == 200 and body == data
        assert run_cli(data_dir, "verify", *cfg).returncode == 0


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]
