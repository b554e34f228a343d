"""The audit log (issue 10 item 5): real CLI actions and lifecycle steps land in it with
the right actor and `mirror audit` filters them; details are stored as given and no token
reaches the data directory; a full catalog keeps records pending and writes them later,
in order; and two processes appending at once keep one chain. The chain's tamper
evidence: test_audit_chain.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mirror.model import RepoKey
from mirror.node import open_node
from tests.clihelp import clean_env, run_cli, run_json, write_config
from tests.conftest import make_config
from tests.fakehub import FakeHub
from tests.hubenv import TOKEN
from tests.lifecycle_util import DAY, add_revision, past_clock, sha
from tests.lifecycle_util import open_node as open_lifecycle_node

ME = "cli:" + pwd.getpwuid(os.getuid()).pw_name


def audit_json(capsys: pytest.CaptureFixture[str], data: Path, *args: str) -> Any:
    code, rows = run_json(capsys, "audit", "--data-dir", str(data), *args)
    assert code == 0
    return rows


# --- who did what ------------------------------------------------------------------------------


async def _revision(data: Path) -> None:
    svc = await open_node(make_config(data))
    try:
        await add_revision(svc, "org/m", sha(1), {"w.bin": b"weights" * 100}, ref="main")
    finally:
        await svc.close()


def test_cli_actions_are_audited_with_the_os_user_and_listed_with_filters(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    asyncio.run(_revision(data))
    peer = "ab" * 32
    d = ("--data-dir", str(data))
    assert run_cli(capsys, "pin", "org/m@main", "--label", "prod", *d)[0] == 0
    assert run_cli(capsys, "keys", "trust", peer, "--label", "site-b", *d)[0] == 0
    assert run_cli(capsys, "unpin", "org/m@main", *d)[0] == 0
    assert run_cli(capsys, "keys", "revoke", peer, *d)[0] == 0

    rows = audit_json(capsys, data)
    assert [(r["seq"], r["actor"], r["action"], r["target"], r["outcome"]) for r in rows] == [
        (1, ME, "pin.add", f"org/m@{sha(1)}", "ok"),
        (2, ME, "keys.trust", peer, "ok"),
        (3, ME, "pin.remove", f"org/m@{sha(1)}", "ok"),
        (4, ME, "keys.revoke", peer, "ok"),
    ]
    assert rows[0]["detail"] == {"label": "prod"} and rows[1]["detail"] == {"label": "site-b"}
    assert rows[2]["detail"] == {"was_pinned": True}

    # Filters: an actor or action prefix, a time window, the last N.
    assert [r["action"] for r in audit_json(capsys, data, "--action", "pin")] == ["pin.add", "pin.remove"]
    assert [r["action"] for r in audit_json(capsys, data, "--action", "keys.revoke")] == ["keys.revoke"]
    assert audit_json(capsys, data, "--action", "keys.rev") == []  # a prefix ends at a dot
    assert len(audit_json(capsys, data, "--actor", "cli")) == 4
    assert audit_json(capsys, data, "--actor", "lifecycle") == []
    assert len(audit_json(capsys, data, "--since", "1h")) == 4
    assert audit_json(capsys, data, "--since", "2999-01-01") == []
    assert len(audit_json(capsys, data, "--until", "2999-01-01T00:00Z")) == 4
    assert [r["seq"] for r in audit_json(capsys, data, "--limit", "2")] == [3, 4]

    code, out, _ = run_cli(capsys, "audit", *d, "--action", "pin")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2 and f"#1  {ME}  pin.add  org/m@{sha(1)}  ok" in lines[0]
    code, _, err = run_cli(capsys, "audit", *d, "--since", "last tuesday")
    assert code == 2 and "invalid time 'last tuesday'" in err
    code, out, _ = run_cli(capsys, "audit", "verify", *d)
    assert code == 0 and out.startswith("audit log intact: 4 records"), out


def test_a_pull_is_audited_and_no_token_is_stored(hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub.create_repo("org/gated", gated="manual", readers=[TOKEN])
    hub.commit("org/gated", {"config.json": b"{}", "w.bin": os.urandom(4096)})
    cfg = write_config(tmp_path / "m.toml", tmp_path / "data", hub.url)
    code, _ = run_json(capsys, "pull", "org/gated", "--config", str(cfg), "--token", TOKEN)
    assert code == 0
    (row,) = audit_json(capsys, tmp_path / "data", "--action", "sync")
    assert (row["actor"], row["action"], row["target"], row["outcome"]) == (ME, "sync.pull", "org/gated", "ok")
    assert row["detail"]["files_fetched"] == 2 and row["detail"]["repos"] == ["org/gated"]
    for f in (tmp_path / "data").rglob("*"):
        if f.is_file():
            assert TOKEN.encode() not in f.read_bytes(), f


async def test_lifecycle_steps_are_audited_as_lifecycle_unless_a_cli_user_ran_them(tmp_path: Path) -> None:
    clock = past_clock(0)
    svc = await open_lifecycle_node(tmp_path / "data", clock, high_watermark="1K", low_watermark="1K", gc_grace="1h")
    try:
        await add_revision(svc, "org/m", sha(1), {"w.bin": os.urandom(20_000)})
        await add_revision(svc, "org/n", sha(2), {"x.bin": os.urandom(20_000)})
        clock.advance(40 * DAY)
        assert (await svc.archiver.archive(older_than=DAY)).revisions
        repo = await svc.catalog.repos.repo_id(RepoKey("model", "org/m"))
        assert repo is not None
        await svc.archiver.thaw(repo, sha(1), actor="cli:someone")
        assert (await svc.evictor.evict()).evicted
        assert (await svc.collector.gc()).manifests_deleted == 2
        rows = await svc.audit.read()
    finally:
        await svc.close()
    seen = [(r["actor"], r["action"], r["target"]) for r in rows]
    assert ("lifecycle", "lifecycle.archive", f"org/m@{sha(1)}") in seen
    assert ("lifecycle", "lifecycle.archive", f"org/n@{sha(2)}") in seen
    assert ("cli:someone", "lifecycle.thaw", f"org/m@{sha(1)}") in seen
    assert {t for a, act, t in seen if act == "lifecycle.evict"} == {f"org/m@{sha(1)}", f"org/n@{sha(2)}"}
    (gc,) = [r for r in rows if r["action"] == "lifecycle.gc"]
    assert gc["actor"] == "lifecycle" and gc["detail"]["manifests_deleted"] == 2 and len(gc["detail"]["manifests"]) == 2


async def test_details_are_stored_as_given(tmp_path: Path) -> None:
    svc = await open_node(make_config(tmp_path / "data"))
    try:
        detail = {"z": 1, "a": [1, 2.5, None, True], "nested": {"k": "v"}, "unicode": "Zürich ✓", "token_id": "tok_1"}
        svc.audit.record("alice", "token.use", "org/gated\nFAKE LINE", **detail)
        svc.audit.record("bob", "x.y", "t", "denied", path=Path("/a/b"), raw=b"\x00", nan=float("nan"))
        svc.audit.record("carol", "bad\udcff.name", "t")  # an undecodable file name
        first, second, third = await svc.audit.read()
    finally:
        await svc.close()
    assert first["detail"] == detail and first["target"] == "org/gated\nFAKE LINE" and first["outcome"] == "ok"
    assert second["outcome"] == "denied" and second["detail"] == {"path": "/a/b", "raw": "b'\\x00'", "nan": "nan"}
    assert third["action"] == "bad\\udcff.name"
    json.dumps([first, second, third])  # what the HTTP read returns as is

    from mirror.cli.audit import format_record

    assert "\n" not in format_record(first) and "org/gated\\x0aFAKE LINE" in format_record(first)


# --- writing ------------------------------------------------------------------------------------


async def test_a_full_catalog_keeps_records_pending_then_writes_them_in_order(tmp_path: Path) -> None:
    from mirror.errors import StorageError

    svc = await open_node(make_config(tmp_path / "data"))
    try:
        db = svc.catalog.db
        (pages,) = await db.fetchone("PRAGMA page_count")  # type: ignore[misc]
        await db.execute(f"PRAGMA max_page_count = {pages}")
        svc.audit.max_pending = 5
        for i in range(8):
            svc.audit.record("alice", "test.big", f"t{i}", blob="x" * 20_000)  # never raises
        with pytest.raises(StorageError):
            await svc.audit.flush()
        assert [e.target for e in svc.audit.pending] == [f"t{i}" for i in range(5)]
        svc.audit.record("alice", "test.big", "t8")  # over the bound: counted, not kept
        with pytest.raises(StorageError):
            await svc.audit.flush()
        await db.execute("PRAGMA max_page_count = 1073741823")
        await svc.audit.flush()
        rows = await svc.audit.read()
        assert [r["target"] for r in rows] == ["t0", "t1", "t2", "t3", "t4", "audit log"]
        assert rows[-1]["action"] == "audit.overflow" and rows[-1]["detail"] == {"dropped": 4}
        assert (await svc.audit.verify()).ok
    finally:
        await svc.close()


APPENDER = """
import asyncio, pathlib, sys
from mirror import config
from mirror.node import open_node

async def main(data, ready, stop):
    node = await open_node(config.load(env={}, overrides={"store": {"data_dir": data}}))
    n = 0
    try:
        for i in range(4000):  # bounded: about 40 s at most
            for _ in range(3):
                n += 1
                node.audit.record("daemon", "test.append", f"r{n}", n=n)
            await node.audit.flush()
            if i == 0:
                pathlib.Path(ready).touch()
            if pathlib.Path(stop).exists():
                break
            await asyncio.sleep(0.005)
    finally:
        await node.close()
    print(n)

asyncio.run(main(*sys.argv[1:]))
"""


def test_two_processes_appending_at_once_keep_one_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A writer flushing small batches as the daemon's flush loop does, and CLI commands
    auditing on the same data dir meanwhile: one chain, every record, no fork."""
    data = tmp_path / "data"
    asyncio.run(_revision(data))
    ready, stop = tmp_path / "ready", tmp_path / "stop"
    env = clean_env(PYTHONPATH=os.pathsep.join(sys.path))
    writer = subprocess.Popen([sys.executable, "-c", APPENDER, str(data), str(ready), str(stop)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for _ in range(600):
            if ready.exists() or writer.poll() is not None:
                break
            time.sleep(0.05)
        assert ready.exists(), writer.communicate(timeout=30)
        keys = [f"{i:02x}" * 32 for i in range(1, 5)]
        clis = [subprocess.Popen([sys.executable, "-m", "mirror", "keys", "trust", k, "--data-dir", str(data)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for k in keys]
        for p in clis:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
        stop.touch()
        out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    appended = int(out.strip())
    rows = audit_json(capsys, data)
    assert [r["seq"] for r in rows] == list(range(1, appended + len(keys) + 1))
    mine = [r for r in rows if r["actor"] == "daemon"]
    assert [r["detail"]["n"] for r in mine] == list(range(1, appended + 1))
    trusted = [r for r in rows if r["action"] == "keys.trust"]
    assert sorted(r["target"] for r in trusted) == keys and all(r["actor"] == ME for r in trusted)
    assert all(mine[0]["seq"] < r["seq"] < mine[-1]["seq"] for r in trusted)  # written while the other wrote
    code, out, _ = run_cli(capsys, "audit", "verify", "--data-dir", str(data))
    assert code == 0, out
