"""`mirror sync` and `mirror pull` against the fake Hub: only what changed moves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.clihelp import run_cli, run_json, spawn, write_config
from tests.conftest import MiB, bf16_like, fine_tune, random_bytes
from tests.fakehub import FakeHub


@pytest.fixture
def hub():
    with FakeHub.running() as h:
        yield h


def _stats(capsys, cfg):
    code, data = run_json(capsys, "stats", "--config", str(cfg))
    assert code == 0
    return data


def test_first_sync_then_nothing_new_then_one_changed_file(hub, tmp_path, capsys):
    weights = bf16_like(4 * MiB)  # 8 MiB, compressible, realistic
    hub.commit("org/a", {"config.json": b'{"a": 1}', "model.safetensors": weights, "README.md": b"# a"})
    hub.tag("org/a", "v1")
    cfg = write_config(tmp_path / "m.toml", tmp_path / "data", hub.url,
                       repos=[{"repo": "org/a", "revisions": ["main", "v1"]}])
    size = len(weights) + len(b'{"a": 1}') + len(b"# a")

    code, rep = run_json(capsys, "sync", "--config", str(cfg))
    assert code == 0, rep
    [r] = rep["repos"]
    assert r["files_fetched"] == 3 and r["bytes_fetched"] == size
    assert sorted(r["revisions_updated"]) == ["main", "v1"]
    assert hub.bytes_sent == size  # v1 == main: every content once

    hub.reset_counters()
    code, rep = run_json(capsys, "sync", "--config", str(cfg))
    assert code == 0 and rep["files_fetched"] == 0 and rep["repos"][0]["revisions_updated"] == []
    assert rep["bytes_reused"] == size
    assert hub.bytes_sent == 0
    before = _stats(capsys, cfg)

    tuned, _ = fine_tune(weights, share=0.1, seed=3)
    hub.commit("org/a", {"model.safetensors": tuned})
    hub.reset_counters()
    code, rep = run_json(capsys, "sync", "--config", str(cfg))
    assert code == 0, rep
    r = rep["repos"][0]
    assert r["revisions_updated"] == ["main"] and r["files_fetched"] == 1 and r["bytes_fetched"] == len(tuned)
    assert hub.bytes_sent == len(tuned)
    import hashlib
    assert hub.bytes_sent_for(hashlib.sha256(tuned).hexdigest()) == len(tuned)
    after = _stats(capsys, cfg)
    # Only the changed chunks are new: far less than the file.
    assert 0 < after["unique_raw_bytes"] - before["unique_raw_bytes"] < len(tuned) // 2

    # Human output and the dry run.
    hub.commit("org/a", {"extra.bin": random_bytes(100_000, seed=9)})
    code, out, _ = run_cli(capsys, "sync", "--config", str(cfg), "--dry-run")
    assert code == 0 and "would fetch 1 files" in out and "extra.bin" in out
    assert hub.count(path_contains="extra.bin") == 0


def test_globs_and_unknown_repo(hub, tmp_path, capsys):
    hub.commit("org/a", {"config.json": b"{}", "model.safetensors": random_bytes(MiB), "sub/x.txt": b"x"})
    hub.commit("org/ds", {"data/train.parquet": random_bytes(200_000, seed=2), "README.md": b"d"}, repo_type="dataset")
    cfg = write_config(tmp_path / "m.toml", tmp_path / "data", hub.url, repos=[
        {"repo": "org/a", "include": ["*.json", "sub/*"]},
        {"repo": "org/missing"},
        {"repo": "org/ds", "repo_type": "dataset", "exclude": ["*.md"]},
        {"repo": "org/a", "revisions": ["no-such-branch"]},
    ])
    code, rep = run_json(capsys, "sync", "--config", str(cfg))
    assert code == 1
    by = [(r["repo"], r["files_fetched"], len(r["errors"])) for r in rep["repos"]]
    assert by == [("org/a", 2, 0), ("org/missing", 0, 1), ("org/ds", 1, 0), ("org/a", 0, 1)]
    assert hub.count(path_contains="model.safetensors") == 0 and hub.count(path_contains="README.md") == 0
    code, out, err = run_cli(capsys, "sync", "--config", str(cfg))
    assert code == 1 and "FAILED" in err and "org/missing" in err and "Traceback" not in err


def test_pull_fetches_only_missing(hub, tmp_path, capsys):
    hub.commit("org/a", {"config.json": b"{}", "model.safetensors": random_bytes(2 * MiB)})
    cfg = write_config(tmp_path / "m.toml", tmp_path / "data", hub.url)
    code, rep = run_json(capsys, "pull", "org/a", "--config", str(cfg), "--include", "*.json")
    assert code == 0 and rep["files_fetched"] == 1
    code, rep = run_json(capsys, "pull", "org/a", "--config", str(cfg))
    assert code == 0 and rep["files_fetched"] == 1 and rep["bytes_reused"] == 2
    code, out, err = run_cli(capsys, "pull", "org/nope", "--config", str(cfg))
    assert code == 1 and "org/nope" in err
    code, out, err = run_cli(capsys, "sync", "--config", str(cfg))
    assert code == 2 and "watch list is empty" in err


def _wait_for(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_overlapping_runs_and_resume_after_kill(hub, tmp_path):
    big = random_bytes(6 * MiB, seed=5)
    hub.commit("org/a", {"model.safetensors": big, "config.json": b"{}"})
    data = tmp_path / "data"
    cfg = write_config(tmp_path / "m.toml", data, hub.url, repos=[{"repo": "org/a"}])
    hub.bandwidth = 2 * MiB
    first = spawn("sync", "--config", str(cfg), "--quiet")
    try:
        spool = data / "spool"
        _wait_for(lambda: any(p.stat().st_size > MiB for p in spool.glob("*.part")) if spool.exists() else False)
        second = spawn("sync", "--config", str(cfg), "--quiet")
        out, err = second.communicate(timeout=30)
        assert second.returncode == 0 and "already running" in err
        first.send_signal(signal.SIGKILL)  # killed mid-file
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate(timeout=10)
    [part] = list((data / "spool").glob("*.part"))
    have = part.stat().st_size
    assert 0 < have < len(big)
    hub.bandwidth = None
    hub.reset_counters()
    import hashlib
    sha = hashlib.sha256(big).hexdigest()
    waiter = spawn("sync", "--config", str(cfg), "--wait", "--json")
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert hub.bytes_sent_for(sha) == len(big) - have  # resumed from the spool's length
    assert not list((data / "spool").glob("*.part"))
    if os.environ.get("SHOW"):
        print(out)


def test_daemon_runs_the_sync_on_a_schedule(hub, tmp_path):
    from tests.daemon import MirrorDaemon

    payload = random_bytes(300_000, seed=4)
    hub.commit("org/a", {"config.json": b"{}", "weights.bin": payload})
    d = MirrorDaemon(tmp_path / "data", hub.url, sync={"interval": 0.3})
    d.config_path.write_text(d.config_path.read_text() + '[[sync.repos]]\nrepo = "org/a"\n')
    def scheduled_rounds() -> list[dict]:
        out = subprocess.run([sys.executable, "-m", "mirror", "audit", "--action", "sync.run", "--json", "--config",
                              str(d.config_path)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return [e for e in json.loads(out.stdout) if e["actor"] == "sync-schedule" and "org/a" in json.dumps(e)]

    with d:
        _wait_for(lambda: hub.bytes_sent >= len(payload) + 2)
        # Each scheduled round is audited like a `mirror sync` run (and so counted by
        # /metrics), once it is over: the first one may still be storing the file.
        _wait_for(lambda: bool(scheduled_rounds()), timeout=60.0)
        hub.reset_counters()
        status, _, body = d.get("/org/a/resolve/main/weights.bin")
        assert status == 200 and body == payload and hub.bytes_sent == 0
