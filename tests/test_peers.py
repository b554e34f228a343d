"""LAN peers end to end: three real daemons on loopback ports, a fake Hub that counts the
bytes it sends, and the real huggingface_hub client (issue 9, design.md §6).

Each test checks what a site pays upstream: a file a peer holds costs nothing, three
nodes missing one file at once cost one copy, a node that lost its data refills from
its peers, and with upstream down a node serves what only a peer has.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.hubenv import MiB, TOKEN, rand, raw, sha256  # isort: skip

import pytest
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

from tests.fakehub import FakeHub
from tests.fakehub.state import FileSource
from tests.peerenv import PeerSite, wait_stored


def _pull(site: PeerSite, i: int, tmp: Path, path: str = "model.safetensors", repo: str = "org/m", **kw: object) -> bytes:
    p = hf_hub_download(repo, path, endpoint=site[i].url, cache_dir=tmp / f"client{i}", **kw)  # type: ignore[arg-type]
    return Path(p).read_bytes()


def _sha256_of(src: FileSource) -> str:
    import hashlib

    h = hashlib.sha256()
    for off in range(0, src.size, 8 * MiB):
        h.update(src.read(off, min(8 * MiB, src.size - off)))
    return h.hexdigest()


def test_second_node_fills_from_a_peer_at_no_upstream_cost(hub: FakeHub, tmp_path: Path) -> None:
    data = rand(24 * MiB + 3, 1)
    hub.commit("org/m", {"model.safetensors": data})
    site = PeerSite(tmp_path, hub, 3)
    try:
        site.wait_all_up()
        # A is the file's owner (it fetches upstream itself), B another node.
        a = site.owner_of(f"sha256:{sha256(data)}")
        b = (a + 1) % 3
        assert _pull(site, a, tmp_path) == data
        wait_stored(site, a, f"sha256:{sha256(data)}")
        hub.reset_counters()
        assert _pull(site, b, tmp_path) == data
        assert hub.bytes_sent_for(sha256(data)) == 0
        fills = [line for line in site[b].log if "fetched org/m model.safetensors from peer" in line]
        assert fills, site[b].log[-20:]
        # B keeps the frames it received (verified, no re-compression) and they verify.
        wait_stored(site, b, f"sha256:{sha256(data)}")
        assert any("as the" in line and "verified chunks it came in" in line for line in site[b].log)
        # B's view of A counts what it received (peers.json, rewritten each round).
        deadline = time.monotonic() + 10
        received = 0
        while time.monotonic() < deadline and received == 0:
            received = {p["url"]: p["bytes_in"] for p in site.state(b)["peers"]}[site[a].url]
            time.sleep(0.2)
        assert received >= len(data) * 0.5  # frames, compressed or not
    finally:
        site.stop()


def test_three_cold_nodes_at_once_cost_one_upstream_copy(hub: FakeHub, tmp_path: Path) -> None:
    size = 1 << 30
    src = FileSource.random(size, seed=3)
    hub.commit("org/big", {"model.safetensors": src})
    digest = _sha256_of(src)
    hub.bandwidth = 400 * MiB  # all three overlap the one upstream fetch
    site = PeerSite(tmp_path, hub, 3)
    try:
        site.wait_all_up()
        results: dict[int, int] = {}

        def pull(i: int) -> None:
            p = hf_hub_download("org/big", "model.safetensors", endpoint=site[i].url, cache_dir=tmp_path / f"c{i}")
            results[i] = Path(p).stat().st_size
            Path(p).unlink()

        threads = [threading.Thread(target=pull, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert results == {0: size, 1: size, 2: size}
        sent = hub.bytes_sent_for(digest)
        fills = [line for i in range(3) for line in site[i].log if "mirror.fill" in line or "mirror.peers" in line]
        assert sent == size, f"upstream sent {sent / size:.2f}x the file:\n" + "\n".join(fills)
    finally:
        site.stop()


def test_node_restarted_empty_refills_from_its_peers(hub: FakeHub, tmp_path: Path) -> None:
    data = rand(12 * MiB + 5, 4)
    small = b'{"architectures": ["Bert"]}\n'
    hub.commit("org/m", {"model.safetensors": data, "config.json": small})
    site = PeerSite(tmp_path, hub, 3)
    try:
        site.wait_all_up()
        identity = f"sha256:{sha256(data)}"
        for i in range(3):
            assert _pull(site, i, tmp_path) == data
            assert _pull(site, i, tmp_path, "config.json") == small
        for i in range(3):
            wait_stored(site, i, identity)
        # Node 2 loses its data directory (a new disk); its key is restored from backup.
        site[2].stop()
        import shutil

        key = (site.dirs[2] / "keys" / "node.key").read_bytes()
        shutil.rmtree(site.dirs[2])
        (site.dirs[2] / "keys").mkdir(parents=True)
        (site.dirs[2] / "keys" / "node.key").write_bytes(key)
        (site.dirs[2] / "keys" / "node.key").chmod(0o600)
        site[2].start()
        site.wait_up(2)
        hub.reset_counters()
        assert _pull(site, 2, tmp_path / "fresh") == data
        assert _pull(site, 2, tmp_path / "fresh", "config.json") == small
        # Metadata comes from upstream (it answers); every file byte from the peers.
        assert hub.bytes_sent_for(sha256(data)) == 0
        assert hub.count("GET", origin="cdn") == 0
    finally:
        site.stop()


def test_upstream_down_a_node_serves_a_file_only_its_peer_has(hub: FakeHub, tmp_path: Path) -> None:
    data = rand(6 * MiB + 1, 5)
    hub.commit("org/m", {"model.safetensors": data})
    site = PeerSite(tmp_path, hub, 2)
    try:
        site.wait_all_up()
        assert _pull(site, 0, tmp_path) == data
        wait_stored(site, 0, f"sha256:{sha256(data)}")
        hub.down()
        # Node 1 never saw the repo: the ref, the listing and the bytes come from node 0.
        status, headers, body = raw(site[1].url + "/org/m/resolve/main/model.safetensors")
        assert status == 200 and body == data
        assert headers.get("X-Mirror-Stale") == "1"
        assert _pull(site, 1, tmp_path) == data
        # A repo no peer knows is still an error, not a guess.
        status, _h, _b = raw(site[1].url + "/org/other/resolve/main/model.safetensors")
        assert status in (502, 504)
    finally:
        hub.up()
        site.stop()


def test_gated_file_stays_gated_across_peers(hub: FakeHub, tmp_path: Path) -> None:
    data = rand(5 * MiB + 7, 6)
    hub.create_repo("org/gated", gated="manual")
    hub.add_token(TOKEN)
    hub.grant("org/gated", TOKEN)
    hub.commit("org/gated", {"model.safetensors": data})
    site = PeerSite(tmp_path, hub, 2)
    try:
        site.wait_all_up()
        assert _pull(site, 0, tmp_path, repo="org/gated", token=TOKEN) == data
        wait_stored(site, 0, f"sha256:{sha256(data)}")
        hub.reset_counters()
        # Node 1 without a token: refused as upstream would, though a peer holds the bytes.
        with pytest.raises((GatedRepoError, HfHubHTTPError)):
            _pull(site, 1, tmp_path / "anon", repo="org/gated")
        status, _h, body = raw(site[1].url + "/org/gated/resolve/main/model.safetensors")
        assert status in (401, 403) and data[:64] not in body
        # With a granted token: served, the bytes from the peer, upstream only asked.
        assert _pull(site, 1, tmp_path / "user", repo="org/gated", token=TOKEN) == data
        assert hub.bytes_sent_for(sha256(data)) < 64 << 10  # at most an access probe's first byte
        # The peer API refuses a client (unsigned) whatever it asks for.
        status, headers, body = raw(site[0].url + f"/_peer/v1/manifest/sha256:{sha256(data)}")
        assert status == 401 and headers.get("X-Error-Code") == "PeerUnsigned"
    finally:
        site.stop()


def _one_holder(hub: FakeHub, tmp_path: Path, data: bytes) -> tuple[PeerSite, int, int]:
    """Two nodes, batches of 2 chunks; A (the file's owner) has pulled and stored the
    file, B has not. Returns (site, a, b)."""
    hub.commit("org/m", {"model.safetensors": data})
    site = PeerSite(tmp_path, hub, 2, peers={"batch": 2})
    try:
        site.wait_all_up()
        a = site.owner_of(f"sha256:{sha256(data)}")
        assert _pull(site, a, tmp_path) == data
        wait_stored(site, a, f"sha256:{sha256(data)}")
    except BaseException:
        site.stop()
        raise
    return site, a, 1 - a


def test_a_chunk_no_peer_delivers_comes_from_upstream_as_a_range(hub: FakeHub, tmp_path: Path) -> None:
    data = rand(40 * MiB + 9, 7)
    site, a, b = _one_holder(hub, tmp_path, data)  # A now says "stored" for a few seconds
    try:
        # One chunk goes missing on A (collected, a lost disk sector), A does not know yet.
        chunk = sorted(p for p in (site.dirs[a] / "chunks").rglob("*") if p.is_file())[3]
        chunk.unlink()
        hub.reset_counters()
        assert _pull(site, b, tmp_path) == data
        sent = hub.bytes_sent_for(sha256(data))
        ranges = [r.headers["range"] for r in hub.requests if r.origin == "cdn"]
        # Only the batch holding the missing chunk came from upstream, as one Range.
        assert 0 < sent <= 2 * (4 << 20), sent
        assert len(ranges) == 1 and ranges[0].startswith("bytes=") and not ranges[0].endswith("-"), ranges
        assert any("asking upstream for that range" in line for line in site[b].log)
    finally:
        site.stop()


def test_a_peer_sending_a_rotten_chunk_is_marked_down_and_the_file_is_served(hub: FakeHub, tmp_path: Path) -> None:
    data = rand(40 * MiB + 9, 8)
    site, a, b = _one_holder(hub, tmp_path, data)
    try:
        # One chunk on A rots on disk (A does not know: it still says it holds the file).
        chunk = sorted(p for p in (site.dirs[a] / "chunks").rglob("*") if p.is_file())[3]
        frame = bytearray(chunk.read_bytes())
        frame[-1] ^= 0x01
        chunk.write_bytes(bytes(frame))
        hub.reset_counters()
        assert _pull(site, b, tmp_path) == data
        # A lied once: it is down, and the rest of the file came from upstream.
        assert 0 < hub.bytes_sent_for(sha256(data)) < len(data)
        assert any("integrity: peer" in line for line in site[b].log)
        deadline = time.monotonic() + 10
        state = ""
        while time.monotonic() < deadline and state != "down":
            state = {p["url"]: p["state"] for p in site.state(b)["peers"]}[site[a].url]
            time.sleep(0.1)
        assert state == "down"
    finally:
        site.stop()


def test_a_request_captured_on_its_way_to_one_node_is_refused_by_another(hub: FakeHub, tmp_path: Path) -> None:
    import json as _json

    from mirror.keys import NodeKey
    from mirror.peers import wire
    from mirror.peers.auth import sign_request
    from mirror.store.layout import open_layout

    site = PeerSite(tmp_path, hub, 3)
    try:
        site.wait_all_up()
        body = _json.dumps({"identities": [], "chunks": []}).encode()
        key = NodeKey.load_or_create(open_layout(site.dirs[2]).keys)
        host0 = f"127.0.0.1:{site.ports[0]}"
        headers = sign_request(key, "POST", host0, wire.PREFIX + "/have", body, time.time(), site.keys[0])
        headers |= {"Host": host0, "Content-Type": "application/json"}
        # Replayed verbatim (same Host, nonce, signature) to node 1, which trusts node 2 too.
        status, h, _b = raw(f"http://127.0.0.1:{site.ports[1]}{wire.PREFIX}/have", "POST", headers, body)
        assert status == 401 and h.get("X-Error-Code") == "PeerBadSignature"
        # The intended node answers it.
        status, _h, _b = raw(f"http://{host0}{wire.PREFIX}/have", "POST", headers, body)
        assert status == 200
    finally:
        site.stop()
