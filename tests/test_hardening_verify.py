"""`mirror verify` beside a running daemon (issue 14, defect 1): while the daemon ingests,
verify and verify --repair report nothing and remove nothing; real damage (a flipped
byte, a deleted chunk file) is still found and repaired; a read-only or full disk ends
in one line, not a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.hubenv import MiB, rand, raw, sha256, start_mirror  # isort: skip

from tests.clihelp import clean_env
from tests.daemon import MirrorDaemon
from tests.fakehub import FakeHub

from mirror.store.codec import HEADER_SIZE


def mirror_cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mirror", *argv], capture_output=True, text=True,
                          env=clean_env(), timeout=timeout)


def verify_json(config: Path, *extra: str) -> tuple[int, dict, str]:
    proc = mirror_cli("verify", "--config", str(config), "--json", *extra)
    try:
        return proc.returncode, json.loads(proc.stdout), proc.stderr
    except json.JSONDecodeError:
        raise AssertionError(f"verify printed no JSON (exit {proc.returncode}): {proc.stdout!r} {proc.stderr!r}") from None


def manifest_count(config: Path) -> int:
    proc = mirror_cli("stats", "--config", str(config), "--json")
    assert proc.returncode == 0, proc.stderr
    return int(json.loads(proc.stdout)["files"])


def wait_stored(config: Path, n: int) -> None:
    """Wait until `n` contents are stored: a fill is ingested just after its last byte is
    served. Bounded at 120 s, far beyond the second or so it takes, for a loaded machine."""
    deadline = time.monotonic() + 120
    while manifest_count(config) < n:
        assert time.monotonic() < deadline, "the daemon did not store the files"
        time.sleep(0.2)


def test_verify_and_repair_during_continuous_ingest_find_and_remove_nothing(hub: FakeHub, tmp_path: Path) -> None:
    # Files stored before (so that each verify has chunks to re-hash for a while) and
    # files downloaded while verify runs (each one an ingest: chunks, rows, manifest).
    before = {f"before/{i}.bin": rand(8 * MiB + i, 100 + i) for i in range(6)}
    during = {f"during/{i}.bin": rand(MiB // 4 + 7 * i, 200 + i) for i in range(40)}
    hub.commit("org/m", {**before, **during})
    m = start_mirror(tmp_path, hub)
    try:
        for path, data in before.items():
            assert raw(f"{m.url}/org/m/resolve/main/{path}")[2] == data
        wait_stored(m.config_path, len(before))
        hub.bandwidth = MiB  # per response: the downloads span several verify runs
        done = threading.Event()
        got: dict[str, bytes] = {}

        def download(path: str) -> None:
            got[path] = raw(f"{m.url}/org/m/resolve/main/{path}")[2]

        def clients() -> None:
            try:
                with ThreadPoolExecutor(2) as pool:
                    list(pool.map(download, sorted(during)))
            finally:
                done.set()

        feeder = threading.Thread(target=clients)
        feeder.start()
        runs: list[tuple[str, int, dict, str]] = []
        # Bounded: at most 40 runs; the downloads end on their own well before that.
        while len(runs) < 40 and (not done.is_set() or len(runs) < 4):
            extra = ("--repair",) if len(runs) % 2 else ()
            code, rep, err = verify_json(m.config_path, *extra)
            runs.append((" ".join(extra) or "verify", code, rep, err))
        feeder.join(300)
        assert done.is_set()
        assert all(got[p] == d for p, d in during.items())
        wait_stored(m.config_path, len(before) + len(during))
        for mode, code, rep, err in runs:
            assert code == 0 and rep["ok"], (mode, rep, err)
            assert rep["missing_chunks"] == [] and rep["bad_chunks"] == [] and rep["dropped_manifests"] == 0, (mode, rep)
            assert rep["quarantined"] == 0
        assert sum(1 for _m, _c, rep, _e in runs if rep["manifests_checked"] < len(before) + len(during)) >= 1, \
            "no verify run overlapped the downloads"
        assert not any((tmp_path / "data" / "quarantine").iterdir())

        # Nothing was dropped: every file is still served from the store, no upstream byte.
        assert manifest_count(m.config_path) == len(before) + len(during)
        hub.reset_counters()
        for path, data in {**before, **during}.items():
            assert raw(f"{m.url}/org/m/resolve/main/{path}")[2] == data
        assert hub.bytes_sent == 0
    finally:
        m.stop()


def _chunk_file(data_dir: Path, cid: str) -> Path:
    return data_dir / "chunks" / cid[:2] / cid[2:4] / cid


def _chunks_of(config: Path, identity: str) -> list[str]:
    code = (
        "import asyncio, sys\n"
        "from mirror import config as c\n"
        "from mirror.node import open_node\n"
        "async def main():\n"
        "    svc = await open_node(c.load(sys.argv[1]), recover_temps=False)\n"
        "    try:\n"
        "        man = await svc.catalog.content.get_manifest(sys.argv[2])\n"
        "        print(' '.join(ch.chunk_id for ch in man.chunks))\n"
        "    finally:\n"
        "        await svc.close()\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(config), identity], capture_output=True, text=True,
                          env=clean_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_real_damage_is_still_found_and_repaired(hub: FakeHub, tmp_path: Path) -> None:
    files = {"rot.bin": rand(3 * MiB, 1), "lost.bin": rand(3 * MiB + 1, 2), "good.bin": rand(2 * MiB, 3)}
    hub.commit("org/m", files)
    m = start_mirror(tmp_path, hub)
    try:
        for path, data in files.items():
            assert raw(f"{m.url}/org/m/resolve/main/{path}")[2] == data
        wait_stored(m.config_path, len(files))
    finally:
        m.stop()
    data_dir = tmp_path / "data"
    rotten = _chunks_of(m.config_path, "sha256:" + sha256(files["rot.bin"]))[1]
    lost = _chunks_of(m.config_path, "sha256:" + sha256(files["lost.bin"]))[0]
    frame = bytearray(_chunk_file(data_dir, rotten).read_bytes())
    frame[HEADER_SIZE + 1234] ^= 0x01
    _chunk_file(data_dir, rotten).write_bytes(bytes(frame))
    _chunk_file(data_dir, lost).unlink()

    m = MirrorDaemon(data_dir, hub.url).start()  # damage found while a daemon runs beside
    try:
        code, rep, _ = verify_json(m.config_path)
        assert code == 1 and not rep["ok"]
        assert rep["bad_chunks"] == [rotten] and rep["missing_chunks"] == [lost]
        assert _chunk_file(data_dir, rotten).exists()  # reporting repairs nothing

        code, rep, _ = verify_json(m.config_path, "--repair")
        assert code == 1 and rep["quarantined"] == 1 and rep["dropped_manifests"] == 2
        assert (data_dir / "quarantine" / rotten).exists() and not _chunk_file(data_dir, rotten).exists()
        code, rep, _ = verify_json(m.config_path)
        assert code == 0 and rep["ok"] and rep["manifests_checked"] == 1
    finally:
        m.stop()

    m = MirrorDaemon(data_dir, hub.url).start()
    try:
        hub.reset_counters()
        for path, data in files.items():
            assert raw(f"{m.url}/org/m/resolve/main/{path}")[2] == data
        # The two damaged files came again from upstream; the good one did not.
        assert hub.bytes_sent_for(sha256(files["good.bin"])) == 0
        assert hub.bytes_sent_for(sha256(files["rot.bin"])) == len(files["rot.bin"])
        assert hub.bytes_sent_for(sha256(files["lost.bin"])) == len(files["lost.bin"])
        wait_stored(m.config_path, len(files))
    finally:
        m.stop()
    code, rep, _ = verify_json(m.config_path)
    assert code == 0 and rep["ok"] and rep["manifests_checked"] == 3


# --- a read-only or full disk ----------------------------------------------------------------


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _one_line_or_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    if proc.returncode != 0:
        # Besides the note of which data dir the command uses, one line says why.
        lines = [x for x in proc.stderr.strip().splitlines() if not x.startswith("mirror: data dir ")]
        assert len(lines) == 1 and lines[0].startswith("mirror: "), proc.stderr


def test_verify_on_a_read_only_or_full_disk_ends_in_one_line(hub: FakeHub, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    _mount_tmpfs(mnt, "24m")
    try:
        files = {"a.bin": rand(2 * MiB, 4), "b.bin": rand(MiB + 5, 5)}
        hub.commit("org/m", files)
        m = MirrorDaemon(mnt / "data", hub.url, store={"min_free": "1M"}).start()  # a 24 MiB volume
        try:
            for path, data in files.items():
                assert raw(f"{m.url}/org/m/resolve/main/{path}")[2] == data
            wait_stored(m.config_path, len(files))
        finally:
            m.stop()

        # Full: a filler takes every free byte.
        with open(mnt / "filler", "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * (256 << 10))
                    fh.flush()
            except OSError:
                pass
        for extra in ((), ("--repair",)):
            proc = mirror_cli("verify", "--config", str(m.config_path), *extra)
            _one_line_or_ok(proc)
        (mnt / "filler").unlink()

        # Read-only.
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        for extra in ((), ("--repair",)):
            proc = mirror_cli("verify", "--config", str(m.config_path), *extra)
            _one_line_or_ok(proc)
            assert proc.returncode != 0 or proc.stdout.strip().endswith("ok")
    finally:
        _umount(mnt)
