"""Three cold peered nodes asked for one file at the same moment fetch it upstream once
(found by scripts/bench_peers.py): a node still asking its peers must not report its
fill as "filling", or the nodes see each other filling, follow or refuse (409) each
other, and several of them go upstream."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.hubenv import MiB, rand, raw, sha256  # isort: skip

from tests.fakehub import FakeHub
from tests.peerenv import PeerSite


def test_three_cold_nodes_at_once_fetch_upstream_once(hub: FakeHub, tmp_path: Path) -> None:
    data = rand(16 * MiB + 5, 31)
    hub.commit("org/herd", {"model.safetensors": data})
    hub.bandwidth = 32 * MiB  # the fills overlap for about half a second
    site = PeerSite(tmp_path, hub, 3)
    try:
        site.wait_all_up()
        for i in range(3):  # metadata first, so that the file requests start together
            assert raw(f"{site[i].url}/api/models/org/herd/revision/main")[0] == 200
        bodies: list[bytes] = [b""] * 3
        start = threading.Barrier(3)

        def get(i: int) -> None:
            start.wait(30)
            bodies[i] = raw(f"{site[i].url}/org/herd/resolve/main/model.safetensors")[2]

        threads = [threading.Thread(target=get, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert all(b == data for b in bodies)
        assert hub.bytes_sent_for(sha256(data)) == len(data)
        refused = [line for i in range(3) for line in site[i].log if "answered 409" in line]
        assert not refused, refused
    finally:
        site.stop()
