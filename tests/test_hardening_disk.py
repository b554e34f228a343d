"""A full data volume degrades the mirror instead of breaking clients (issue 14, defects
2 and 16). The data directory lives on a small tmpfs the test mounts (root only; the
reason is printed when it cannot), filled up by a file the test writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hubenv import MiB, rand, raw, start_mirror  # isort: skip

from huggingface_hub import hf_hub_download

from tests.fakehub import FakeHub


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'mount failed'}); needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill_up(mnt: Path, leave: int) -> Path:
    """Write filler files so that about `leave` bytes stay free on the volume, then wait
    out the daemon's space measurement (taken at most once a second). Space a file just
    deleted by the daemon may come back a moment later (its pages stay while still mapped
    or open), so the free space is checked again after the wait and topped up (3 rounds)."""
    filler = mnt / "filler-0"
    for _ in range(3):
        st = os.statvfs(mnt)
        free = st.f_bavail * st.f_frsize
        filler = mnt / f"filler-{len(list(mnt.glob('filler-*')))}"
        with open(filler, "wb") as fh:
            chunk = b"\0" * MiB
            todo = max(0, free - leave)
            while todo > 0:
                n = min(len(chunk), todo)
                try:
                    fh.write(chunk[:n])
                    fh.flush()
                except OSError:
                    break
                todo -= n
        time.sleep(1.2)
        st = os.statvfs(mnt)
        if st.f_bavail * st.f_frsize <= leave + MiB:
            break
    return filler


def cli(m, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-m", "mirror", *args, "--config", str(m.config_path)], capture_output=True, text=True, timeout=120)


def no_tracebacks(lines: list[str]) -> None:
    bad = [line for line in lines if "Traceback" in line]
    assert not bad, "\n".join(lines[-40:])


def test_short_of_space_a_cold_file_streams_uncached_and_verified(hub: FakeHub, tmp_path: Path, small_fs: Path) -> None:
    data = rand(24 * MiB + 5, 41)
    small = b'{"model_type": "gpt2"}'
    hub.commit("org/m", {"model.safetensors": data, "config.json": small})
    m = start_mirror(tmp_path, hub, store={"data_dir": str(small_fs / "data"), "min_free": "8M"})
    m.data_dir = small_fs / "data"
    try:
        fill_up(small_fs, 20 * MiB)  # room for neither the spool nor the chunks of 24 MiB
        url = m.url + "/org/m/resolve/main/model.safetensors"
        status, h, body = raw(url)
        assert status == 200 and body == data
        assert h.get("X-Mirror-Cache", "").startswith("bypass")
        assert sum("streaming" in line and "uncached" in line for line in m.log) == 1
        # A Range of it too, verified the same way.
        status, h, body = raw(url, headers={"Range": "bytes=1000-2999"})
        assert status == 206 and body == data[1000:3000]
        # The real client downloads it whole.
        path = hf_hub_download("org/m", "model.safetensors", cache_dir=str(tmp_path / "hf"), endpoint=m.url)
        assert Path(path).read_bytes() == data
        # A small file still fits and is cached as usual.
        status, h, body = raw(m.url + "/org/m/resolve/main/config.json")
        assert status == 200 and body == small and "X-Mirror-Cache" not in h
        stats = cli(m, "stats", "--json")
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["files"] <= 1  # the big file was not kept
        assert not list((small_fs / "data" / "spool").glob("*.part"))
        no_tracebacks(m.log)
    finally:
        m.stop()


def test_a_full_disk_after_caching_keeps_serving_and_restarts(hub: FakeHub, tmp_path: Path, small_fs: Path) -> None:
    data = rand(6 * MiB + 1, 42)
    other = rand(10 * MiB + 3, 43)
    hub.commit("org/m", {"model.safetensors": data, "other.bin": other})
    m = start_mirror(tmp_path, hub, store={"data_dir": str(small_fs / "data"), "min_free": "1M"}, cache={"ref_ttl": 0.0})
    m.data_dir = small_fs / "data"
    try:
        url = m.url + "/org/m/resolve/main/model.safetensors"
        assert raw(url)[2] == data  # cached while there was room
        fill_up(small_fs, 0)  # now the volume is completely full
        # Cached by branch: the ref re-check cannot write SQLite, the answer is still 200.
        status, _h, body = raw(url)
        assert status == 200 and body == data
        # A cold file streams uncached (no spool can be written at all).
        status, h, body = raw(m.url + "/org/m/resolve/main/other.bin")
        assert status == 200 and body == other and h.get("X-Mirror-Cache", "").startswith("bypass"), (status, body[:300], m.log[-15:])
        # Every CLI command fails with one line or works; never a traceback.
        for args in (("stats",), ("ls",), ("verify",), ("gc", "--dry-run")):
            out = cli(m, *args)
            assert "Traceback" not in out.stderr, (args, out.stderr)
            assert out.returncode == 0 or len(out.stderr.strip().splitlines()) == 1, (args, out.stderr)
        # A restart on the full disk comes up and serves.
        assert m.stop() == 0
        m.start()
        url = m.url + "/org/m/resolve/main/model.safetensors"
        try:
            status, _h, body = raw(url)
        except OSError:
            raise AssertionError("\n".join(m.log[-30:])) from None
        assert status == 200 and body == data
        no_tracebacks(m.log)
    finally:
        m.stop()


def test_short_of_space_eviction_runs_and_caching_resumes(hub: FakeHub, tmp_path: Path, small_fs: Path) -> None:
    a = rand(30 * MiB + 1, 44)
    b = rand(12 * MiB + 3, 45)
    hub.commit("org/a", {"a.bin": a})
    hub.commit("org/b", {"b.bin": b})
    m = start_mirror(
        tmp_path, hub,
        store={"data_dir": str(small_fs / "data"), "min_free": "8M"},
        lifecycle={"high_watermark": "80%", "low_watermark": "50%", "gc_grace": "0s"},
    )
    m.data_dir = small_fs / "data"
    try:
        assert raw(m.url + "/org/a/resolve/main/a.bin")[2] == a  # cached
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until the ingest stored it (and dropped its spool)
            stats = cli(m, "stats", "--json")
            if stats.returncode == 0 and json.loads(stats.stdout)["files"] == 1 and not list((small_fs / "data" / "spool").iterdir()):
                break
            time.sleep(0.2)
        fill_up(small_fs, 12 * MiB)  # below what a 12 MiB fill needs above min_free
        st = os.statvfs(small_fs)
        assert st.f_bavail * st.f_frsize < 16 * MiB, "the volume did not fill up as the test needs"
        try:
            status, h, body = raw(m.url + "/org/b/resolve/main/b.bin")
        except Exception:
            raise AssertionError("\n".join(m.log[-30:])) from None
        assert status == 200 and body == b and h.get("X-Mirror-Cache", "").startswith("bypass"), "\n".join(m.log[-30:])
        # Eviction and GC ran by themselves (no lifecycle schedule is configured).
        deadline = time.monotonic() + 30
        while not any("space relief: evicted" in line for line in m.log) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert any("space relief: evicted" in line for line in m.log), "\n".join(m.log[-20:])
        # Caching resumes once the guard measures again (at most once a second); each
        # answer meanwhile is still the right file.
        deadline = time.monotonic() + 30
        while True:
            time.sleep(1.2)
            status, h, body = raw(m.url + "/org/b/resolve/main/b.bin")
            assert status == 200 and body == b
            if "X-Mirror-Cache" not in h or time.monotonic() > deadline:
                break
        assert "X-Mirror-Cache" not in h, "\n".join(m.log[-20:])  # cached again
        no_tracebacks(m.log)
    finally:
        m.stop()


async def test_a_spool_that_runs_out_of_space_never_claims_bytes_it_did_not_write(small_fs: Path) -> None:
    """The sink's offset after a failed write is what reached the disk, and the sink
    refuses more: a fill can never take a spool with a hole for a complete file."""
    import hashlib

    from mirror.errors import StorageError
    from mirror.resolve.origin import SpoolSink as Sink

    fill_up(small_fs, 3 * MiB)
    spool = small_fs / "spool.part"
    fd = os.open(spool, os.O_RDWR | os.O_CREAT, 0o644)
    written: list[int] = []
    try:
        sink = Sink(fd, hashlib.sha256(), 0, 8 * MiB, lambda off, piece: written.append(off + len(piece)))
        with pytest.raises(StorageError):
            for i in range(8):
                await sink.write(rand(MiB, 50 + i))
            await sink.drain()
        with pytest.raises(StorageError):
            await sink.drain()
            await sink.write(b"more")
        assert sink.broken is not None
        assert sink.offset == (written[-1] if written else 0) < 8 * MiB
        assert os.fstat(fd).st_size <= sink.offset + MiB  # nothing beyond the failed piece
    finally:
        os.close(fd)
