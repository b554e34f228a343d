"""`mirror import-hf-cache` seeds a mirror that serves offline (issue 14, defect 11), and
Xet tree caches in an HF cache are detected and fixed (defect 8, the cache side).

The HF caches are written by the real huggingface_hub client from the fake Hub; the
mirror is the real daemon; its clients are huggingface_hub again, pointed at the mirror.
"""

from __future__ import annotations

import json
import time
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hubenv import MiB, rand, raw, sha256, start_mirror  # isort: skip

from huggingface_hub import HfApi, hf_hub_download, snapshot_download

from tests.clihelp import clean_env, run_cli, run_json, write_config
from tests.fakehub import FakeHub

FILES_A = {
    "config.json": b'{"model_type": "tiny"}',
    "model.safetensors": rand(2 * MiB + 3, 11),
    "sub/extra.bin": rand(300_000, 12),
    "README.md": b"# a\n",
}
FILES_B = {"config.json": b'{"b": 1}', "weights.bin": rand(MiB, 13), "tokenizer.json": b'{"t": 2}'}


def _hub_files(cache: Path, repo: str, endpoint: str, revision: str) -> dict[str, bytes]:
    out = {}
    for path in FILES_A if repo == "org/a" else FILES_B:
        p = hf_hub_download(repo, path, revision=revision, endpoint=endpoint, cache_dir=cache)
        out[path] = Path(p).read_bytes()
    return out


def test_imported_hf_cache_is_listed_and_served_offline(hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sha_a = hub.commit("org/a", FILES_A)
    hub.tag("org/a", "v1")
    sha_b = hub.commit("org/b", FILES_B)
    cache = tmp_path / "hf"
    snapshot_download("org/a", cache_dir=cache, endpoint=hub.url)  # complete: writes trees/<commit>.json
    hf_hub_download("org/a", "config.json", revision="v1", cache_dir=cache, endpoint=hub.url)
    hf_hub_download("org/b", "weights.bin", cache_dir=cache, endpoint=hub.url)  # partial: one file of three
    assert (cache / "models--org--a" / "trees" / f"{sha_a}.json").is_file()
    assert not (cache / "models--org--b" / "trees").exists()

    day_ago = os.stat(cache).st_mtime - 86400  # a cache filled yesterday: its refs are not fresh
    for ref in cache.glob("*/refs/**/*"):
        os.utime(ref, (day_ago, day_ago))
    cfg = write_config(tmp_path / "m.toml", tmp_path / "data", hub.url)
    code, rep = run_json(capsys, "import-hf-cache", str(cache), "--config", str(cfg))
    assert code == 0, rep
    assert rep["revisions"] == 2 and rep["refs"] == 3  # a: main, v1; b: main
    assert rep["partial_revisions"] == [f"org/b@{sha_b}"]

    code, repos = run_json(capsys, "ls", "--config", str(cfg))
    by_name = {r["repo"]: r for r in repos}
    assert by_name["org/a"]["logical_bytes"] == sum(len(v) for v in FILES_A.values())
    assert by_name["org/b"]["logical_bytes"] == len(FILES_B["weights.bin"])
    assert by_name["org/a"]["refs"] == {"main": sha_a, "v1": sha_a}
    code, out, _ = run_cli(capsys, "ls", "--config", str(cfg))
    assert "org/a (model)  logical 2.29 MiB" in out and "org/b (model)  logical 1.00 MiB" in out

    hub.down()  # air-gapped from here on
    m = start_mirror(tmp_path, hub)
    try:
        for rev in ("main", "v1", sha_a):
            assert _hub_files(tmp_path / f"client-{rev}", "org/a", m.url, rev) == FILES_A
        folder = snapshot_download("org/a", cache_dir=tmp_path / "client-snap", endpoint=m.url)
        assert {p: (Path(folder) / p).read_bytes() for p in FILES_A} == FILES_A
        api = HfApi(endpoint=m.url)
        for rev in ("main", "v1", sha_a):
            info = api.model_info("org/a", revision=rev, files_metadata=True)
            assert info.sha == sha_a
            assert {s.rfilename: s.size for s in info.siblings} == {p: len(d) for p, d in FILES_A.items()}
            tree = {f.path: f for f in api.list_repo_tree("org/a", revision=rev, recursive=True)}
            assert set(tree) == {*FILES_A, "sub"}
            lfs = tree["model.safetensors"].lfs
            assert lfs is not None and lfs.sha256 == sha256(FILES_A["model.safetensors"])
        # The partial snapshot: what it held is served, by branch and by commit.
        for rev in ("main", sha_b):
            p = hf_hub_download("org/b", "weights.bin", revision=rev, endpoint=m.url, cache_dir=tmp_path / f"cb-{rev}")
            assert Path(p).read_bytes() == FILES_B["weights.bin"]
        assert [f.path for f in api.list_repo_tree("org/b", revision="main")] == ["weights.bin"]

        # Upstream back: the partial listing gives way to upstream's full one, first by
        # commit sha (a file the snapshot lacks), then by branch. An outage is remembered
        # for a few seconds (fast failures meanwhile): ask until upstream answers again.
        hub.up()
        deadline = time.monotonic() + 20
        while True:
            status, _h, body = raw(f"{m.url}/org/b/resolve/{sha_b}/tokenizer.json")
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status == 200 and body == FILES_B["tokenizer.json"]
        status, h, body = raw(f"{m.url}/api/models/org/b/revision/main")
        assert status == 200 and "mirrorImport" not in json.loads(body) and "X-Mirror-Stale" not in h
        assert sorted(f.path for f in api.list_repo_tree("org/b", revision="main")) == sorted(FILES_B)
        p = hf_hub_download("org/b", "tokenizer.json", revision=sha_b, endpoint=m.url, cache_dir=tmp_path / "cb-up")
        assert Path(p).read_bytes() == FILES_B["tokenizer.json"]
    finally:
        m.stop()


# --- Xet tree caches (defect 8) ------------------------------------------------------------------


def _add_xet_hashes(tree_file: Path) -> None:
    """Give LFS entries a Xet hash, as huggingface_hub writes them after talking to huggingface.co."""
    data = json.loads(tree_file.read_text())
    assert data["format_version"] == 1
    for info in data["files"].values():
        if "lfs_sha256" in info:
            info["xet_hash"] = sha256(info["lfs_sha256"].encode())
    tree_file.write_text(json.dumps(data, indent=1))


def _client_download(cache: Path, endpoint: str, repo: str, path: str, revision: str) -> subprocess.CompletedProcess[str]:
    """huggingface_hub in its own process with Xet enabled (hf_xet installed), as a user has it."""
    code = ("import sys; from huggingface_hub import hf_hub_download\n"
            "print(hf_hub_download(sys.argv[1], sys.argv[2], revision=sys.argv[3]))\n")
    env = clean_env(HF_ENDPOINT=endpoint, HF_HUB_CACHE=str(cache), HF_HUB_DISABLE_TELEMETRY="1",
                    HF_HOME=str(cache.parent / "hf-home"), NO_PROXY="127.0.0.1")
    return subprocess.run([sys.executable, "-c", code, repo, path, revision], capture_output=True, text=True,
                          env=env, timeout=120)


def test_xet_tree_caches_are_reported_by_import_and_fixed_by_doctor(hub: FakeHub, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("hf_xet")
    sha = hub.commit("org/a", FILES_A)
    cache = tmp_path / "hf"
    # Only config.json is downloaded; the tree cache lists the whole commit.
    snapshot_download("org/a", cache_dir=cache, endpoint=hub.url, allow_patterns=["config.json"])
    tree_file = cache / "models--org--a" / "trees" / f"{sha}.json"
    _add_xet_hashes(tree_file)
    before = json.loads(tree_file.read_text())

    cfg = write_config(tmp_path / "m.toml", tmp_path / "data", hub.url)
    code, rep = run_json(capsys, "import-hf-cache", str(cache), "--config", str(cfg))
    assert rep["xet_tree_caches"] == [str(tree_file)] and rep["revisions"] == 1
    code, out, _ = run_cli(capsys, "import-hf-cache", str(cache), "--config", str(cfg))
    assert f"XET {tree_file}" in out and "mirror doctor --fix" in out

    code, rep = run_json(capsys, "doctor", str(cache))
    assert code == 1 and not rep["ok"]
    assert rep["xet_tree_caches"] == [{"file": str(tree_file), "xet_entries": 2, "fixed": False}]
    assert json.loads(tree_file.read_text()) == before  # checking changes nothing

    code, rep = run_json(capsys, "doctor", str(cache), "--fix")
    assert code == 0 and rep["ok"] and rep["xet_tree_caches"][0]["fixed"]
    after = json.loads(tree_file.read_text())
    assert not any("xet_hash" in info for info in after["files"].values())
    for name, info in before["files"].items():
        info.pop("xet_hash", None)
        assert after["files"][name] == info  # the rest of the listing is kept
    code, out, _ = run_cli(capsys, "doctor", str(cache))
    assert code == 0 and out.strip() == "ok"

    # The real client with hf_xet, on the fixed cache, downloads through the mirror.
    m = start_mirror(tmp_path, hub)
    try:
        proc = _client_download(cache, m.url, "org/a", "model.safetensors", sha)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert Path(proc.stdout.strip().splitlines()[-1]).read_bytes() == FILES_A["model.safetensors"]
        assert not [line for line in m.log if "xet-read-token" in line]
    finally:
        m.stop()


def test_doctor_on_a_missing_dir_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "mirror", "doctor", str(tmp_path / "nope")], capture_output=True,
                          text=True, env=clean_env(), timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not a directory" in proc.stderr
