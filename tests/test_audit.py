"""The audit log (issue 10 item 5): real CLI actions and lifecycle steps land in it with
the right actor; `mirror audit` filters; the hash chain and the signed checkpoints catch
an edited, a deleted, a renumbered, a reordered record, a cut tail that a checkpoint
covered, a consistently rewritten chain and forged checkpoints (the attacker opens the
database with sqlite3 and drops the triggers first); the triggers refuse changes through
the normal connection; a full catalog keeps records pending and writes them later; and
two processes appending at once keep one chain.

What a chain cannot show (mirror/audit/chain.py): a cut after the last checkpoint. The
truncation test shows both sides of that line.
"""

from __future__ import annotations

from tests import hubenv  # noqa: F401  (first: the client environment)

import asyncio
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mirror.audit.chain import GENESIS, checkpoint_message, record_hash
from mirror.model import RepoKey
from mirror.node import open_node
from tests.clihelp import clean_env, run_cli, run_json, write_config
from tests.conftest import make_config
from tests.fakehub import FakeHub
from tests.hubenv import TOKEN
from tests.lifecycle_util import DAY, add_revision, past_clock, sha
from tests.lifecycle_util import open_node as open_lifecycle_node

ME = "cli:" + pwd.getpwuid(os.getuid()).pw_name
TRIGGERS = ("audit_no_update", "audit_no_delete", "audit_extends_chain", "audit_checkpoint_no_update",
            "audit_checkpoint_no_delete", "audit_checkpoint_names_record")
N = 300  # checkpoints at #150 and #300 (each writer's close) and #256 (the format's interval)


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


# --- the chain and its checkpoints ----------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose log holds N records written in a few batches by two writers in
    turn, each closed (checkpoints at #150, #256 and #N)."""
    data = tmp_path_factory.mktemp("audit") / "data"

    async def build() -> None:
        for part in range(2):
            svc = await open_node(make_config(data))
            try:
                for i in range(part * N // 2, (part + 1) * N // 2):
                    svc.audit.record(f"user{i % 3}", "test.event", f"org/m{i}", n=i)
                    if i % 40 == 0:
                        await svc.audit.flush()
            finally:
                await svc.close()

    asyncio.run(build())
    return data


@pytest.fixture
def copy(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "data"))


def attack(data: Path, *statements: str) -> sqlite3.Connection:
    """Open the catalog as an attacker with the file would: no triggers, any change."""
    con = sqlite3.connect(data / "catalog.db", isolation_level=None)
    for t in TRIGGERS:
        con.execute(f"DROP TRIGGER IF EXISTS {t}")
    for s in statements:
        con.execute(s)
    return con


def rehash_from(con: sqlite3.Connection, start: int) -> None:
    """Recompute every hash and link from record `start` on (the format is documented)."""
    prev = con.execute("SELECT hash FROM audit_log WHERE seq = ?", (start - 1,)).fetchone()
    prev_hash = prev[0] if prev else GENESIS
    rows = con.execute("SELECT seq, at, actor, action, target, outcome, detail FROM audit_log WHERE seq >= ? ORDER BY seq",
                       (start,)).fetchall()
    for seq, at, actor, action, target, outcome, detail in rows:
        h = record_hash(seq, at, actor, action, target, outcome, detail, prev_hash)
        con.execute("UPDATE audit_log SET prev = ?, hash = ? WHERE seq = ?", (prev_hash, h, seq))
        prev_hash = h


async def verify(data: Path) -> dict[str, Any]:
    svc = await open_node(make_config(data))
    try:
        trusted = await svc.catalog.meta.trusted()
        return (await svc.audit.verify(trusted)).to_json()
    finally:
        await svc.close()


async def test_the_pristine_log_verifies_and_grows_after_a_reopen(copy: Path) -> None:
    rep = await verify(copy)
    assert rep["ok"] and rep["records"] == N and rep["last_seq"] == N and rep["checkpoints"] == 3
    assert rep["last_checkpoint"]["seq"] == N and rep["last_checkpoint"]["hash"] == rep["last_hash"]
    con = sqlite3.connect(copy / "catalog.db")
    assert [r[0] for r in con.execute("SELECT seq FROM audit_checkpoints ORDER BY seq")] == [N // 2, 256, N]
    con.close()
    svc = await open_node(make_config(copy))
    try:
        svc.audit.record("x", "test.more", "t")
    finally:
        await svc.close()
    rep = await verify(copy)
    assert rep["ok"] and rep["records"] == N + 1 and rep["checkpoints"] == 4


def test_an_edited_record_is_found_by_mirror_audit_verify(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    attack(copy, "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 10").close()
    code, out, _ = run_cli(capsys, "audit", "verify", "--data-dir", str(copy))
    assert code == 1 and out.startswith("BAD record #10: edited:"), out
    assert "someone-else" in out.splitlines()[1]
    code, rep = run_json(capsys, "audit", "verify", "--data-dir", str(copy))
    assert code == 1 and rep["ok"] is False and rep["first_bad"]["seq"] == 10 and rep["first_bad"]["reason"] == "edited"
    assert rep["first_bad"]["record"]["actor"] == "someone-else"


@pytest.mark.parametrize("statements, seq, reason", [
    (["DELETE FROM audit_log WHERE seq = 10"], 10, "deleted"),
    (["DELETE FROM audit_log WHERE seq IN (10, 11)", "UPDATE audit_log SET seq = seq - 2 WHERE seq > 11"], 10, "deleted"),
    (["UPDATE audit_log SET seq = -1 WHERE seq = 10", "UPDATE audit_log SET seq = 10 WHERE seq = 11",
      "UPDATE audit_log SET seq = 11 WHERE seq = -1"], 10, "reordered"),
    (["UPDATE audit_log SET seq = -1 WHERE seq = 10", "UPDATE audit_log SET seq = 10 WHERE seq = 20",
      "UPDATE audit_log SET seq = 20 WHERE seq = -1"], 10, "reordered"),
    (["DELETE FROM audit_log WHERE seq > 250"], 251, "truncated"),
    (["DELETE FROM audit_checkpoints WHERE seq = 256"], 256, "checkpoint-missing"),
    (["UPDATE audit_checkpoints SET signature = zeroblob(64) WHERE seq = 256"], 256, "checkpoint-forged"),
], ids=["deleted", "deleted-renumbered", "swapped-neighbours", "swapped-apart", "cut-into-checkpoint",
        "checkpoint-removed", "checkpoint-signature-zeroed"])
async def test_the_chain_finds_the_first_bad_record(copy: Path, statements: list[str], seq: int, reason: str) -> None:
    attack(copy, *statements).close()
    rep = await verify(copy)
    assert rep["ok"] is False
    assert (rep["first_bad"]["seq"], rep["first_bad"]["reason"]) == (seq, reason), rep["first_bad"]


async def test_an_inserted_record_is_found(copy: Path) -> None:
    """A forged record slipped in at #10 with a correct hash and link; the later records
    renumbered to make room (their hashes cannot be redone without breaking #256)."""
    con = attack(copy)
    for s in range(N, 9, -1):  # from the top, so the primary key never collides
        con.execute("UPDATE audit_log SET seq = ? WHERE seq = ?", (s + 1, s))
    at, h9 = con.execute("SELECT at, hash FROM audit_log WHERE seq = 9").fetchone()
    forged = record_hash(10, at, "mallory", "pin.add", "org/x", "ok", "{}", h9)
    con.execute("INSERT INTO audit_log VALUES (10, ?, 'mallory', 'pin.add', 'org/x', 'ok', '{}', ?, ?)", (at, h9, forged))
    con.close()
    rep = await verify(copy)
    assert (rep["first_bad"]["seq"], rep["first_bad"]["reason"]) == (10, "inserted"), rep["first_bad"]


async def test_a_cut_tail_is_found_up_to_the_last_checkpoint_only(copy: Path) -> None:
    # Records #299-#300 and the closing checkpoint #300 gone: the checkpoint at #256 still
    # matches, and the chain alone cannot tell that the log ever went further.
    attack(copy, "DELETE FROM audit_log WHERE seq > 298", "DELETE FROM audit_checkpoints WHERE seq = 300").close()
    rep = await verify(copy)
    assert rep["ok"] and rep["last_seq"] == 298 and rep["last_checkpoint"]["seq"] == 256
    # Cutting into what #256 signed is found.
    attack(copy, "DELETE FROM audit_log WHERE seq > 200").close()
    rep = await verify(copy)
    assert rep["first_bad"]["reason"] == "truncated" and rep["first_bad"]["seq"] == 201


async def test_a_consistently_rewritten_chain_is_caught_by_its_signed_checkpoints(copy: Path) -> None:
    con = attack(copy, "UPDATE audit_log SET actor = 'nobody' WHERE seq = 200")
    rehash_from(con, 200)
    con.close()
    rep = await verify(copy)
    assert (rep["first_bad"]["seq"], rep["first_bad"]["reason"]) == (256, "checkpoint-mismatch")

    # Re-signing with the attacker's own key, under its own name or under the node's.
    mine = Ed25519PrivateKey.generate()
    mine_hex = mine.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    node_hex = (copy / "keys" / "node.pub").read_text().strip()
    for signer in (mine_hex, node_hex):
        con = attack(copy, "DELETE FROM audit_checkpoints")
        for s in (N // 2, 256, N):
            h = con.execute("SELECT hash FROM audit_log WHERE seq = ?", (s,)).fetchone()[0]
            con.execute("INSERT INTO audit_checkpoints VALUES (?, ?, ?, ?, ?)",
                        (s, h, time.time(), signer, mine.sign(checkpoint_message(s, h))))
        con.close()
        rep = await verify(copy)
        assert (rep["first_bad"]["seq"], rep["first_bad"]["reason"]) == (N // 2, "checkpoint-forged"), rep["first_bad"]
    # Without any checkpoint, the one the format requires at #256 is missed.
    attack(copy, "DELETE FROM audit_checkpoints").close()
    rep = await verify(copy)
    assert (rep["first_bad"]["seq"], rep["first_bad"]["reason"]) == (256, "checkpoint-missing")


async def test_triggers_refuse_changes_through_the_normal_connection(copy: Path) -> None:
    svc = await open_node(make_config(copy))
    try:
        db = svc.catalog.db
        refused = [
            "UPDATE audit_log SET actor = 'x' WHERE seq = 5",
            "DELETE FROM audit_log WHERE seq = 300",
            "UPDATE audit_checkpoints SET hash = 'x' WHERE seq = 256",
            "DELETE FROM audit_checkpoints",
            # a fork: a second record #300, and a record #301 that does not link to #300
            f"INSERT INTO audit_log VALUES (300, 0, 'a', 'b', 'c', 'ok', '{{}}', '{GENESIS}', 'x')",
            f"INSERT INTO audit_log VALUES (301, 0, 'a', 'b', 'c', 'ok', '{{}}', '{GENESIS}', 'x')",
            f"INSERT INTO audit_checkpoints VALUES (5, '{GENESIS}', 0, 'k', x'00')",
        ]
        for sql in refused:
            with pytest.raises(sqlite3.IntegrityError):
                await db.execute(sql)
        svc.audit.record("x", "test.after", "t")  # and the log still works
        await svc.audit.flush()
    finally:
        await svc.close()
    rep = await verify(copy)
    assert rep["ok"] and rep["records"] == N + 1


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
