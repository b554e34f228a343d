"""hf-protocol.md §7: the conformance checklist, against the real daemon in front of the
fake Hub (with its Xet hints switched on, so stripping is checked everywhere), driven by
the real huggingface_hub client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from tests.hubenv import MiB, OTHER, TOKEN, access_between, access_lines, log_mark, rand, raw, sha256  # isort: skip

import pytest
from huggingface_hub import HfApi, HfFileSystem, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    RevisionNotFoundError,
)

from tests.daemon import MirrorDaemon
from tests.fakehub import FakeHub

ODD = "sub/dir/file name+#.txt"
UTF8 = "données/モデル.txt"
def _tokenizer_json() -> bytes:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok.to_str().encode()


FILES = {
    "config.json": b'{"model_type": "bert", "hidden_size": 8}',
    "tokenizer.json": _tokenizer_json(),
    "tokenizer_config.json": b'{"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]"}',
    "model.safetensors": rand(3 * MiB + 7, 1),
    "big.bin": rand(12 * MiB + 5, 2),
    ODD: b"odd name",
    UTF8: "unicode".encode(),
    "a/b/c.txt": b"deep",
    "a/b/d.txt": b"deep2",
    "a/e.txt": b"shallow",
}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeHub, MirrorDaemon, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("conf")
    with FakeHub.running() as hub:
        hub.add_token(TOKEN, "alice")
        hub.add_token(OTHER, "bob")
        hub.xet = True
        hub.create_repo("org/model", tags=["bert"], pipeline_tag="fill-mask", library_name="transformers")
        shas = {"main": hub.commit("org/model", FILES)}
        hub.create_branch("org/model", "feature/x")
        shas["feature/x"] = hub.commit("org/model", {"config.json": b'{"branch": true}'}, branch="feature/x")
        hub.tag("org/model", "v1", shas["main"])
        hub.create_pr_ref("org/model", 1, shas["feature/x"])
        shas["data"] = hub.commit("org/data", {"train.csv": b"a,b\n1,2\n"}, repo_type="dataset")
        shas["space"] = hub.commit("org/space", {"app.py": b"print(1)\n"}, repo_type="space")
        shas["gpt2"] = hub.commit("gpt2", {"config.json": b"{}"})
        hub.create_repo("org/gated", gated="manual", readers=[TOKEN])
        hub.commit("org/gated", {"config.json": b'{"gated": 1}'})
        hub.create_repo("org/many")
        hub.commit("org/many", {f"f/{i:04d}.txt": str(i).encode() for i in range(1205)})
        with MirrorDaemon(tmp / "data", hub.url) as mirror:
            yield hub, mirror, shas


def test_01_agent_harnesses_fast(env):
    """Answered by the mirror itself (fast whatever upstream does): upstream is not asked."""
    hub, m, _ = env
    status, headers, body = raw(m.url + "/api/agent-harnesses")
    assert status == 200 and json.loads(body) == {"standardEnvVars": [], "harnesses": {}}
    assert hub.count(path_contains="agent-harnesses") == 0


@pytest.mark.parametrize("path", ["/api/models/org/model", "/api/models/org/model/revision/main"])
def test_02_repo_info_fields(env, path):
    _hub, m, shas = env
    status, _h, body = raw(m.url + path)
    info = json.loads(body)
    assert status == 200 and info["id"] == "org/model" and info["sha"] == shas["main"]
    assert sorted(s["rfilename"] for s in info["siblings"]) == sorted(FILES)
    assert info["lastModified"].endswith("Z") and len(info["lastModified"]) == 24
    assert info["tags"] == ["bert"] and info["pipeline_tag"] == "fill-mask" and info["library_name"] == "transformers"
    assert info["private"] is False and info["gated"] is False
    assert "xetHash" not in body.decode()


def test_03_datasets_spaces_single_segment(env):
    _hub, m, shas = env
    api = HfApi(endpoint=m.url)
    assert api.dataset_info("org/data").sha == shas["data"]
    assert api.space_info("org/space").sha == shas["space"]
    assert api.model_info("gpt2").sha == shas["gpt2"]


@pytest.mark.parametrize("rev,key", [("refs/pr/1", "feature/x"), ("feature/x", "feature/x"), ("v1", "main"), ("FULL", "main"), ("SHORT", "main")])
def test_04_revision_decoding(env, rev, key):
    _hub, m, shas = env
    if rev == "FULL":
        rev = shas["main"]
    elif rev == "SHORT":
        rev = shas["main"][:7]
    info = HfApi(endpoint=m.url).model_info("org/model", revision=rev)
    assert info.sha == shas[key]


def test_05_repo_errors(env):
    _hub, m, _ = env
    api = HfApi(endpoint=m.url)
    assert api.repo_exists("org/nope") is False
    with pytest.raises(RevisionNotFoundError):
        api.model_info("org/model", revision="nope")
    status, headers, body = raw(m.url + "/api/models/org/nope")
    assert status in (401, 404) and headers["X-Error-Code"] == "RepoNotFound" and "error" in json.loads(body)
    status, headers, body = raw(m.url + "/org/gated/resolve/main/config.json", "HEAD")
    assert status in (401, 403) and headers["X-Error-Code"] == "GatedRepo"
    with pytest.raises(GatedRepoError):
        hf_hub_download("org/gated", "config.json", endpoint=m.url, token=OTHER, cache_dir=m.data_dir.parent / "c5")


def test_06_tree_shape_no_xet(env):
    _hub, m, shas = env
    status, _h, body = raw(m.url + f"/api/models/org/model/tree/{shas['main']}?recursive=true&expand=false")
    entries = json.loads(body)
    assert status == 200 and "xetHash" not in body.decode()
    files = {e["path"]: e for e in entries if e["type"] == "file"}
    assert set(files) == set(FILES)
    assert files["model.safetensors"]["size"] == len(FILES["model.safetensors"])
    assert files["model.safetensors"]["lfs"]["oid"] == sha256(FILES["model.safetensors"])
    assert {e["path"] for e in entries if e["type"] == "directory"} >= {"a", "a/b", "sub", "sub/dir"}


def test_07_tree_paths(env):
    _hub, m, _ = env
    api = HfApi(endpoint=m.url)
    assert sorted(e.path for e in api.list_repo_tree("org/model", path_in_repo="a/b")) == ["a/b/c.txt", "a/b/d.txt"]
    assert [e.path for e in api.list_repo_tree("org/model", path_in_repo="a")] == ["a/b", "a/e.txt"]
    status, _h, body = raw(m.url + "/api/models/org/model/tree/main/config.json?recursive=false&expand=false")
    assert status == 200 and [e["path"] for e in json.loads(body)] == ["config.json"]
    status, headers, _ = raw(m.url + "/api/models/org/model/tree/main/nope?recursive=false&expand=false")
    assert status == 404 and headers["X-Error-Code"] == "EntryNotFound"
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree("org/model", path_in_repo="missing"))


def test_08_tree_pagination(env):
    _hub, m, _ = env
    status, headers, body = raw(m.url + "/api/models/org/many/tree/main?recursive=true&expand=false")
    assert status == 200 and len(json.loads(body)) == 1000
    assert headers["Link"].startswith(f"<{m.url}/api/models/org/many/tree/main?") and 'rel="next"' in headers["Link"]
    paths = [e.path for e in HfApi(endpoint=m.url).list_repo_tree("org/many", recursive=True)]
    assert len(paths) == 1206 and len(set(paths)) == 1206
    # expand=true pages come from upstream (50 a page), rewritten onto the mirror.
    expanded = list(HfApi(endpoint=m.url).list_repo_tree("org/many", path_in_repo="f", expand=True))
    assert len(expanded) == 1205 and all(e.last_commit is not None for e in expanded)


def test_09_paths_info(env):
    _hub, m, _ = env
    infos = HfApi(endpoint=m.url).get_paths_info("org/model", ["config.json", "a/b", "missing", "model.safetensors"])
    kinds = {i.path: type(i).__name__ for i in infos}
    assert kinds == {"config.json": "RepoFile", "a/b": "RepoFolder", "model.safetensors": "RepoFile"}


def test_10_to_15_head_metadata(env):
    _hub, m, shas = env
    status, h, body = raw(m.url + "/org/model/resolve/main/config.json", "HEAD")
    assert status == 200 and body == b"" and h["X-Repo-Commit"] == shas["main"]
    assert h["Content-Length"] == str(len(FILES["config.json"])) and h["ETag"].startswith('"')
    assert h["X-Linked-Etag"] == h["ETag"] and h["X-Linked-Size"] == h["Content-Length"]
    assert "Location" not in h and "Link" not in h and not any(k.lower().startswith("x-xet") for k in h)
    status, h, _ = raw(m.url + "/org/model/resolve/main/model.safetensors", "HEAD")
    assert status == 200 and h["X-Linked-Etag"] == f'"{sha256(FILES["model.safetensors"])}"'
    assert h["X-Linked-Size"] == str(len(FILES["model.safetensors"])) == h["Content-Length"]
    assert not any(k.lower().startswith("x-xet") for k in h) and "Link" not in h
    info = json.loads(raw(m.url + "/api/models/org/model/revision/main")[2])
    assert info["sha"] == h["X-Repo-Commit"]
    status, h, _ = raw(m.url + f"/org/model/resolve/{shas['main']}/config.json", "HEAD")
    assert status == 200 and h["X-Repo-Commit"] == shas["main"]


def test_16_missing_file(env, tmp_path):
    _hub, m, shas = env
    status, h, body = raw(m.url + "/org/model/resolve/main/missing.json", "HEAD")
    assert status == 404 and h["X-Error-Code"] == "EntryNotFound" and h["X-Repo-Commit"] == shas["main"]
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/model", "missing.json", endpoint=m.url, cache_dir=tmp_path)
    assert (tmp_path / "models--org--model" / ".no_exist" / shas["main"] / "missing.json").exists()


def test_17_18_quoting_full_get(env, tmp_path):
    _hub, m, _ = env
    for name in (ODD, UTF8, "config.json", "model.safetensors"):
        p = hf_hub_download("org/model", name, endpoint=m.url, cache_dir=tmp_path)
        assert Path(p).read_bytes() == FILES[name]
    status, h, body = raw(m.url + "/org/model/resolve/main/config.json", headers={"Accept-Encoding": "gzip, deflate"})
    assert status == 200 and body == FILES["config.json"] and "Content-Encoding" not in h


def test_19_20_21_ranges(env):
    _hub, m, _ = env
    big = FILES["big.bin"]
    url = m.url + "/org/model/resolve/main/big.bin"
    raw(url)  # warm it
    status, h, body = raw(url, headers={"Range": "bytes=10485760-"})
    assert status == 206 and h["Content-Range"] == f"bytes 10485760-{len(big) - 1}/{len(big)}" and body == big[10485760:]
    status, h, body = raw(url, headers={"Range": "bytes=100-1048675"})
    assert status == 206 and body == big[100:1048676] and len(body) == 1048576
    status, h, _ = raw(url, headers={"Range": f"bytes={len(big)}-"})
    assert status == 416 and h["Content-Range"] == f"bytes */{len(big)}"


def test_22_datasets_spaces_resolve(env, tmp_path):
    _hub, m, _ = env
    p = hf_hub_download("org/data", "train.csv", repo_type="dataset", endpoint=m.url, cache_dir=tmp_path)
    assert Path(p).read_bytes() == b"a,b\n1,2\n" and "datasets--org--data" in p
    p = hf_hub_download("org/space", "app.py", repo_type="space", endpoint=m.url, cache_dir=tmp_path)
    assert Path(p).read_bytes() == b"print(1)\n" and "spaces--org--space" in p


def test_25_xet_token_route_refused_fast(env):
    """Refused by the mirror itself (fast whatever upstream does): upstream is not asked."""
    hub, m, shas = env
    status, h, _ = raw(m.url + f"/api/models/org/model/xet-read-token/{shas['main']}")
    assert 400 <= status < 500 and "X-Error-Message" in h
    assert hub.count(path_contains="xet-read-token") == 0


def test_26_xet_installed_client_stays_on_http(env, tmp_path):
    """hf_xet is installed and NOT disabled: two cold snapshot downloads through the mirror
    never ask for a xet token; the second run makes only the repo-info request."""
    hub, m, _ = env
    code = (
        "import sys; from huggingface_hub import snapshot_download;"
        "p = snapshot_download('org/model', cache_dir=sys.argv[1]); print(p)"
    )
    env_vars = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_XET"}
    env_vars["HF_ENDPOINT"] = m.url
    before = log_mark(m)  # earlier tests' lines are all before this
    marks = []
    for _ in range(2):
        marks.append(log_mark(m))
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env_vars, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
    end = log_mark(m)
    second = access_between(m, marks[1], end)
    assert len(second) == 1 and "/api/models/org/model/revision/main" in second[0], second
    snap = Path(out.stdout.strip().splitlines()[-1])
    assert (snap / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    assert not [line for line in m.log[before:end] if "xet-read-token" in line]
    assert hub.count(path_contains="xet-read-token") == 0


def test_28_hffilesystem(env, tmp_path):
    _hub, m, _ = env
    fs = HfFileSystem(endpoint=m.url, skip_instance_cache=True)
    with fs.open("org/model/big.bin", block_size=MiB) as f:
        f.seek(5 * MiB + 3)
        assert f.read(2 * MiB) == FILES["big.bin"][5 * MiB + 3: 7 * MiB + 3]
    assert "org/model/config.json" in fs.ls("org/model", detail=False)
    assert fs.info("org/model/model.safetensors")["size"] == len(FILES["model.safetensors"])
    assert fs.exists("org/model/config.json") and not fs.exists("org/model/nope.json") and not fs.exists("org/nope/x")


def test_30_token_not_relayed_to_cdn(env, tmp_path):
    hub, m, _ = env
    p = hf_hub_download("org/model", "model.safetensors", endpoint=m.url, cache_dir=tmp_path, token=TOKEN)
    assert Path(p).read_bytes() == FILES["model.safetensors"]
    assert hub.cdn_saw_authorization is False
    assert not any(TOKEN in line for line in m.log)


def test_snapshot_and_list_apis(env, tmp_path):
    _hub, m, shas = env
    api = HfApi(endpoint=m.url)
    snap = Path(snapshot_download("org/model", endpoint=m.url, cache_dir=tmp_path))
    for name, data in FILES.items():
        assert (snap / name).read_bytes() == data
    assert sorted(api.list_repo_files("org/model")) == sorted(FILES)
    refs = api.list_repo_refs("org/model")
    assert {b.name for b in refs.branches} == {"main", "feature/x"} and [t.name for t in refs.tags] == ["v1"]
    commits = api.list_repo_commits("org/model")
    assert commits[0].commit_id == shas["main"]
    assert api.file_exists("org/model", "config.json") and not api.file_exists("org/model", "nope")
    assert api.repo_exists("org/model")


def _cold_then_warm(m: MirrorDaemon, code: str, env_vars: dict[str, str], expect: str) -> tuple[list[str], list[str]]:
    """Run a client program twice on one HF_HOME; return the mirror's access lines of the
    cold run and of the warm run. The cold run must print something ending in `expect`."""
    runs = []
    for i in range(2):
        mark = log_mark(m)
        out = subprocess.run([sys.executable, "-c", code], env=env_vars, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-2000:]
        if i == 0:
            assert out.stdout.strip().endswith(expect), out.stdout[-500:]
        runs.append(access_between(m, mark, log_mark(m)))
    return runs[0], runs[1]


def test_29_transformers_and_cli(env, tmp_path):
    """transformers AutoConfig through the mirror (cold, then warm = exactly one request),
    and the `hf download` CLI."""
    hub, m, _ = env
    env_vars = dict(os.environ, HF_ENDPOINT=m.url, HF_HOME=str(tmp_path / "home"))
    code = "from transformers import AutoConfig; c = AutoConfig.from_pretrained('org/model'); print(c.model_type)"
    cold, warm = _cold_then_warm(m, code, env_vars, "bert")
    assert len(warm) == 1 and '"GET /api/models/org/model"' in warm[0], warm
    assert len(cold) >= 2
    hf = Path(sys.executable).parent / "hf"
    out = subprocess.run([str(hf), "download", "org/model", "config.json", "--cache-dir", str(tmp_path / "cli")],
                         env=env_vars, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    printed = out.stdout.strip().splitlines()[-1].split("path:")[-1].strip()
    assert Path(printed).read_bytes() == FILES["config.json"]
    assert access_lines(m, "HEAD /org/model/resolve/main/config.json")


def test_29_transformers_tokenizer_warm_load_makes_three_requests(env, tmp_path):
    _hub, m, _ = env
    env_vars = dict(os.environ, HF_ENDPOINT=m.url, HF_HOME=str(tmp_path / "home"))
    code = "from transformers import AutoTokenizer; t = AutoTokenizer.from_pretrained('org/model'); print(t('hello world')['input_ids'])"
    _cold, warm = _cold_then_warm(m, code, env_vars, "[1, 2]")
    assert len(warm) == 3, warm
    assert any("additional_chat_templates" in line and '" 404 ' in line for line in warm)
    assert any('"GET /api/models/org/model/tree/main" 200' in line for line in warm)
