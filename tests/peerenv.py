"""Several real mirror daemons on loopback ports, peered with each other (LAN nodes).

`PeerSite(tmp, hub, n)` makes n data directories, creates each node's key up front (as
`mirror keys show` would), gives each node the others as `[peers] nodes` and trusts
their keys (`[peers] trust`), picks free ports, and starts the daemons. `wait_up` waits,
bounded, until a node's health checks see its peers up (read from `peers.json`, what
`mirror peers` shows). `node_tables(i, urls)` adds tables to node i's config only (a
follower's `[channels] authority`, say), given every node's URL.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any, Callable

from mirror.keys import NodeKey
from mirror.store.layout import open_layout
from tests.daemon import MirrorDaemon
from tests.fakehub import FakeHub


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def node_key(data_dir: Path) -> str:
    return NodeKey.load_or_create(open_layout(data_dir).keys).public_hex


class PeerSite:
    def __init__(self, tmp: Path, hub: FakeHub, n: int = 3, *, start: bool = True, trust_all: bool = True,
                 peers: dict[str, Any] | None = None,
                 node_tables: Callable[[int, list[str]], dict[str, dict[str, Any]]] | None = None,
                 **tables: dict[str, Any]) -> None:
        self.ports = free_ports(n)
        self.dirs = [tmp / f"node{i}" for i in range(n)]
        self.keys = [node_key(d) for d in self.dirs]
        self.nodes: list[MirrorDaemon] = []
        for i in range(n):
            others = [j for j in range(n) if j != i]
            p = {"nodes": [f"http://127.0.0.1:{self.ports[j]}" for j in others],
                 "trust": [self.keys[j] for j in others] if trust_all else [],
                 "health_interval": 0.5, "down_for": 5.0}
            p.update(peers or {})
            t = {k: dict(v) for k, v in tables.items()}
            for table, values in (node_tables(i, [f"http://127.0.0.1:{port}" for port in self.ports]) if node_tables else {}).items():
                t[table] = {**t.get(table, {}), **values}
            t.setdefault("server", {})["port"] = self.ports[i]
            t["peers"] = {**p, **t.get("peers", {})}
            self.nodes.append(MirrorDaemon(self.dirs[i], hub.url, **t))
        if start:
            self.start()

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.stop()

    def __getitem__(self, i: int) -> MirrorDaemon:
        return self.nodes[i]

    def owner_of(self, identity: str) -> int:
        """The node that fetches `identity` upstream for the site when all are up."""
        from mirror.peers.membership import rendezvous_score

        return max(range(len(self.nodes)), key=lambda i: rendezvous_score(identity, self.keys[i]))

    def state(self, i: int) -> dict[str, Any]:
        try:
            return json.loads((self.dirs[i] / "peers.json").read_text())
        except (OSError, ValueError):
            return {}

    def wait_up(self, i: int, count: int | None = None, timeout: float = 20.0) -> dict[str, Any]:
        """Wait until node i sees `count` peers up (default: all others)."""
        want = len(self.nodes) - 1 if count is None else count
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.state(i)
            if sum(1 for p in st.get("peers", []) if p["state"] == "up") >= want:
                return st
            time.sleep(0.1)
        raise AssertionError(f"node {i} did not see {want} peers up: {self.state(i)}\n" + "\n".join(self.nodes[i].log[-20:]))

    def wait_all_up(self) -> None:
        for i in range(len(self.nodes)):
            self.wait_up(i)


def signed(site: PeerSite, to: int, as_node: int, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """A peer request to node `to`, signed with node `as_node`'s key (as that node would)."""
    from mirror.peers import wire
    from mirror.peers.auth import sign_request
    from tests.hubenv import raw

    key = NodeKey.load_or_create(open_layout(site.dirs[as_node]).keys)
    host = f"127.0.0.1:{site.ports[to]}"
    headers = sign_request(key, method, host, wire.PREFIX + path, body, time.time(), "" if path == "/hello" else site.keys[to])
    if body:
        headers["Content-Type"] = "application/json"
    return raw(f"http://{host}{wire.PREFIX}{path}", method=method, headers=headers, data=body or None)


def wait_stored(site: PeerSite, i: int, identity: str, timeout: float = 60.0) -> None:
    """Wait until node i holds `identity` in its chunk store (its fill is ingested)."""
    body = json.dumps({"identities": [identity], "chunks": []}).encode()
    asker = (i + 1) % len(site.nodes)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _h, out = signed(site, i, asker, "POST", "/have", body)
        if status == 200 and json.loads(out)["identities"].get(identity, {}).get("state") == "stored":
            return
        time.sleep(0.1)
    raise AssertionError(f"node {i} did not store {identity}")
