"""`mirror sync --from URL`: a replica copies a source node's revisions by its changelog.

The source is a real daemon (it trusts the replica's key); the replica is the CLI on its
own data directory whose config trusts the source's key (`[peers] trust`). After a sync
the replica serves the files with the fake Hub down, and the Hub sent it nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.hubenv import MiB, sha256  # isort: skip
from huggingface_hub import hf_hub_download

from mirror.flock import FileLock
from mirror.store.layout import open_layout
from tests.clihelp import clean_env, run_cli, run_json
from tests.conftest import bf16_like, fine_tune, random_bytes
from tests.daemon import MirrorDaemon
from tests.peerenv import node_key


class Pair:
    """A source daemon and a replica data dir (its config written, daemon not started)."""

    def __init__(self, tmp: Path, hub, *, trust_source: bool = True, source_trusts: bool = True) -> None:
        self.tmp = tmp
        src_key, rep_key = node_key(tmp / "src"), node_key(tmp / "rep")
        self.source = MirrorDaemon(tmp / "src", hub.url, peers={"trust": [rep_key] if source_trusts else []})
        # batch 4: a few-MiB file already takes several chunk batches.
        self.replica = MirrorDaemon(tmp / "rep", hub.url, peers={"trust": [src_key] if trust_source else [], "batch": 4})
        self.src_key, self.rep_key = src_key, rep_key
        self.source.start()

    def pull_on_source(self, capsys, repo: str) -> None:
        code, out, err = run_cli(capsys, "pull", repo, "--revision", "main", "--config", str(self.source.config_path))
        assert code == 0, (out, err)

    def sync(self, capsys, *extra: str) -> tuple[int, dict]:
        return run_json(capsys, "sync", "--from", self.source.url, "--config", str(self.replica.config_path), *extra)

    def stop(self) -> None:
        for d in (self.source, self.replica):
            if d.proc is not None and d.proc.poll() is None:
                d.stop()


def _download(m: MirrorDaemon, repo: str, path: str, cache: Path) -> bytes:
    return Path(hf_hub_download(repo, path, endpoint=m.url, cache_dir=cache)).read_bytes()


def test_sync_from_copies_everything_and_replica_serves_offline(hub, tmp_path, capsys):
    weights = bf16_like(3 * MiB)  # 6 MiB: several chunks, several batches
    cfg = b'{"hidden": 8}'
    hub.commit("org/m", {"model.safetensors": weights, "config.json": cfg})
    pair = Pair(tmp_path, hub)
    try:
        pair.pull_on_source(capsys, "org/m")
        hub.reset_counters()
        code, rep = pair.sync(capsys)
        assert code == 0, rep
        assert rep["ok"] and rep["source_key"] == pair.src_key
        assert rep["revisions"] == 1 and rep["refs"] >= 1 and rep["files"] == 2
        assert rep["chunks_fetched"] >= 3 and rep["bytes_fetched"] > 0 and rep["serial"] > 0
        assert hub.bytes_sent_for(sha256(weights)) == 0 and hub.bytes_sent == 0

        code, ver = run_json(capsys, "verify", "--config", str(pair.replica.config_path))
        assert code == 0, ver

        hub.down()
        pair.replica.start()
        got = _download(pair.replica, "org/m", "model.safetensors", tmp_path / "c1")
        assert got == weights
        assert _download(pair.replica, "org/m", "config.json", tmp_path / "c1") == cfg
        assert hub.bytes_sent_for(sha256(weights)) == 0
    finally:
        hub.up()
        pair.stop()


def test_second_run_is_incremental(hub, tmp_path, capsys):
    weights = bf16_like(3 * MiB)
    hub.commit("org/m", {"model.safetensors": weights, "config.json": b"{}"})
    pair = Pair(tmp_path, hub)
    try:
        pair.pull_on_source(capsys, "org/m")
        code, first = pair.sync(capsys)
        assert code == 0 and first["files"] == 2, first

        code, again = pair.sync(capsys)
        assert code == 0, again
        assert again["serial_from"] == first["serial"] == again["serial"]
        assert again["revisions"] == 0 and again["files"] == 0 and again["chunks_fetched"] == 0 and again["bytes_fetched"] == 0

        tuned, _ = fine_tune(weights, share=0.1, seed=5)  # most chunks shared with v1
        hub.commit("org/m", {"model.safetensors": tuned})
        pair.pull_on_source(capsys, "org/m")
        code, third = pair.sync(capsys)
        assert code == 0, third
        assert third["revisions"] == 1 and third["refs"] >= 1
        assert third["files"] == 1 and third["files_present"] == 1  # config.json did not change
        assert third["chunks_present"] > 0 and 0 < third["bytes_fetched"] < len(tuned)

        hub.down()
        pair.replica.start()
        assert _download(pair.replica, "org/m", "model.safetensors", tmp_path / "c") == tuned
    finally:
        hub.up()
        pair.stop()


def test_file_the_source_stores_later_comes_with_its_manifest_change(hub, tmp_path, capsys):
    weights = random_bytes(2 * MiB, seed=4)
    hub.commit("org/m", {"model.bin": weights, "config.json": b"{}"})
    pair = Pair(tmp_path, hub)
    try:
        # The source lists the commit but stores only config.json.
        code, out, err = run_cli(capsys, "pull", "org/m", "--revision", "main", "--include", "config.json",
                                 "--config", str(pair.source.config_path))
        assert code == 0, (out, err)
        code, first = pair.sync(capsys)
        assert code == 0, first
        assert first["revisions"] == 1 and first["files"] == 1 and first["files_absent"] == 1

        pair.pull_on_source(capsys, "org/m")  # now the source stores model.bin too
        code, second = pair.sync(capsys)
        assert code == 0, second
        assert second["files"] == 1 and second["bytes_fetched"] > 0 and second["files_absent"] == 0

        hub.down()
        pair.replica.start()
        assert _download(pair.replica, "org/m", "model.bin", tmp_path / "c") == weights
    finally:
        hub.up()
        pair.stop()


def test_a_bad_chunk_from_the_source_is_refused_and_nothing_is_applied(hub, tmp_path, capsys):
    hub.commit("org/m", {"model.bin": random_bytes(3 * MiB, seed=6)})
    pair = Pair(tmp_path, hub)
    try:
        pair.pull_on_source(capsys, "org/m")
        # Rot one stored chunk on the source's disk (the peer API sends frames as stored).
        victim = max((p for p in (tmp_path / "src" / "chunks").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        frame = bytearray(victim.read_bytes())
        frame[len(frame) // 2] ^= 0xFF
        victim.write_bytes(bytes(frame))

        code, rep = pair.sync(capsys)
        assert code == 1 and not rep["ok"]
        assert any("model.bin" in f and victim.name[:16] in f for f in rep["failures"]), rep["failures"]
        assert rep["files"] == 0 and rep["revisions"] == 0 and rep["serial"] == 0
        code, repos = run_json(capsys, "ls", "--config", str(pair.replica.config_path))
        assert code == 0 and repos == []  # nothing of the revision is listed
        code, ver = run_json(capsys, "verify", "--config", str(pair.replica.config_path))
        assert code == 0, ver
    finally:
        pair.stop()


def test_untrusted_source_or_replica_is_refused(hub, tmp_path, capsys):
    hub.commit("org/m", {"config.json": b"{}"})
    pair = Pair(tmp_path, hub, trust_source=False)
    try:
        pair.pull_on_source(capsys, "org/m")
        code, _out, err = run_cli(capsys, "sync", "--from", pair.source.url, "--config", str(pair.replica.config_path))
        assert code == 1
        assert "does not trust" in err and f"mirror keys trust {pair.src_key}" in err
        assert len(err.strip().splitlines()[-1]) < 400 and "Traceback" not in err
        code, repos = run_json(capsys, "ls", "--config", str(pair.replica.config_path))
        assert code == 0 and repos == []
    finally:
        pair.stop()

    other = tmp_path / "other"
    other.mkdir()
    pair = Pair(other, hub, source_trusts=False)
    try:
        code, _out, err = run_cli(capsys, "sync", "--from", pair.source.url, "--config", str(pair.replica.config_path))
        assert code == 1 and "refused this node" in err and f"mirror keys trust {pair.rep_key}" in err
    finally:
        pair.stop()


def test_bad_url_lock_and_watch_list(hub, tmp_path, capsys):
    hub.commit("org/a", {"a.bin": random_bytes(300_000, seed=1)})
    hub.commit("org/b", {"b.bin": random_bytes(300_000, seed=2)})
    pair = Pair(tmp_path, hub)
    cfg = str(pair.replica.config_path)
    try:
        code, _out, err = run_cli(capsys, "sync", "--from", "ftp://x", "--config", cfg)
        assert code == 2 and "--from" in err

        fd = FileLock(open_layout(tmp_path / "rep").lock_path("sync"), "sync is already running").acquire()
        try:
            code, _out, err = run_cli(capsys, "sync", "--from", pair.source.url, "--config", cfg)
            assert code == 0 and "already running" in err
        finally:
            os.close(fd)

        pair.pull_on_source(capsys, "org/a")
        pair.pull_on_source(capsys, "org/b")
        code, rep = pair.sync(capsys, "--repo", "org/a")
        assert code == 0, rep
        assert rep["revisions"] == 1 and rep["files"] == 1
        code, repos = run_json(capsys, "ls", "--config", cfg)
        assert [r["repo"] for r in repos] == ["org/a"] and repos[0]["refs"]
        code, out, err = run_cli(capsys, "sync", "--from", pair.source.url + "/", "--repo", "org/a", "--config", cfg)
        assert code == 0 and f"sync --from {pair.source.url}: 0 revisions" in out and "0 files copied" in out, (out, err)
    finally:
        pair.stop()


def test_killed_run_resumes_and_verifies_clean(hub, tmp_path, capsys):
    files = {f"shard-{i}.bin": random_bytes(400_000 + i, seed=10 + i) for i in range(4)}
    hub.commit("org/m", files)
    pair = Pair(tmp_path, hub)
    try:
        pair.pull_on_source(capsys, "org/m")
        env = clean_env(MIRROR_CRASHPOINT="db.manifest_row:2")
        proc = subprocess.run([sys.executable, "-m", "mirror", "sync", "--from", pair.source.url, "--config",
                               str(pair.replica.config_path), "--json"], check=False, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == -9, (proc.returncode, proc.stderr[-2000:])

        code, rep = pair.sync(capsys)
        assert code == 0, rep
        assert rep["serial_from"] == 0  # the killed run applied nothing
        assert rep["files_present"] == 2 and rep["files"] == 2 and rep["revisions"] == 1

        code, ver = run_json(capsys, "verify", "--config", str(pair.replica.config_path))
        assert code == 0 and ver.get("ok", True), ver
        hub.down()
        pair.replica.start()
        for path, data in files.items():
            assert _download(pair.replica, "org/m", path, tmp_path / "c") == data
    finally:
        hub.up()
        pair.stop()
