"""`mirror ls`, `mirror show`, `mirror pin`/`unpin` on a mirror filled by `mirror pull`."""

from __future__ import annotations

import asyncio

import pytest

from mirror import config as config_mod
from mirror.model import RepoKey
from mirror.node import open_node
from tests.clihelp import run_cli, run_json, write_config
from tests.conftest import MiB, bf16_like, fine_tune
from tests.fakehub import FakeHub


@pytest.fixture
def mirror_with_two_revisions(tmp_path, capsys):
    weights = bf16_like(2 * MiB)
    tuned, _ = fine_tune(weights, share=0.25, seed=4)
    with FakeHub.running() as hub:
        old = hub.commit("org/a", {"config.json": b"{}", "model.safetensors": weights})
        hub.tag("org/a", "v1")
        new = hub.commit("org/a", {"model.safetensors": tuned})
        cfg = write_config(tmp_path / "m.toml", tmp_path / "data", hub.url)
        assert run_cli(capsys, "pull", "org/a", "--config", str(cfg), "--revision", "v1")[0] == 0
        assert run_cli(capsys, "pull", "org/a", "--config", str(cfg), "--revision", "main", "--exclude", "*.json")[0] == 0
    return cfg, old, new, len(weights)


def _touch(cfg, key: RepoKey, sha: str) -> None:
    async def go() -> None:
        svc = await open_node(config_mod.load(str(cfg), env={}))
        try:
            repo = await svc.catalog.repos.repo_id(key)
            assert repo is not None
            svc.catalog.meta.touch(repo, sha)
        finally:
            await svc.close()  # flushes access records

    asyncio.run(go())


def test_ls_show_pins(mirror_with_two_revisions, capsys):
    cfg, old, new, size = mirror_with_two_revisions
    _touch(cfg, RepoKey("model", "org/a"), new)
    code, repos = run_json(capsys, "ls", "--config", str(cfg))
    assert code == 0
    [r] = repos
    assert r["repo"] == "org/a" and r["refs"] == {"main": new, "v1": old} and r["commits"] == 2
    assert r["logical_bytes"] == 2 * size + 2 and 0 < r["stored_bytes"] < 2 * size
    assert r["last_access"] is not None and r["pins"] == []

    code, view = run_json(capsys, "show", "org/a@v1", "--config", str(cfg))
    assert code == 0 and view["commit"] == old and view["refs"] == ["v1"]
    files = {f["path"]: f for f in view["files"]}
    assert files["config.json"]["cached"] and files["config.json"]["shared_bytes"] == 2  # same content in main
    st = files["model.safetensors"]
    assert st["cached"] and st["chunks"] >= 2 and 0 < st["shared_share"] < 1  # fine-tune shares most chunks

    code, view = run_json(capsys, "show", "org/a", "--config", str(cfg))
    assert view["commit"] == new  # the default branch
    code, out, _ = run_cli(capsys, "show", "org/a@main", "--config", str(cfg))
    assert code == 0 and "model.safetensors" in out and "shared" in out

    code, out, _ = run_cli(capsys, "pin", "org/a@v1", "--config", str(cfg))
    assert code == 0 and old in out
    code, out, _ = run_cli(capsys, "pin", f"org/a@{new[:10]}", "--config", str(cfg), "--label", "prod")
    assert code == 0
    code, repos = run_json(capsys, "ls", "--config", str(cfg))
    assert {p["commit"]: p["label"] for p in repos[0]["pins"]} == {old: "v1", new: "prod"}
    code, out, _ = run_cli(capsys, "ls", "--config", str(cfg))
    assert "pinned" in out and "org/a" in out
    assert run_json(capsys, "show", "org/a@v1", "--config", str(cfg))[1]["pinned"] is True
    code, out, _ = run_cli(capsys, "unpin", "org/a@v1", "--config", str(cfg))
    assert code == 0 and "unpinned" in out
    code, out, _ = run_cli(capsys, "unpin", "org/a@v1", "--config", str(cfg))
    assert code == 0 and "was not pinned" in out

    for argv, text in (
        (("show", "org/zzz"), "not in this mirror"),
        (("show", "org/a@nope"), "not known"),
        (("pin", "org/a@"), "not a repo spec"),
    ):
        code, out, err = run_cli(capsys, *argv, "--config", str(cfg))
        assert code != 0 and text in err and "Traceback" not in err
