"""The audit log's hash chain and signed checkpoints (issue 10 item 5, threat model A5):
an attacker opens the catalog with sqlite3, drops the triggers, and edits, deletes,
renumbers, reorders, inserts, cuts the tail, rewrites the chain consistently or forges
checkpoints; `mirror audit verify` names the first bad record and why. The triggers
refuse all of it through the normal connection.

What a chain cannot show (mirror/audit/chain.py): a cut after the last checkpoint. The
truncation test shows both sides of that line.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mirror.audit.chain import GENESIS, checkpoint_message, record_hash
from mirror.node import open_node
from tests.clihelp import run_cli, run_json
from tests.conftest import make_config

TRIGGERS = ("audit_no_update", "audit_no_delete", "audit_extends_chain", "audit_checkpoint_no_update",
            "audit_checkpoint_no_delete", "audit_checkpoint_names_record")
N = 300  # checkpoints at #150 and #300 (each writer's close) and #256 (the format's interval)

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


async def test_a_record_edited_and_rehashed_alone_breaks_the_next_link(copy: Path) -> None:
    con = attack(copy, "UPDATE audit_log SET target = 'elsewhere' WHERE seq = 10")
    at, actor, action, outcome, detail, prev = con.execute(
        "SELECT at, actor, action, outcome, detail, prev FROM audit_log WHERE seq = 10").fetchone()
    con.execute("UPDATE audit_log SET hash = ? WHERE seq = 10",
                (record_hash(10, at, actor, action, "elsewhere", outcome, detail, prev),))
    con.close()
    rep = await verify(copy)
    assert (rep["first_bad"]["seq"], rep["first_bad"]["reason"]) == (10, "relinked"), rep["first_bad"]
    assert rep["first_bad"]["record"]["target"] == "elsewhere"


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


