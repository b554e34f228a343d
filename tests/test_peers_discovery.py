"""LAN discovery (mDNS/DNS-SD) between real daemons: no static `nodes`, only `trust`.

The daemons announce and browse on loopback (`discovery_interfaces = ["127.0.0.1"]`).
Discovery gives addresses, never trust: a node whose key is not trusted is found but not
used. A daemon that stops says goodbye and leaves its peers' tables.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from tests.hubenv import MiB, rand, raw, sha256  # isort: skip

import pytest

from mirror.config import ConfigError, load
from mirror.peers.discovery import parse_txt
from tests.clihelp import run_cli
from tests.daemon import MirrorDaemon
from tests.fakehub import FakeHub
from tests.peerenv import free_ports, node_key

LOOPBACK = {"discovery": True, "discovery_interfaces": ["127.0.0.1"], "nodes": [], "health_interval": 0.5, "down_for": 5.0}


def _state(d: Path) -> dict[str, Any]:
    try:
        return json.loads((d / "peers.json").read_text())
    except (OSError, ValueError):
        return {}


def _peer(d: Path, key: str) -> dict[str, Any] | None:
    return next((p for p in _state(d).get("peers", []) if p.get("key") == key), None)


def _wait(what: str, cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise TimeoutError(what)


def _mdns_on_loopback_works() -> str:
    """'' when one zeroconf instance on 127.0.0.1 sees its own announcement, else why not."""
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    async def probe() -> str:
        try:
            zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        except OSError as exc:
            return f"cannot open mDNS sockets on 127.0.0.1: {exc}"
        seen = asyncio.Event()
        stype = "_mirror-probe._tcp.local."
        browser = AsyncServiceBrowser(zc.zeroconf, [stype], handlers=[lambda **kw: seen.set()])
        info = AsyncServiceInfo(stype, f"probe.{stype}", port=9, properties={"v": "1"}, server="probe.local.")
        try:
            await (await zc.async_register_service(info, allow_name_change=True))
            async with asyncio.timeout(10):
                await seen.wait()
            return ""
        except TimeoutError:
            return "multicast on the loopback interface is not delivered here (a zeroconf probe saw nothing in 10 s)"
        finally:
            await browser.async_cancel()
            await zc.async_close()

    return asyncio.run(probe())


def test_discovered_daemons_peer_by_trust_alone_and_leave_with_a_goodbye(hub: FakeHub, tmp_path: Path, capsys: Any) -> None:
    """A and B trust each other; C trusts them but neither trusts C. With no static
    nodes at all, A and B find and use each other; C is seen but never used."""
    data = rand(3 * MiB + 5, 21)
    hub.commit("org/m", {"model.safetensors": data})
    names = ["a", "b", "c"]
    dirs = [tmp_path / n for n in names]
    keys = [node_key(d) for d in dirs]
    ports = free_ports(3)
    trust = {"a": [keys[1]], "b": [keys[0]], "c": [keys[0], keys[1]]}
    nodes = [MirrorDaemon(d, hub.url, server={"port": p}, peers={**LOOPBACK, "trust": trust[n]})
             for n, d, p in zip(names, dirs, ports)]
    try:
        for n in nodes:
            n.start()
        a, b, _ = nodes
        try:
            _wait("A and B see each other up", lambda: (_peer(dirs[0], keys[1]) or {}).get("state") == "up"
                  and (_peer(dirs[1], keys[0]) or {}).get("state") == "up")
        except TimeoutError:
            why = _mdns_on_loopback_works()
            if why:
                pytest.skip(f"mDNS discovery cannot be tested in this sandbox: {why}")
            raise AssertionError(f"A and B did not discover each other: A={_state(dirs[0])} B={_state(dirs[1])}\n"
                                 + "\n".join(a.log[-20:]))
        peer_b = _peer(dirs[0], keys[1])
        assert peer_b is not None and peer_b["source"] == "discovered" and peer_b["url"] == b.url
        # C was found too, but trust never comes from discovery.
        _wait("A sees C untrusted", lambda: (_peer(dirs[0], keys[2]) or {}).get("state") == "untrusted")
        _wait("C is refused by A", lambda: any(p["url"] == a.url and p["state"] == "refused"
                                               for p in _state(dirs[2]).get("peers", [])))
        # `mirror peers --json` shows the daemon's table.
        code, out, _ = run_cli(capsys, "peers", "--json", "--config", str(a.config_path))
        shown = {p["key"]: p for p in json.loads(out)["peers"]}
        assert code == 0 and shown[keys[1]]["state"] == "up" and shown[keys[2]]["state"] == "untrusted"
        assert shown[keys[2]]["source"] == "discovered" and shown[keys[2]]["reason"] == "key not trusted"

        # A discovered peer is used: one upstream copy serves both A and B.
        url = "/org/m/resolve/main/model.safetensors"
        hub.reset_counters()
        assert raw(a.url + url)[2] == data
        assert raw(b.url + url)[2] == data
        assert hub.bytes_sent_for(sha256(data)) == len(data)

        # B says goodbye when it stops: A drops it without waiting for a timeout.
        assert b.stop() == 0
        _wait("A drops B", lambda: all(p["url"] != b.url for p in _state(dirs[0]).get("peers", [])))
        assert any("LAN discovery: found" in line for line in a.log)
    finally:
        for n in nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.stop()


def test_txt_records_that_are_not_a_mirror_v1_announcement_are_ignored() -> None:
    key = "ab" * 32
    assert parse_txt({b"v": b"1", b"key": key.encode(), b"url": b"http://10.0.0.2:8090/"}) == (key, "http://10.0.0.2:8090")
    assert parse_txt({b"v": b"2", b"key": key.encode(), b"url": b"http://10.0.0.2:8090"}) is None
    assert parse_txt({b"v": b"1", b"key": b"nope", b"url": b"http://10.0.0.2:8090"}) is None
    assert parse_txt({b"v": b"1", b"key": key.encode(), b"url": b"http://10.0.0.2:8090/x?y"}) is None
    assert parse_txt({b"v": b"1", b"key": key.encode(), b"url": None}) is None


def test_discovery_interfaces_must_be_addresses(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[peers]\ndiscovery = true\ndiscovery_interfaces = ["127.0.0.1", "fd00::2"]\n')
    assert load(cfg, env={}).peers.discovery_interfaces == ("127.0.0.1", "fd00::2")
    cfg.write_text('[peers]\ndiscovery_interfaces = ["eth0"]\n')
    with pytest.raises(ConfigError, match=r"peers\.discovery_interfaces\[0\].*'eth0'"):
        load(cfg, env={})
