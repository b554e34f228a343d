"""One release control for a LAN site (issue 11): node B follows node A (`[channels]
authority`). Two real daemons on loopback, peered and trusting each other, the fake Hub,
and the `mirror alias` / `mirror release` commands run against each node's data directory.

What A decides, B serves on its next request after a pull: an alias, a rollback, a canary
(every client on the same side on both nodes), a release (immutable on B too). B refuses
local changes, naming A; it keeps serving its copy while A is down; A's channels route
answers only signed requests from trusted keys.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

from tests.hubenv import raw  # isort: skip

import pytest

from mirror.keys import NodeKey
from mirror.store.layout import open_layout
from tests.clihelp import run_cli, run_json
from tests.daemon import MirrorDaemon
from tests.fakehub import FakeHub
from tests.peerenv import PeerSite
from tests.peerprobe import signed_call

REPO = "org/m"
WAIT = 20.0  # seconds a change may take to reach the follower (a pull every 0.2 s)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PeerSite, list[str]]]:
    tmp = tmp_path_factory.mktemp("follow")
    with FakeHub.running() as hub:
        shas = [hub.commit(REPO, {"config.json": json.dumps({"version": n}).encode()}) for n in range(3)]
        s = PeerSite(tmp, hub, 2, channels={"tick": 0.2},
                     node_tables=lambda i, urls: {"channels": {"authority": urls[0]}} if i == 1 else {})
        try:
            s.wait_all_up()
            yield s, shas
        finally:
            s.stop()


def cli(capsys: pytest.CaptureFixture[str], m: MirrorDaemon, *argv: str) -> tuple[int, str, str]:
    return run_cli(capsys, *argv, "--config", str(m.config_path))


def cli_json(capsys: pytest.CaptureFixture[str], m: MirrorDaemon, *argv: str) -> Any:
    code, data = run_json(capsys, *argv, "--config", str(m.config_path))
    assert code == 0, data
    return data


def alias_or_none(capsys: pytest.CaptureFixture[str], m: MirrorDaemon, alias: str) -> Any:
    """The alias as `mirror alias get --json` shows it, or None while the node has none."""
    code, out, _err = cli(capsys, m, "alias", "get", REPO, alias, "--json")
    return json.loads(out) if code == 0 else None


def served(m: MirrorDaemon, rev: str, client: str = "c0") -> str:
    status, headers, body = raw(f"{m.url}/{REPO}/resolve/{rev}/config.json", headers={"X-Client-Id": client})
    assert status == 200, (status, body[:300])
    return headers["X-Repo-Commit"]


def wait_for(what: str, pred: Any, m: MirrorDaemon) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"{what} within {WAIT}s\n" + "\n".join(m.log[-20:]))


def served_or_none(m: MirrorDaemon, rev: str, client: str = "c0") -> str | None:
    status, headers, _ = raw(f"{m.url}/{REPO}/resolve/{rev}/config.json", headers={"X-Client-Id": client})
    return headers.get("X-Repo-Commit") if status == 200 else None


def test_alias_set_and_rollback_on_the_authority_reach_the_follower(site, capsys) -> None:
    s, shas = site
    a, b = s[0], s[1]
    assert served_or_none(b, "prod") is None  # nobody named prod yet: upstream has no such branch
    cli_json(capsys, a, "alias", "set", REPO, "prod", shas[0], "--reason", "CAB-1")
    wait_for("B serves A's prod", lambda: served_or_none(b, "prod") == shas[0], b)
    cli_json(capsys, a, "alias", "set", REPO, "prod", shas[1], "--reason", "CAB-2")
    wait_for("B serves A's new prod", lambda: served_or_none(b, "prod") == shas[1], b)
    cli_json(capsys, a, "alias", "rollback", REPO, "prod", "--reason", "p99 regression")
    wait_for("B serves A's rollback", lambda: served_or_none(b, "prod") == shas[0], b)
    assert served(a, "prod") == shas[0]
    # B's history is A's: same times, actors, actions and reasons, newest first.
    mine = cli_json(capsys, b, "alias", "history", REPO, "prod")
    theirs = cli_json(capsys, a, "alias", "history", REPO, "prod")
    keep = ("at", "actor", "action", "from", "to", "reason")
    assert [{k: e[k] for k in keep} for e in mine] == [{k: e[k] for k in keep} for e in theirs]
    assert [e["action"] for e in mine] == ["rollback", "set", "set"] and mine[0]["reason"] == "p99 regression"
    status = cli_json(capsys, b, "alias", "sync-status")
    assert status["authority"] == a.url and status["authority_key"] == s.keys[0] and status["error"] is None


def test_a_canary_sends_each_client_to_the_same_side_on_both_nodes(site, capsys) -> None:
    s, shas = site
    a, b = s[0], s[1]
    cli_json(capsys, a, "alias", "set", REPO, "serve", shas[1], "--reason", "stable")
    cli_json(capsys, a, "alias", "canary", REPO, "serve", "--to", shas[2], "--percent", "30", "--reason", "try v2")
    row = cli_json(capsys, a, "alias", "get", REPO, "serve")
    wait_for("B copies the canary", lambda: alias_or_none(capsys, b, "serve") == row, b)
    clients = [f"client-{i}" for i in range(200)]
    on_a = {c: served(a, "serve", c) for c in clients}
    on_b = {c: served(b, "serve", c) for c in clients}
    assert on_a == on_b
    assert set(on_a.values()) == {shas[1], shas[2]}
    cli_json(capsys, a, "alias", "abort", REPO, "serve", "--reason", "done")
    wait_for("B copies the abort", lambda: served_or_none(b, "serve", "client-0") == shas[1]
             and all(served(b, "serve", c) == shas[1] for c in clients), b)


def test_the_follower_refuses_local_changes_naming_the_authority(site, capsys) -> None:
    s, shas = site
    a, b = s[0], s[1]
    for argv in (("alias", "set", REPO, "local", shas[0], "--reason", "mine"),
                 ("alias", "rollback", REPO, "prod", "--reason", "mine"),
                 ("alias", "canary", REPO, "prod", "--to", shas[2], "--percent", "10"),
                 ("alias", "promote", REPO, "prod"), ("alias", "abort", REPO, "prod"),
                 ("alias", "delete", REPO, "prod", "--reason", "mine"),
                 ("release", "create", REPO, "v9.0.0", "--revision", shas[0]),
                 ("release", "delete", REPO, "v9.0.0")):
        code, _out, err = cli(capsys, b, *argv)
        assert code != 0, argv
        assert f"this node follows {a.url}" in err and "change aliases and releases there" in err, (argv, err)
    assert served_or_none(b, "local") is None
    # Over HTTP too (the admin API's same components): 409 in the Hub's error format.
    token = cli_json(capsys, b, "token", "create", "--name", "ops", "--role", "admin")["token"]
    status, headers, body = raw(f"{b.url}/_admin/v1/aliases", "POST",
                                {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
                                json.dumps({"repo": REPO, "alias": "local", "revision": shas[0], "reason": "x"}).encode())
    assert (status, headers.get("X-Error-Code")) == (409, "Conflict"), (status, body)
    assert a.url in json.loads(body)["error"]


def test_the_channels_route_answers_only_trusted_signed_requests(site, tmp_path: Path) -> None:
    s, _shas = site
    a = s[0]
    path = "/channels?after=0&releases=0"
    status, headers, body = raw(f"{a.url}/_peer/v1{path}")
    assert (status, headers.get("X-Error-Code")) == (401, "PeerUnsigned"), body
    (tmp_path / "stranger").mkdir()
    stranger = NodeKey.load_or_create(tmp_path / "stranger")
    status, headers, body, _ = signed_call(a, stranger, "GET", path)
    assert (status, headers.get("X-Error-Code")) == (403, "PeerUntrusted"), body
    assert b"prod" not in body
    follower = NodeKey.load_or_create(open_layout(s.dirs[1]).keys)
    status, _h, body, _ = signed_call(a, follower, "GET", path)
    page = json.loads(body)
    assert status == 200 and page["more"] is False and page["follows"] == ""
    assert {(x["repo_id"], x["name"]) for x in page["aliases"]} >= {(REPO, "prod")}


def test_a_copied_release_is_immutable_on_the_follower(site, capsys) -> None:
    s, shas = site
    a, b = s[0], s[1]
    made = cli_json(capsys, a, "release", "create", REPO, "v1.0.0", "--revision", shas[0], "--param", "lr=3e-4",
                    "--note", "first")
    got = wait_for("B copies the release", lambda: cli(capsys, b, "release", "show", REPO, "v1.0.0", "--json")[0] == 0
                   and cli_json(capsys, b, "release", "show", REPO, "v1.0.0"), b)
    for k in ("commit", "author", "created_at", "params", "note", "version"):
        assert got[k] == made[k], k
    assert served(b, "v1.0.0") == shas[0]
    # A re-creates v1.0.0 at another commit while B is away: B keeps the release it holds.
    b.stop()
    cli_json(capsys, a, "release", "delete", REPO, "v1.0.0")
    cli_json(capsys, a, "release", "create", REPO, "v1.0.0", "--revision", shas[1], "--force")
    cli_json(capsys, a, "alias", "set", REPO, "after", shas[1], "--reason", "a later change")
    b.start()
    wait_for("B copies A's later alias", lambda: served_or_none(b, "after") == shas[1], b)
    errors = [line for line in b.log if "release v1.0.0 of" in line and "immutable" in line]
    assert len(errors) == 1, b.log[-20:]
    assert cli_json(capsys, b, "release", "show", REPO, "v1.0.0")["commit"] == shas[0]
    assert served(b, "v1.0.0") == shas[0] and served(a, "v1.0.0") == shas[1]


def test_the_follower_serves_its_copy_while_the_authority_is_down(site, capsys) -> None:
    s, shas = site
    a, b = s[0], s[1]
    assert served(b, "prod") == shas[0]
    a.stop()
    wait_for("B notices A is down", lambda: any("cannot pull from the authority" in line for line in b.log), b)
    for client in ("x", "y", "z"):
        assert served(b, "prod", client) == shas[0]
    wait_for("B records why", lambda: cli_json(capsys, b, "alias", "sync-status")["error"], b)
    a.start()
    wait_for("B pulls again", lambda: any("answers again" in line for line in b.log), b)
    wait_for("B clears the error", lambda: cli_json(capsys, b, "alias", "sync-status")["error"] is None, b)
    assert len([line for line in b.log if "cannot pull from the authority" in line]) == 1  # once per episode
    cli_json(capsys, a, "alias", "set", REPO, "prod", shas[2], "--reason", "after the outage")
    wait_for("B serves A's change after the outage", lambda: served_or_none(b, "prod") == shas[2], b)
