"""`mirror peers` and `mirror keys` against real running daemons on loopback.

`mirror peers` shows the daemon's table (peers.json) and, with no daemon keeping it,
probes the configured peers itself. `mirror keys revoke` reaches a running daemon within
its trust refresh: the revoked key's signed requests are refused and the peer is not
used. A peer whose key is not trusted is shown `untrusted`, one that refuses ours
`refused`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.hubenv import MiB, rand, raw, sha256  # isort: skip

from mirror.keys import NodeKey
from mirror.peers.auth import sign_request
from tests.clihelp import run_cli
from tests.daemon import MirrorDaemon
from tests.fakehub import FakeHub
from tests.peerenv import PeerSite, free_ports, node_key


def _wait(what: str, cond: Any, timeout: float = 20.0, logs: tuple[MirrorDaemon, ...] = ()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out: {what}\n" + "\n".join(line for n in logs for line in n.log[-25:]))


def _peers(capsys: Any, config: Path) -> tuple[dict[str, Any], str]:
    code, out, err = run_cli(capsys, "peers", "--json", "--config", str(config))
    assert code == 0, err
    return json.loads(out), err


def _by_key(snap: dict[str, Any], key: str) -> dict[str, Any]:
    return next(p for p in snap["peers"] if p["key"] == key)


def _state(data_dir: Path, state: str) -> bool:
    """The daemon at `data_dir` has one peer, in `state` (its peers.json)."""
    try:
        peers = json.loads((data_dir / "peers.json").read_text())["peers"]
    except (OSError, ValueError, KeyError):
        return False
    return len(peers) == 1 and peers[0]["state"] == state


def _hello_as(data_dir: Path, node: MirrorDaemon) -> tuple[int, str]:
    """A signed `hello` to `node`, made here with the key of the node at `data_dir`."""
    key = NodeKey.load_or_create(data_dir / "keys")
    headers = sign_request(key, "GET", f"127.0.0.1:{node.port}", "/_peer/v1/hello", b"", time.time())
    status, h, _ = raw(node.url + "/_peer/v1/hello", headers=headers)
    return status, h.get("X-Error-Code", "")


def test_peers_shows_the_daemons_table_and_probes_when_no_daemon_runs(hub: FakeHub, tmp_path: Path, capsys: Any) -> None:
    data = rand(2 * MiB + 7, 31)
    hub.commit("org/m", {"model.safetensors": data})
    site = PeerSite(tmp_path, hub, 2)
    try:
        site.wait_all_up()
        url = "/org/m/resolve/main/model.safetensors"
        hub.reset_counters()
        assert raw(site[0].url + url)[2] == data
        assert raw(site[1].url + url)[2] == data
        # One upstream copy for the two nodes: one of them had it from the other (the
        # second from the first's store, or the first by following its owner's fill).
        assert hub.bytes_sent_for(sha256(data)) == len(data)

        def moved() -> bool:  # the counters reach peers.json with the next health round
            a, b = _by_key(site.state(0), site.keys[1]), _by_key(site.state(1), site.keys[0])
            return (a["bytes_in"] > 0 and b["bytes_out"] > 0) or (b["bytes_in"] > 0 and a["bytes_out"] > 0)

        _wait("one node counts bytes received from the other, which counts them sent", moved, logs=tuple(site.nodes))
        receiver = 0 if _by_key(site.state(0), site.keys[1])["bytes_in"] else 1

        me, other = receiver, 1 - receiver
        snap, err = _peers(capsys, site[me].config_path)
        assert "not running" not in err
        assert snap["public_key"] == site.keys[me] and snap["url"] == site[me].url
        p = _by_key(snap, site.keys[other])
        assert set(p) >= {"url", "source", "key", "state", "latency_ms", "last_seen", "bytes_in", "bytes_out",
                          "failures", "down_for", "reason"}
        assert (p["url"], p["source"], p["state"], p["down_for"], p["reason"]) == (site[other].url, "static", "up", 0, "")
        assert p["latency_ms"] > 0 and p["last_seen"] <= time.time() and p["bytes_in"] >= len(data) - 64 * 1024

        code, out, _ = run_cli(capsys, "peers", "--config", str(site[1].config_path))
        header, row = out.splitlines()[1:3]
        assert code == 0 and header.split()[:4] == ["URL", "SOURCE", "KEY", "STATE"]
        assert row.split()[:4] == [site[0].url, "static", site.keys[0][:16], "up"]
        assert header.index("STATE") == row.index("up")  # aligned columns

        # Node 1 stops: its file ages; the command says so and probes node 0 itself.
        assert site[1].stop() == 0
        state = site.dirs[1] / "peers.json"
        old = json.loads(state.read_text())
        state.write_text(json.dumps({**old, "written_at": time.time() - 1000}))
        snap, err = _peers(capsys, site[1].config_path)
        assert "not running" in err and "written 1000s ago" in err and "probing" in err
        assert _by_key(snap, site.keys[0])["state"] == "up" and snap["url"] == ""
        state.unlink()
        snap, err = _peers(capsys, site[1].config_path)
        assert "does not exist" in err and _by_key(snap, site.keys[0])["state"] == "up"

        # Nobody answers: the probe shows the peer down with the reason.
        assert site[0].stop() == 0
        snap, _ = _peers(capsys, site[1].config_path)
        down = snap["peers"][0]
        assert (down["url"], down["state"], down["failures"]) == (site[0].url, "down", 1)
        assert site[0].url in down["reason"] and down["key"] == ""
    finally:
        site.stop()


def test_a_revocation_reaches_the_running_daemon(hub: FakeHub, tmp_path: Path, capsys: Any) -> None:
    site = PeerSite(tmp_path, hub, 2)
    a, b = site.keys
    cfg_b = str(site[1].config_path)
    try:
        site.wait_all_up()
        assert _hello_as(site.dirs[0], site[1]) == (200, "")

        code, out, _ = run_cli(capsys, "keys", "revoke", a, "--config", cfg_b)
        assert code == 0 and out.startswith(f"revoked {a}")
        # B's trust store refreshes every 2 s: A's signed requests are refused soon after.
        _wait("B refuses A's requests", lambda: _hello_as(site.dirs[0], site[1]) == (403, "PeerRevoked"), 15)
        _wait("B stops using A", lambda: _by_key(site.state(1), a)["state"] == "untrusted", 15)
        _wait("A sees B refuse it", lambda: _by_key(site.state(0), b)["state"] == "refused", 15)
        assert "revoked" in _by_key(site.state(0), b)["reason"]

        code, out, _ = run_cli(capsys, "keys", "revoke", a.upper(), "--config", cfg_b)
        assert code == 0 and "already revoked" in out
        code, out, err = run_cli(capsys, "keys", "revoke", b, "--config", cfg_b)
        assert code == 2 and out == "" and err.strip().splitlines()[-1].startswith("mirror: ")
        assert "own key" in err and len([ln for ln in err.splitlines() if ln.startswith("mirror: ") and "data dir" not in ln]) == 1

        code, out, _ = run_cli(capsys, "keys", "list", "--json", "--config", cfg_b)
        rows = {r["public_key"]: r for r in json.loads(out)}
        assert rows[a]["revoked"] is True and rows[a]["source"] == "config" and rows[a]["revoked_at"] > 0
        assert rows[b]["revoked"] is False and rows[b]["this_node"] is True and rows[b]["label"] == "this node"
        code, out, _ = run_cli(capsys, "keys", "list", "--config", cfg_b)
        assert out.splitlines()[-2:] == ["revoked:", f"{a}  (in [peers] trust; the revocation wins)"]

        code, out, _ = run_cli(capsys, "keys", "show", "--json", "--config", cfg_b)
        assert code == 0 and json.loads(out) == {"public_key": b}

        # An explicit trust lifts the revocation, live as well.
        assert run_cli(capsys, "keys", "trust", a, "--label", "node a", "--config", cfg_b)[0] == 0
        _wait("B accepts A again", lambda: _hello_as(site.dirs[0], site[1]) == (200, ""), 15)
        site.wait_up(0)
        site.wait_up(1)
    finally:
        site.stop()


def test_a_peer_whose_key_is_not_trusted_is_shown_untrusted(hub: FakeHub, tmp_path: Path, capsys: Any) -> None:
    """A trusts nobody; B trusts A. A sees B `untrusted`, B sees A `refused`; neither is
    used, until A trusts B's key (`mirror keys trust`, taken live by A's daemon)."""
    dirs = [tmp_path / "a", tmp_path / "b"]
    keys = [node_key(d) for d in dirs]
    ports = free_ports(2)
    peers = {"health_interval": 0.5, "down_for": 5.0}
    a = MirrorDaemon(dirs[0], hub.url, server={"port": ports[0]},
                     peers={**peers, "nodes": [f"http://127.0.0.1:{ports[1]}"]})
    b = MirrorDaemon(dirs[1], hub.url, server={"port": ports[1]},
                     peers={**peers, "nodes": [f"http://127.0.0.1:{ports[0]}"], "trust": [keys[0]]})
    try:
        a.start()
        b.start()
        _wait("A sees B untrusted", lambda: _state(dirs[0], "untrusted"))
        snap, _ = _peers(capsys, a.config_path)
        p = _by_key(snap, keys[1])
        assert (p["source"], p["reason"], p["url"]) == ("static", "key not trusted", b.url)
        _wait("B sees A refuse it", lambda: _state(dirs[1], "refused"))
        code, out, _ = run_cli(capsys, "peers", "--config", str(a.config_path))
        assert code == 0 and "untrusted" in out.splitlines()[2] and "key not trusted" in out

        assert run_cli(capsys, "keys", "trust", keys[1], "--config", str(a.config_path))[0] == 0
        _wait("A uses B", lambda: _state(dirs[0], "up"))
        _wait("B uses A", lambda: _state(dirs[1], "up"))
        assert _by_key(_peers(capsys, b.config_path)[0], keys[0])["state"] == "up"
    finally:
        for n in (a, b):
            if n.proc is not None and n.proc.poll() is None:
                n.stop()
