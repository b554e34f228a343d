"""Issue 14, defect 8: a client whose own cache holds a Xet tree listing.

huggingface_hub (1.x/2.x with hf_xet installed) skips the HEAD when
`<cache>/models--org--m/trees/<commit>.json` names a `xet_hash` for the file, asks the
endpoint for `/api/models/org/m/xet-read-token/<commit>` and has no HTTP fallback. The
mirror does not speak Xet, so the download cannot succeed as is; the client's error must
say why and what to do, and both remedies it names must work. The real client runs in a
subprocess with Xet enabled (the test process disables Xet at import, see hubenv).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.hubenv import MiB, rand, start_mirror  # isort: skip

import pytest

from tests.fakehub import FakeHub

pytest.importorskip("hf_xet")


def _download(endpoint: str, cache: Path, sha: str, home: Path, *, disable_xet: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="127.0.0.1")
    if disable_xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    code = (
        "import sys; from huggingface_hub import hf_hub_download\n"
        f"print(hf_hub_download('org/m', 'model.safetensors', revision={sha!r}, endpoint={endpoint!r}, cache_dir={str(cache)!r}))"
    )
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_cached_xet_tree_listing_gets_an_actionable_error_and_both_remedies_work(hub: FakeHub, tmp_path: Path) -> None:
    data = rand(2 * MiB, 81)
    sha = hub.commit("org/m", {"model.safetensors": data, "config.json": b"{}"})
    m = start_mirror(tmp_path, hub)
    cache = tmp_path / "hf-cache"
    trees = cache / "models--org--m" / "trees"
    trees.mkdir(parents=True)
    # What the client wrote while it talked to huggingface.co, before pointing at the mirror.
    digest = hashlib.sha256(data).hexdigest()
    (trees / f"{sha}.json").write_text(json.dumps({"format_version": 1, "files": {"model.safetensors": {
        "size": len(data), "blob_id": "1" * 40, "lfs_sha256": digest, "lfs_size": len(data), "xet_hash": "ab" * 32}}}))
    try:
        failed = _download(m.url, cache, sha, tmp_path / "home", disable_xet=False)
        assert failed.returncode != 0
        assert "xet-read-token" in failed.stderr  # the client took the tree-cache path
        for advice in ("HF_HUB_DISABLE_XET=1", f"models--org--m/trees/{sha}.json", "delete models--org--m/trees/"):
            assert advice in failed.stderr, advice
        assert any("refused a Xet token for org/m" in line for line in m.log)

        # Remedy 1: Xet off, same cache: the HEAD happens and the file comes over HTTP.
        ok = _download(m.url, cache, sha, tmp_path / "home", disable_xet=True)
        assert ok.returncode == 0, ok.stderr
        assert Path(ok.stdout.strip().splitlines()[-1]).read_bytes() == data

        # Remedy 2: Xet on, the cached listing deleted: the mirror sends no Xet hint.
        shutil.rmtree(cache / "models--org--m")
        ok = _download(m.url, cache, sha, tmp_path / "home", disable_xet=False)
        assert ok.returncode == 0, ok.stderr
        assert Path(ok.stdout.strip().splitlines()[-1]).read_bytes() == data
    finally:
        m.stop()
