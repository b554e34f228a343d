"""The fake Hub, driven by the real huggingface_hub client pointed straight at it."""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

# huggingface_hub reads these once, at import time.
_HF_HOME = tempfile.mkdtemp(prefix="fakehub-hf-home-")
atexit.register(shutil.rmtree, _HF_HOME, True)
os.environ.update(HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1", NO_PROXY="127.0.0.1,localhost",
                  HF_HOME=_HF_HOME)
for _var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
    os.environ.pop(_var, None)

import pytest  # noqa: E402
from huggingface_hub import HfApi, hf_hub_download, snapshot_download  # noqa: E402
from huggingface_hub.errors import (  # noqa: E402
    EntryNotFoundError,
    GatedRepoError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.fakehub import FakeHub, FileSource  # noqa: E402

MiB = 1 << 20
TOKEN, OTHER = "hf_SENTINELuser_allowed", "hf_SENTINELuser_other"
CONFIG = b'{"model_type": "bert"}'
ODD = "sub/dir/file name+#\u00e9.txt"


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub.running() as hub:
        hub.add_token(TOKEN, "alice")
        hub.add_token(OTHER, "bob")
        yield hub


@pytest.fixture
def repo(hub: FakeHub) -> dict[str, bytes]:
    files = {"config.json": CONFIG, ODD: b"odd name", "weights/model.safetensors": os.urandom(3 * MiB + 7),
             "tokenizer.json": b"{}" * 1000}
    hub.create_repo("org/model", tags=["bert"], pipeline_tag="fill-mask", library_name="transformers")
    hub.commit("org/model", files, message="first\n\nbody")
    return files


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One raw request (no redirects followed) -> status, headers, body."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_download_regular_and_lfs_without_auth_at_cdn(hub: FakeHub, repo: dict[str, bytes], tmp_path: Path) -> None:
    for name in ("config.json", ODD, "weights/model.safetensors"):
        path = hf_hub_download("org/model", name, cache_dir=tmp_path, endpoint=hub.url, token=TOKEN)
        assert Path(path).read_bytes() == repo[name]
    assert hub.count("GET", origin="cdn") == 1 and hub.count("HEAD", "/resolve/main/") == 3
    assert not hub.cdn_saw_authorization
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub.requests if r.origin == "hub")
    sha256 = hashlib.sha256(repo["weights/model.safetensors"]).hexdigest()
    assert hub.bytes_sent_for(sha256) == len(repo["weights/model.safetensors"])
    assert hub.bytes_sent == sum(len(v) for k, v in repo.items() if k != "tokenizer.json")


def test_resolve_headers_and_ranges(hub: FakeHub, repo: dict[str, bytes]) -> None:
    head = hub.head("org/model")
    status, h, _ = fetch(f"{hub.url}/org/model/resolve/main/config.json", "HEAD")
    git = hashlib.sha1(b"blob %d\0" % len(CONFIG) + CONFIG).hexdigest()
    assert (status, h["ETag"], h["X-Repo-Commit"], h["Content-Length"]) == (200, f'"{git}"', head, str(len(CONFIG)))
    status, h, _ = fetch(f"{hub.url}/org/model/resolve/{head[:7]}/weights/model.safetensors", "HEAD")
    blob = repo["weights/model.safetensors"]
    assert status == 302 and h["X-Linked-Etag"] == f'"{hashlib.sha256(blob).hexdigest()}"'
    assert h["X-Linked-Size"] == str(len(blob)) and h["X-Repo-Commit"] == head
    assert h["Location"].startswith(hub.cdn_url) and "X-Amz-Signature=SIGXYZ" in h["Location"]
    assert not any(k.lower().startswith("x-xet") for k in h) and "Link" not in h
    status, h, body = fetch(h["Location"], headers={"Range": "bytes=100-1048675"})
    assert (status, body, h["Content-Range"]) == (206, blob[100:1048676], f"bytes 100-1048675/{len(blob)}")
    status, h, body = fetch(f"{hub.url}/org/model/resolve/main/config.json", headers={"Range": "bytes=-5"})
    assert (status, body) == (206, CONFIG[-5:])
    status, h, _ = fetch(f"{hub.url}/org/model/resolve/main/config.json", headers={"Range": f"bytes={len(CONFIG)}-"})
    assert (status, h["Content-Range"]) == (416, f"bytes */{len(CONFIG)}")
    hub.ignore_range = True
    assert fetch(f"{hub.url}/org/model/resolve/main/config.json", headers={"Range": "bytes=2-"})[::2] == (200, CONFIG)
    status, h, body = fetch(f"{hub.url}/org/model/resolve/main/missing.json")
    assert (status, h["X-Error-Code"], h["X-Repo-Commit"], json.loads(body)["error"]) == (
        404, "EntryNotFound", head, h["X-Error-Message"])
    assert fetch(f"{hub.url}/org/model/resolve/nope/config.json")[1]["X-Error-Code"] == "RevisionNotFound"
    status, h, _ = fetch(f"{hub.url}/nobody/none/resolve/main/config.json")
    assert (status, h["X-Error-Code"]) == (401, "RepoNotFound")
    assert fetch(f"{hub.url}/api/agent-harnesses")[2] == b'{"standardEnvVars": [], "harnesses": {}}'
    assert fetch(f"{hub.url}/api/whoami-v2")[0] == 401
    assert json.loads(fetch(f"{hub.url}/api/whoami-v2", headers={"Authorization": f"Bearer {TOKEN}"})[2])["name"] == "alice"


def test_small_file_resolve_cache_and_repo_types(hub: FakeHub, tmp_path: Path) -> None:
    hub.small_file_resolve_cache = True
    hub.commit("gpt2", {"config.json": CONFIG})
    hub.commit("org/data", {"train.parquet": b"PAR1" * 10, "README.md": b"# d"}, repo_type="dataset")
    status, h, _ = fetch(f"{hub.url}/gpt2/resolve/main/config.json", "HEAD")
    assert status == 307 and h["Location"].startswith("/api/resolve-cache/models/gpt2/")
    assert Path(hf_hub_download("gpt2", "config.json", cache_dir=tmp_path, endpoint=hub.url)).read_bytes() == CONFIG
    assert hub.count(path_contains="/api/resolve-cache/") == 2  # HEAD and GET both follow the 307
    folder = snapshot_download("org/data", repo_type="dataset", cache_dir=tmp_path, endpoint=hub.url)
    assert (Path(folder) / "train.parquet").read_bytes() == b"PAR1" * 10
    assert "datasets--org--data" in folder
    assert HfApi(endpoint=hub.url).dataset_info("org/data").sha == hub.head("org/data", repo_type="dataset")


def test_snapshot_download_and_info(hub: FakeHub, repo: dict[str, bytes], tmp_path: Path) -> None:
    folder = Path(snapshot_download("org/model", cache_dir=tmp_path, endpoint=hub.url))
    assert {p: (folder / p).read_bytes() for p in repo} == repo
    info = HfApi(endpoint=hub.url).model_info("org/model", files_metadata=True)
    assert info.sha == hub.head("org/model") and info.tags == ["bert"] and info.pipeline_tag == "fill-mask"
    assert info.library_name == "transformers" and info.last_modified is not None
    sizes = {s.rfilename: (s.size, s.lfs) for s in info.siblings or []}
    lfs = sizes["weights/model.safetensors"][1]
    assert lfs is not None and lfs.sha256 == hashlib.sha256(repo["weights/model.safetensors"]).hexdigest()
    assert sizes["config.json"] == (len(CONFIG), None)


def test_revisions(hub: FakeHub, repo: dict[str, bytes]) -> None:
    api, first = HfApi(endpoint=hub.url), hub.head("org/model")
    second = hub.commit("org/model", {"config.json": b"{}", ODD: None}, branch="feature/x", message="second")
    hub.tag("org/model", "v1", first)
    hub.create_pr_ref("org/model", 1, second)
    for rev, sha in (("refs/pr/1", second), ("feature/x", second), ("v1", first), (first, first),
                     (second[:7], second), ("main", first)):
        assert api.model_info("org/model", revision=rev).sha == sha, rev
        assert fetch(f"{hub.url}/org/model/resolve/{rev.replace('/', '%2F')}/config.json", "HEAD")[1][
            "X-Repo-Commit"] == sha
    assert fetch(f"{hub.url}/org/model/resolve/refs/pr/1/config.json", "HEAD")[1]["X-Repo-Commit"] == second
    assert api.revision_exists("org/model", "feature/x") and not api.revision_exists("org/model", "nope")
    refs = api.list_repo_refs("org/model", include_pull_requests=True)
    assert {b.name for b in refs.branches} == {"main", "feature/x"} and refs.tags[0].target_commit == first
    assert [p.ref for p in refs.pull_requests or []] == ["refs/pr/1"]
    hub.commits_page_size = 1
    commits = api.list_repo_commits("org/model", revision="feature/x")
    assert [c.commit_id for c in commits] == [second, first] and commits[1].title == "first"
    hub.set_ref("org/model", "main", second)
    assert api.model_info("org/model").sha == second
    with pytest.raises(RevisionNotFoundError):
        api.model_info("org/model", revision="nope")


def test_tree_pagination_and_paths_info(hub: FakeHub, repo: dict[str, bytes]) -> None:
    api = HfApi(endpoint=hub.url)
    hub.tree_page_size = 2
    assert sorted(api.list_repo_files("org/model")) == sorted(repo)
    assert hub.count(path_contains="/tree/main") == 4  # 7 entries (files and dirs) in pages of 2
    assert all(r.path.startswith("/api/") for r in hub.requests)
    entries = {e.path: e for e in api.list_repo_tree("org/model", "sub", recursive=True, expand=True)}
    assert set(entries) == {"sub/dir", ODD} and entries[ODD].last_commit is not None
    assert [e.path for e in api.list_repo_tree("org/model", "config.json")] == ["config.json"]
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree("org/model", "missing"))
    assert fetch(f"{hub.url}/api/models/org/model/tree/main/missing")[1]["X-Error-Code"] == "EntryNotFound"
    infos = {e.path: e for e in api.get_paths_info("org/model", ["config.json", "sub", "missing",
                                                                 "weights/model.safetensors"])}
    assert set(infos) == {"config.json", "sub", "weights/model.safetensors"}
    assert infos["weights/model.safetensors"].size == len(repo["weights/model.safetensors"])


def test_access_control(hub: FakeHub, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.url)
    hub.create_repo("org/gated", gated="manual", readers={TOKEN})
    hub.commit("org/gated", {"config.json": CONFIG})
    hub.create_repo("org/secret", private=True, readers={TOKEN})
    hub.commit("org/secret", {"config.json": CONFIG})
    assert not api.repo_exists("org/unknown", token=False) and not api.repo_exists("org/unknown", token=OTHER)
    assert not api.repo_exists("org/secret", token=OTHER) and api.repo_exists("org/secret", token=TOKEN)
    assert api.file_exists("org/secret", "config.json", token=TOKEN)
    assert not api.file_exists("org/secret", "missing.json", token=TOKEN)
    assert api.model_info("org/gated", token=False).gated == "manual"  # metadata is public, as on the Hub
    for token in (False, OTHER):
        with pytest.raises(GatedRepoError):
            hf_hub_download("org/gated", "config.json", cache_dir=tmp_path, endpoint=hub.url, token=token)
    assert fetch(f"{hub.url}/org/gated/resolve/main/config.json", "HEAD",
                 {"Authorization": f"Bearer {OTHER}"})[0] == 403
    path = hf_hub_download("org/gated", "config.json", cache_dir=tmp_path, endpoint=hub.url, token=TOKEN)
    assert Path(path).read_bytes() == CONFIG
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/secret", "config.json", cache_dir=tmp_path, endpoint=hub.url, token=OTHER)


def test_cut_after_is_resumed_with_range(hub: FakeHub, tmp_path: Path) -> None:
    data = FileSource.random(12 * MiB, seed=3)
    hub.commit("org/big", {"model.safetensors": data})
    hub.cut_after(11 * MiB)
    path = hf_hub_download("org/big", "model.safetensors", cache_dir=tmp_path, endpoint=hub.url)
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == hashlib.sha256(data.read(0, 12 * MiB)).hexdigest()
    cdn = [r for r in hub.requests if r.origin == "cdn"]
    assert len(cdn) == 2 and cdn[1].headers["range"] == f"bytes={10 * MiB}-"
    assert hub.bytes_sent == 11 * MiB + 2 * MiB


def test_down_up_same_port(hub: FakeHub, repo: dict[str, bytes]) -> None:
    api, port = HfApi(endpoint=hub.url), hub.port
    assert api.model_info("org/model").sha  # warm the client's keep-alive pool
    hub.down()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{hub.url}/api/models/org/model", timeout=5)
    with pytest.raises(Exception, match="(?i)connect|refused|disconnected"):
        api.model_info("org/model")
    hub.up()
    assert hub.port == port and api.model_info("org/model").sha == hub.head("org/model")


def test_fault_switches(hub: FakeHub, repo: dict[str, bytes]) -> None:
    url = f"{hub.url}/org/model/resolve/main/config.json"
    hub.fail_status(429, times=1, retry_after=7, paths_glob="*/resolve/*")
    status, h, body = fetch(url)
    assert (status, h["Retry-After"], "error" in json.loads(body)) == (429, "7", True)
    assert fetch(url)[0] == 200 and fetch(f"{hub.url}/api/models/org/model")[0] == 200
    hub.corrupt("config.json", "flip", times=1)
    body = fetch(url)[2]
    assert len(body) == len(CONFIG) and body != CONFIG and fetch(url)[2] == CONFIG
    sha256 = hashlib.sha256(repo["weights/model.safetensors"]).hexdigest()
    hub.corrupt(sha256, "html")
    status, h, body = fetch(fetch(f"{hub.url}/org/model/resolve/main/weights/model.safetensors")[1]["Location"])
    assert status == 200 and h["Content-Type"].startswith("text/html") and body.startswith(b"<!DOCTYPE")
    hub.clear_faults()
    hub.bandwidth = 4 * MiB
    started = time.monotonic()
    assert len(fetch(f"{hub.url}/org/model/resolve/main/tokenizer.json")[2]) == 2000
    hub.bandwidth, hub.latency = 10_000, 0.2
    assert fetch(f"{hub.url}/org/model/resolve/main/tokenizer.json")[0] == 200
    assert time.monotonic() - started > 0.2 + 0.15  # 0.2 s latency, then 2000 bytes at 10 kB/s
    status, h, body = fetch(f"{hub.url}/api/nothing/here")
    assert (status, json.loads(body)["error"]) == (404, "Not Found")
    hub.clear_faults()
    hub.resolve_header_overrides = {"X-Repo-Commit": None, "x-linked-size": "1"}
    h = fetch(f"{hub.url}/org/model/resolve/main/weights/model.safetensors", "HEAD")[1]
    assert "X-Repo-Commit" not in h and "X-Linked-Size" not in h and h["x-linked-size"] == "1"
    hub.resolve_header_overrides = {}
    hub.xet = True
    status, h, _ = fetch(f"{hub.url}/org/model/resolve/main/weights/model.safetensors", "HEAD")
    assert "X-Xet-Hash" in h and 'rel="xet-auth"' in h["Link"] and "X-Xet-Refresh-Route" in h
    tree = json.loads(fetch(f"{hub.url}/api/models/org/model/tree/main/weights")[2])
    assert "xetHash" in tree[0]
    assert fetch(h["X-Xet-Refresh-Route"])[1]["X-Xet-Access-Token"] and hub.count(path_contains="xet-read-token") == 1
    hub.reset_counters()
    assert hub.count() == 0 and hub.bytes_sent == 0


def test_subprocess_and_control_api(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakehub", "--port", "0", "--print-url"], cwd=root,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        urls = dict(part.split("=", 1) for part in line.split())
        url = urls["FAKEHUB_URL"]

        def post(path: str, body: object) -> object:
            req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())

        files = {"big.bin": {"random": 2 * MiB + 1, "seed": 5}, "a.txt": {"text": "hi"}}
        sha = post("/_fake/commit", {"repo_id": "org/m", "files": files})["sha"]  # type: ignore[index]
        post("/_fake/faults", {"latency": 0.01, "fail_status": {"status": 500, "times": 1}})
        assert fetch(f"{url}/org/m/resolve/main/a.txt")[0] == 500
        status, h, body = fetch(f"{url}/org/m/resolve/main/a.txt")
        assert (status, body, h["X-Repo-Commit"]) == (200, b"hi", sha)
        location = fetch(f"{url}/org/m/resolve/main/big.bin")[1]["Location"]
        assert location.startswith(urls["CDN_URL"])
        assert fetch(location)[2] == FileSource.random(2 * MiB + 1, seed=5).read(0, 3 * MiB)
        with urllib.request.urlopen(url + "/_fake/counters") as r:
            counters = json.loads(r.read())
        assert counters["bytes_sent"] == 2 * MiB + 3 and len(counters["requests"]) == 4
        assert not counters["cdn_saw_authorization"]
        assert post("/_fake/call", {"method": "head", "args": ["org/m"]}) == {"result": sha}
        post("/_fake/faults", {"down_for": 0.5})
        time.sleep(0.2)
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{url}/api/models/org/m", timeout=5)
        time.sleep(0.6)
        assert fetch(f"{url}/api/models/org/m")[0] == 200
        post("/_fake/reset", {})
        assert fetch(f"{url}/_fake/counters")[2].startswith(b'{"requests": [],')
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
