"""Releases and aliases end to end (issue 11): a real daemon, the fake Hub, the real
`huggingface_hub` client, and the `mirror release` / `mirror alias` commands run against
the daemon's data directory while it serves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from tests.hubenv import raw  # isort: skip

import pytest
from huggingface_hub import HfApi, HfFileSystem, hf_hub_download, snapshot_download

from mirror.channels.split import on_canary
from tests.clihelp import clean_env, run_cli, run_json
from tests.daemon import MirrorDaemon
from tests.fakehub import FakeHub

REPO = "org/m"


def _files(n: int) -> dict[str, bytes]:
    config = {"model_type": "bert", "hidden_size": 8 * (n + 1), "version": n}
    return {"config.json": json.dumps(config).encode(), "weights.bin": bytes([n]) * 4096, "README.md": b"# m"}


def version(data: bytes | str) -> int:
    return int(json.loads(data)["version"])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeHub, MirrorDaemon, list[str]]]:
    tmp = tmp_path_factory.mktemp("channels")
    with FakeHub.running() as hub:
        shas = [hub.commit(REPO, _files(n)) for n in range(4)]
        hub.create_branch(REPO, "dev")
        hub.tag(REPO, "v0.9.0", shas[0])
        hub.commit("org/data", {"train.csv": b"a,b\n"}, repo_type="dataset")
        with MirrorDaemon(tmp / "data", hub.url) as mirror:
            # The mirror learns the repo and each commit once (as `mirror pull` would).
            for sha in shas:
                snapshot_download(REPO, revision=sha, endpoint=mirror.url, cache_dir=tmp / "warm")
            yield hub, mirror, shas


def cli(capsys: pytest.CaptureFixture[str], m: MirrorDaemon, *argv: str) -> tuple[int, str, str]:
    return run_cli(capsys, *argv, "--config", str(m.config_path))


def cli_json(capsys: pytest.CaptureFixture[str], m: MirrorDaemon, *argv: str) -> object:
    code, data = run_json(capsys, *argv, "--config", str(m.config_path))
    assert code == 0, data
    return data


def config_at(m: MirrorDaemon, rev: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return raw(f"{m.url}/{REPO}/resolve/{rev}/config.json", headers=headers)


def test_release_resolves_like_a_tag_everywhere(env, capsys, tmp_path: Path) -> None:
    _hub, m, shas = env
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"eval": {"accuracy": 0.93}}))
    rel = cli_json(capsys, m, "release", "create", REPO, "v1.0.0", "--revision", shas[1], "--param", "lr=3e-4",
                   "--param", "optimizer=adamw", "--dataset", "org/data@main", "--meta", str(meta), "--note", "first")
    assert rel["commit"] == shas[1] and rel["params"] == {"lr": 0.0003, "optimizer": "adamw"}
    assert rel["datasets"][0].startswith("org/data@") and len(rel["datasets"][0].split("@")[1]) == 40
    assert rel["author"].startswith("cli:") and rel["meta"] == {"eval": {"accuracy": 0.93}}
    cli_json(capsys, m, "release", "create", REPO, "v1.1.0-rc.1", "--revision", shas[2])
    listed = cli_json(capsys, m, "release", "list", REPO)
    assert [r["version"] for r in listed] == ["v1.1.0-rc.1", "v1.0.0"]
    # Immutable: the same version again is refused, whatever the commit.
    code, _out, err = cli(capsys, m, "release", "create", REPO, "v1.0.0", "--revision", shas[2])
    assert code == 1 and "immutable" in err
    # Resolves like a tag: resolve, repo info, snapshot, HfFileSystem.
    status, headers, body = config_at(m, "v1.0.0")
    assert status == 200 and version(body) == 1
    assert headers["X-Repo-Commit"] == shas[1] and headers["X-Mirror-Revision"] == "release v1.0.0"
    info = HfApi(endpoint=m.url).model_info(REPO, revision="v1.0.0")
    assert info.sha == shas[1]
    path = hf_hub_download(REPO, "config.json", revision="v1.0.0", endpoint=m.url, cache_dir=tmp_path / "c")
    assert version(Path(path).read_text()) == 1
    fs = HfFileSystem(endpoint=m.url)
    assert version(fs.read_text(f"{REPO}@v1.0.0/config.json")) == 1


def test_alias_follows_every_change_on_the_next_request(env, capsys, tmp_path: Path) -> None:
    _hub, m, shas = env
    out = cli_json(capsys, m, "alias", "set", REPO, "prod", shas[1], "--reason", "first release")
    assert out["alias"]["commit"] == shas[1]
    snap = snapshot_download(REPO, revision="prod", endpoint=m.url, cache_dir=tmp_path / "a")
    assert version((Path(snap) / "config.json").read_text()) == 1
    status, headers, _ = config_at(m, "prod")
    assert status == 200 and headers["X-Repo-Commit"] == shas[1] and headers["X-Mirror-Revision"] == "alias prod"
    # Set by release name: the alias shows the release.
    out = cli_json(capsys, m, "alias", "set", REPO, "prod", "v1.1.0-rc.1", "--reason", "rc looks good")
    assert out["alias"]["commit"] == shas[2] and out["alias"]["release"] == "v1.1.0-rc.1"
    assert config_at(m, "prod")[1]["X-Repo-Commit"] == shas[2]  # the very next request
    api = HfApi(endpoint=m.url)
    assert api.model_info(REPO, revision="prod").sha == shas[2]
    assert {f.rfilename for f in api.model_info(REPO, revision="prod", files_metadata=True).siblings} == set(_files(0))
    assert sorted(api.list_repo_files(REPO, revision="prod")) == sorted(_files(0))
    infos = api.get_paths_info(REPO, ["config.json"], revision="prod")
    assert infos[0].path == "config.json"
    commits = api.list_repo_commits(REPO, revision="prod")
    assert commits[0].commit_id == shas[2]
    fs = HfFileSystem(endpoint=m.url)
    assert version(fs.read_text(f"{REPO}@prod/config.json")) == 2
    path = hf_hub_download(REPO, "config.json", revision="prod", endpoint=m.url, cache_dir=tmp_path / "b")
    assert version(Path(path).read_text()) == 2
    # transformers and the `hf` CLI, unchanged, by alias (HF_ENDPOINT pointing at the mirror).
    env = dict(clean_env(), HF_ENDPOINT=m.url, HF_HOME=str(tmp_path / "home"), HF_HUB_DISABLE_XET="1")
    code = f"from transformers import AutoConfig; print(AutoConfig.from_pretrained('{REPO}', revision='prod').hidden_size)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split()[-1] == "24", out.stderr[-2000:]
    hf = Path(sys.executable).parent / "hf"
    out = subprocess.run([str(hf), "download", REPO, "config.json", "--revision", "prod", "--cache-dir",
                          str(tmp_path / "cli")], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert version(Path(out.stdout.strip().splitlines()[-1].split("path:")[-1].strip()).read_bytes()) == 2
    # An unchanged set records nothing.
    out = cli_json(capsys, m, "alias", "set", REPO, "prod", "v1.1.0-rc.1", "--reason", "again")
    assert out["changed"] is False


def test_history_at_and_rollback(env, capsys) -> None:
    _hub, m, shas = env
    cli_json(capsys, m, "alias", "set", REPO, "staging", shas[0], "--reason", "a")
    cli_json(capsys, m, "alias", "set", REPO, "staging", shas[1], "--reason", "b")
    cli_json(capsys, m, "alias", "set", REPO, "staging", shas[3], "--reason", "c")
    history = cli_json(capsys, m, "alias", "history", REPO, "staging")
    assert [(h["action"], h["from"], h["to"], h["reason"]) for h in history] == [
        ("set", shas[1], shas[3], "c"), ("set", shas[0], shas[1], "b"), ("set", None, shas[0], "a")]
    assert all(h["actor"].startswith("cli:") for h in history)
    # `at` answers what was served at each moment: between changes, and before any.
    for h, expected in zip(reversed(history), (shas[0], shas[1], shas[3])):
        at = cli_json(capsys, m, "alias", "at", REPO, "staging", "--time", str(h["time"] + 0.0001))
        assert at["commit"] == expected
    at = cli_json(capsys, m, "alias", "at", REPO, "staging", "--time", str(history[-1]["time"] - 1))
    assert at["commit"] is None
    # Rollback walks back one change at a time, and the next request follows.
    out = cli_json(capsys, m, "alias", "rollback", REPO, "staging", "--reason", "bad eval")
    assert out["action"] == "rollback" and out["alias"]["commit"] == shas[1]
    assert config_at(m, "staging")[1]["X-Repo-Commit"] == shas[1]
    out = cli_json(capsys, m, "alias", "rollback", REPO, "staging", "--reason", "still bad")
    assert out["alias"]["commit"] == shas[0]
    code, _out, err = cli(capsys, m, "alias", "rollback", REPO, "staging", "--reason", "nothing left")
    assert code == 1 and "no earlier target" in err
    assert cli_json(capsys, m, "alias", "history", REPO, "staging")[0]["reason"] == "still bad"


def test_names_that_would_mean_two_things_are_refused(env, capsys) -> None:
    _hub, m, shas = env
    code, _out, err = cli(capsys, m, "alias", "set", REPO, "dev", shas[0], "--reason", "x")
    assert code == 1 and "shadow" in err  # an upstream branch
    code, _out, err = cli(capsys, m, "release", "create", REPO, "v0.9.0", "--revision", shas[0])
    assert code == 1 and "shadow" in err  # an upstream tag
    code, _out, err = cli(capsys, m, "alias", "set", REPO, "abcdef12", shas[0], "--reason", "x")
    assert code != 0 and "looks like a commit" in err
    code, _out, err = cli(capsys, m, "alias", "set", REPO, "v2.0.0", shas[0], "--reason", "x")
    assert code != 0 and "release version" in err
    code, _out, err = cli(capsys, m, "alias", "set", REPO, "prod", shas[0], "--reason", " ")
    assert code != 0 and "reason" in err
    code, _out, err = cli(capsys, m, "release", "create", REPO, "1.2", "--revision", shas[0])
    assert code != 0 and "semantic version" in err
    code, _out, err = cli(capsys, m, "alias", "get", REPO, "nope")
    assert code == 1 and "no alias" in err
    # Forced, the local name wins over upstream's branch.
    cli_json(capsys, m, "alias", "set", REPO, "dev", shas[0], "--reason", "pin dev locally", "--force")
    assert config_at(m, "dev")[1]["X-Repo-Commit"] == shas[0]
    cli_json(capsys, m, "alias", "delete", REPO, "dev", "--reason", "done")
    assert config_at(m, "dev")[1]["X-Repo-Commit"] != shas[0]  # upstream's dev again
    # A release an alias names cannot be deleted.
    cli_json(capsys, m, "alias", "set", REPO, "qa", "v1.0.0", "--reason", "qa on 1.0")
    code, _out, err = cli(capsys, m, "release", "delete", REPO, "v1.0.0")
    assert code == 1 and "alias" in err


def test_canary_split_is_sticky_and_within_three_points(env, capsys) -> None:
    _hub, m, shas = env
    cli_json(capsys, m, "alias", "set", REPO, "serve", shas[1], "--reason", "stable")
    cli_json(capsys, m, "alias", "canary", REPO, "serve", "--to", shas[2], "--percent", "20")

    def sides() -> dict[str, str]:
        return {f"c{i}": config_at(m, "serve", **{"X-Client-Id": f"c{i}"})[1]["X-Repo-Commit"] for i in range(1000)}

    first = sides()
    assert set(first.values()) == {shas[1], shas[2]}
    # Exactly the documented split (channels/split.py) under the canary's salt; its
    # accuracy (+-3 points over 1,000 ids) is checked on a fixed clock in test_canary.py.
    salt = cli_json(capsys, m, "alias", "get", REPO, "serve")["canary"]["salt"]
    assert first == {c: shas[2] if on_canary(salt, f"id:{c}", 20.0) else shas[1] for c in first}
    assert sides() == first  # sticky across repeated requests
    m.restart()
    assert sides() == first  # and across a restart
    status, headers, _ = config_at(m, "serve", **{"X-Client-Id": "c0"})
    assert headers["X-Mirror-Revision"] in ("alias serve; canary", "alias serve; stable")
    cli_json(capsys, m, "alias", "abort", REPO, "serve", "--reason", "done")
    assert {config_at(m, "serve", **{"X-Client-Id": f"c{i}"})[1]["X-Repo-Commit"] for i in range(50)} == {shas[1]}


def test_alias_resolves_with_upstream_down(env, capsys, tmp_path: Path) -> None:
    hub, m, shas = env
    cli_json(capsys, m, "alias", "set", REPO, "offline", shas[3], "--reason", "for the outage test")
    hub.down()
    try:
        before = hub.count()
        snap = snapshot_download(REPO, revision="offline", endpoint=m.url, cache_dir=tmp_path / "o")
        assert version((Path(snap) / "config.json").read_text()) == 3
        status, headers, _ = config_at(m, "offline")
        assert status == 200 and headers["X-Repo-Commit"] == shas[3] and "X-Mirror-Stale" not in headers
        assert hub.count() == before  # not one upstream request
    finally:
        hub.up()
