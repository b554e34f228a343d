"""`mirror import-hf-cache` on a cache written by the real huggingface_hub client."""

from __future__ import annotations

import hashlib

import pytest

from tests.clihelp import run_json, write_config
from tests.conftest import MiB, random_bytes
from tests.fakehub import FakeHub


def test_import_hf_cache_then_pull_transfers_only_what_was_bad(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    huggingface_hub = pytest.importorskip("huggingface_hub")
    weights = random_bytes(MiB, seed=1)
    other = random_bytes(300_000, seed=2)
    cache = tmp_path / "hf"
    with FakeHub.running() as hub:
        sha = hub.commit("org/a", {"config.json": b'{"x": 1}', "model.safetensors": weights, "extra.bin": other})
        hub.tag("org/a", "v1")
        huggingface_hub.snapshot_download("org/a", cache_dir=str(cache), endpoint=hub.url)
        huggingface_hub.hf_hub_download("org/a", "config.json", revision="v1", cache_dir=str(cache), endpoint=hub.url)
        blobs = cache / "models--org--a" / "blobs"
        bad = blobs / hashlib.sha256(other).hexdigest()
        assert bad.exists()
        bad.write_bytes(b"\0" + other[1:])  # bit rot
        (blobs / ("ab" * 32 + ".incomplete")).write_bytes(b"half")
        assert (cache / "models--org--a" / "refs" / "main").read_text().strip() == sha

        cfg = write_config(tmp_path / "m.toml", tmp_path / "data", hub.url)
        code, rep = run_json(capsys, "import-hf-cache", str(cache), "--config", str(cfg))
        assert code == 1  # something was skipped
        assert rep["repos"] == ["org/a"] and rep["blobs_imported"] == 2 and rep["refs"] == 2
        skipped = "\n".join(rep["skipped"])
        assert "incomplete" in skipped and bad.name in skipped and "hash mismatch" in skipped

        code, again = run_json(capsys, "import-hf-cache", str(cache), "--config", str(cfg))
        assert again["blobs_imported"] == 0 and again["blobs_already_stored"] == 2

        hub.reset_counters()
        code, pulled = run_json(capsys, "pull", "org/a", "--config", str(cfg))
        assert code == 0 and pulled["files_fetched"] == 1 and pulled["bytes_fetched"] == len(other)
        assert hub.bytes_sent == len(other)  # the imported contents cost no transfer
