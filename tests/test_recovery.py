"""Crash safety and repair: leftover temps are removed at start (only those of dead
writers), a failed ingest stores nothing, a process killed at any step of an ingest
leaves nothing visible that is not durable, and `mirror.verify` finds and repairs bit rot
(threat-model C1, C6, I2)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from mirror.config import Config
from mirror.errors import CorruptChunk, HashMismatch
from mirror.node import open_node
from mirror.store.codec import HEADER_SIZE
from tests.conftest import MiB, bf16_like, random_bytes, safetensors_bytes, sha256_identity, write


def temp_name(pid: int) -> str:
    """A temp file name as `DurableFS.stage` makes them: <id>.<pid>.<random>.tmp."""
    return f"{uuid.uuid4().hex * 2}.{pid}.{uuid.uuid4().hex[:12]}.tmp"


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def test_start_removes_temps_of_dead_writers_only(config: Config) -> None:
    svc = await open_node(config)
    tmp = svc.layout.tmp
    await svc.close()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = [tmp / temp_name(dead_pid()) for _ in range(2)]
        dead[0].write_bytes(b"\x00" * 1000)  # a truncated chunk frame
        dead[1].write_bytes(b"")
        stray = tmp / "ingest-unnamed.tmp"  # no pid in the name: nobody can own it
        stray.write_bytes(b"x")
        live = tmp / temp_name(alive.pid)
        live.write_bytes(b"being written")
        svc = await open_node(config)
        try:
            assert sorted(p.name for p in tmp.iterdir()) == [live.name]
        finally:
            await svc.close()
    finally:
        alive.kill()
        alive.wait()


async def test_hash_mismatch_stores_nothing(config: Config, tmp_path: Path) -> None:
    svc = await open_node(config)
    try:
        data = safetensors_bytes(bf16_like(3 * MiB), "BF16")
        path = write(tmp_path / "model.safetensors", data)
        wrong = sha256_identity(data + b"!")
        with pytest.raises(HashMismatch):
            await svc.ingestor.ingest_path(path, wrong)
        assert list(svc.store.iter_ids()) == []
        assert await svc.catalog.content.chunk_rows() == {}
        assert await svc.catalog.content.get_manifest(wrong) is None
        assert await svc.catalog.content.iter_manifests() == []
        assert list(svc.layout.tmp.iterdir()) == []
        assert [p for p in svc.layout.chunks.rglob("*") if p.is_file()] == []
        # The right identity then goes through.
        man = await svc.ingestor.ingest_path(path, sha256_identity(data))
        assert man.size == len(data) and len(list(svc.store.iter_ids())) == len({c.chunk_id for c in man.chunks})
    finally:
        await svc.close()


_INGEST_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from mirror import config
    from mirror.node import open_node

    async def main() -> None:
        svc = await open_node(config.load(env={}, overrides={"store": {"data_dir": sys.argv[1]}}))
        try:
            await svc.ingestor.ingest_path(Path(sys.argv[2]), sys.argv[3])
        finally:
            await svc.close()

    asyncio.run(main())
    """
)


@pytest.mark.parametrize(
    "crashpoint",
    ["chunk.fsynced:2", "ingest.staged:1", "chunk.renamed:2", "dir.fsynced:1", "db.chunk_row:1", "manifest.signed:1"],
)
async def test_kill_during_ingest_leaves_a_consistent_store(config: Config, tmp_path: Path, crashpoint: str) -> None:
    data = safetensors_bytes(bf16_like(2 * MiB, seed=4), "BF16")
    path = write(tmp_path / "model.safetensors", data)
    identity = sha256_identity(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
    env["MIRROR_CRASHPOINT"] = crashpoint
    child = subprocess.run(
        [sys.executable, "-c", _INGEST_CHILD, str(config.data_dir), str(path), identity],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert child.returncode == -9, child.stderr  # killed at the crash point

    svc = await open_node(config)
    try:
        assert list(svc.layout.tmp.iterdir()) == [], "start did not remove the killed writer's temps"
        assert await svc.catalog.content.get_manifest(identity) is None
        rows = await svc.catalog.content.chunk_rows()
        stored = set(svc.store.iter_ids())
        assert set(rows) <= stored, "a chunk row points at a chunk that is not stored"
        for cid in stored:
            svc.store.read(cid)  # every visible chunk is whole
        report = await svc.verifier.verify()
        assert report.ok and report.manifests_checked == 0
        # The same ingest then completes and reads back.
        man = await svc.ingestor.ingest_path(path, identity)
        got = b"".join([bytes(p) async for p in svc.reader.iter_range(man.chunks, 0, man.size)])
        assert got == data
        assert set(await svc.catalog.content.chunk_rows()) == {c.chunk_id for c in man.chunks}
    finally:
        await svc.close()


async def test_verify_finds_and_repairs_a_flipped_bit(config: Config, tmp_path: Path) -> None:
    svc = await open_node(config)
    try:
        good = safetensors_bytes(random_bytes(2 * MiB, seed=1), "U8")
        bad = safetensors_bytes(bf16_like(2 * MiB, seed=2), "BF16")
        good_man = await svc.ingestor.ingest_path(write(tmp_path / "good", good), sha256_identity(good))
        bad_man = await svc.ingestor.ingest_path(write(tmp_path / "bad", bad), sha256_identity(bad))
        victim = bad_man.chunks[1].chunk_id
        chunk_file = svc.layout.chunk_path(victim)
        frame = bytearray(chunk_file.read_bytes())
        frame[HEADER_SIZE + 1000] ^= 0x01
        chunk_file.write_bytes(bytes(frame))

        with pytest.raises(CorruptChunk):
            svc.store.read(victim)
        report = await svc.verifier.verify()
        assert not report.ok
        assert report.bad_chunks == [victim]
        assert report.chunks_checked == len(set(svc.store.iter_ids()))
        assert report.manifests_checked == 2 and report.quarantined == 0
        assert await svc.catalog.content.get_manifest(bad_man.identity) is not None  # no repair asked

        repaired = await svc.verifier.verify(repair=True)
        assert repaired.bad_chunks == [victim] and repaired.quarantined == 1 and repaired.dropped_manifests == 1
        assert not svc.store.has(victim) and svc.layout.quarantine_path(victim).exists()
        assert await svc.catalog.content.get_manifest(bad_man.identity) is None
        assert victim not in await svc.catalog.content.chunk_rows()
        assert await svc.catalog.content.get_manifest(good_man.identity) == good_man

        after = await svc.verifier.verify()
        assert after.ok and after.manifests_checked == 1
        # The dropped file can be ingested again from good bytes.
        again = await svc.ingestor.ingest_path(tmp_path / "bad", sha256_identity(bad))
        assert svc.store.has(victim) and again.chunks == bad_man.chunks
    finally:
        await svc.close()


async def test_verify_reports_a_missing_chunk(config: Config, tmp_path: Path) -> None:
    svc = await open_node(config)
    try:
        data = safetensors_bytes(bf16_like(MiB), "BF16")
        man = await svc.ingestor.ingest_path(write(tmp_path / "f", data), sha256_identity(data))
        gone = man.chunks[0].chunk_id
        svc.layout.chunk_path(gone).unlink()
        report = await svc.verifier.verify()
        assert report.missing_chunks == [gone] and not report.ok
        await svc.verifier.verify(repair=True)
        assert await svc.catalog.content.get_manifest(man.identity) is None
        assert (await svc.verifier.verify()).ok
    finally:
        await svc.close()
