"""A victim node among lying peers (threat-model §3.3, P1-P3, P5, P6a/b; issue 9 item 8).

One victim daemon is configured with one adversarial peer per fault (tests/evilpeer.py),
each a trusted key that claims to hold one file of the fake Hub and misbehaves in its
own way, with honest material from a real node's data directory (a `mirror pull`).
For every fault: the client gets the right bytes (`hf_hub_download`), the victim stores
exactly the file (its stored manifest and chunks, read back through the peer API, and
`mirror verify`), the liar is marked down in `peers.json` with the reason, and a
refused manifest is followed by no chunk request at all. Penalties last the whole module
(`down_for`), so the liars of earlier tests stay out of later ones. The chunk liars and
the manifest of P1 are signed by the honest node's key, which the victim trusts.

Two more: a trusted key that signs a lie only the file digest can tell (T9), and an
honest peer SIGKILLed while the victim follows its fill.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pytest

from tests.hubenv import MiB, rand, sha256  # isort: skip

from huggingface_hub import hf_hub_download

from mirror.keys import NodeKey
from mirror.peers.membership import rendezvous_score
from mirror.store.chunker import cut
from mirror.store.layout import open_layout
from tests.clihelp import clean_env
from tests.daemon import MirrorDaemon
from tests.evilpeer import CHUNK_FAULTS, MANIFEST_FAULTS, EvilPeer, Material, new_key
from tests.fakehub import FakeHub
from tests.peerenv import PeerSite, node_key
from tests.peerprobe import is_stored, revoke, stored_copy, wait_peer

REPO = "org/faults"
TRICKLED = [f"trickle-{i}.bin" for i in range(3)]
LIE = "forged-content.bin"
# What the victim says about each liar (peers.json "reason").
REASONS = {
    "untrusted-signer": r"signer [0-9a-f]{16} is not trusted",
    "field-changed": r"does not verify",
    "non-canonical": r"not a v1 manifest",
    "revoked-signer": r"signer [0-9a-f]{16} is not trusted",
    "signer-header-swapped": r"does not verify",
    "other-identity": r"manifest is for sha256:[0-9a-f]{64}, not sha256:",
    "other-size": r"is for \d+ bytes, the listing says \d+",
    "random-bytes": r"from peer .*: chunk [0-9a-f]{16}: ",
    "bit-flip": r"does not match its blake3 id",
    "truncated": r"payload is \d+ bytes, header says \d+",
    "substituted": r"frame holds \d+ bytes, expected|does not match its blake3 id",
    "bomb-declared-size": r"zstd frame declares 1099511627776 bytes",
    "bomb-window": r"zstd window 2147483648 too large",
    "bomb-unsized": r"zstd frame declares -1 bytes",
    "trailing-frame": r"zstd: .*unused data",
    "overlong-record": r"chunk record of \d+ bytes \(largest frame \d+\)",
    "endless-record": r"bad frame magic|where .* was asked|ended early",
    "trickle": r"timed out",
}
ONE_SHOT = [f for f in (*MANIFEST_FAULTS, *CHUNK_FAULTS) if f != "trickle"]


def chunky(size: int, seed: int, at_least: int = 3) -> bytes:
    """Random bytes of about `size` that the store's chunker cuts in `at_least` chunks or more."""
    for j in range(100):
        data = rand(size + j, seed * 1000 + j)
        if sum(1 for _ in cut(data)) >= at_least:
            return data
    raise AssertionError("no seed gives enough chunks")


def identity(data: bytes) -> str:
    return "sha256:" + sha256(data)


def mirror_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mirror", *argv], capture_output=True, text=True, env=clean_env(), timeout=300)


@dataclass
class Site:
    tmp: Path
    hub: FakeHub
    victim: MirrorDaemon
    victim_pub: str
    probe: NodeKey
    evil: dict[str, EvilPeer]
    files: dict[str, bytes]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("peer-faults")
    files = {f"{f}.bin": chunky(5 * MiB // 2, i) for i, f in enumerate(ONE_SHOT)}
    files |= {name: rand(200 * 1024 + i, 400 + i) for i, name in enumerate(TRICKLED)}
    files[LIE] = chunky(5 * MiB // 2, 99)
    with FakeHub.running() as hub:
        hub.commit(REPO, files)
        # The honest material: a real node's store after a pull.
        seed = MirrorDaemon(tmp / "seed", hub.url)
        proc = mirror_cli("pull", REPO, "--config", str(seed.config_path), "--quiet")
        assert proc.returncode == 0, proc.stderr
        seed_pub = node_key(seed.data_dir)
        material = Material.load(seed.data_dir, [identity(d) for d in files.values()])
        revoked, probe = new_key(), new_key()
        evil = {f: EvilPeer(material, f, holds=[identity(files[f"{f}.bin"])], bad_index=2, revoked=revoked)
                for f in ONE_SHOT}
        evil["trickle"] = EvilPeer(material, "trickle", holds=[identity(files[n]) for n in TRICKLED], bad_index=None)
        evil["forged-content"] = EvilPeer(material, "forged-content", holds=[identity(files[LIE])])
        stranger = EvilPeer(material)  # honest, holds everything, and its key is not trusted
        evil["stranger"] = stranger
        try:
            for e in evil.values():
                e.start()
            peers = {
                "nodes": [e.url for e in evil.values()],
                "trust": [e.key.public_hex for e in evil.values() if e is not stranger]
                + [seed_pub, revoked.public_hex, probe.public_hex],
                # One batch of two chunks at a time: the good first batch of a chunk liar
                # is kept before its bad second one is asked for.
                "health_interval": 0.5, "down_for": 600.0, "timeout": 1.5, "transfer_timeout": 3.0, "batch": 2, "parallel": 1,
            }
            victim = MirrorDaemon(tmp / "victim", hub.url, peers=peers)
            victim_pub = node_key(victim.data_dir)
            revoke(victim.data_dir, revoked.public_hex)  # trusted by config, revoked in the catalog
            hub.reset_counters()
            victim.start()
            try:
                for e in evil.values():
                    state = "untrusted" if e is stranger else "up"
                    wait_peer(victim, e.url, lambda p, s=state: p["state"] == s, f"was {state}")
                yield Site(tmp, hub, victim, victim_pub, probe, evil, files)
            finally:
                victim.stop()
        finally:
            for e in evil.values():
                e.stop()


def get_what_arrives(url: str) -> tuple[int, bytes]:
    """A GET that returns what arrived even when the server aborts mid-body."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("GET", u.path)
        resp, got = conn.getresponse(), b""
        try:
            while piece := resp.read1(1 << 20):
                got += piece
        except (http.client.IncompleteRead, ConnectionError):
            pass
        return resp.status, got
    finally:
        conn.close()


def download(site: Site, name: str) -> bytes:
    return Path(hf_hub_download(REPO, name, endpoint=site.victim.url, cache_dir=site.tmp / "clients" / name)).read_bytes()


@pytest.mark.parametrize("fault", ONE_SHOT)
def test_lying_peer_is_refused_marked_down_and_the_file_served(site: Site, fault: str) -> None:
    evil, name = site.evil[fault], f"{fault}.bin"
    data = site.files[name]
    assert download(site, name) == data
    down = wait_peer(site.victim, evil.url, lambda p: p["state"] == "down", "was marked down")
    assert re.search(REASONS[fault], down["reason"]), down
    assert down["down_for"] > 60
    assert evil.count("manifest") == 1
    upstream = site.hub.bytes_sent_for(sha256(data))
    if fault in MANIFEST_FAULTS:
        # Refused before any chunk was asked: everything came from upstream.
        assert evil.count("chunks") == 0
        assert upstream == len(data)
    else:
        # The first batch (chunks 0-1) was good and kept; upstream gave the rest.
        assert evil.count("chunks") >= 1
        assert 0 < upstream < len(data)
    assert stored_copy(site.victim, site.victim_pub, site.probe, identity(data)) == data


def test_trickling_peer_is_cut_by_the_batch_deadline_and_struck_out(site: Site) -> None:
    # P6a: each batch of the trickling peer is cut at its deadline (timeout + size at the
    # minimum rate) and the file comes from upstream; three failures in a row, with the
    # peer's health checks answering promptly in between, mark it down.
    evil = site.evil["trickle"]
    for i, name in enumerate(TRICKLED, 1):
        assert download(site, name) == site.files[name]
        assert site.hub.bytes_sent_for(sha256(site.files[name])) == len(site.files[name])
        assert evil.count("chunks") == i
    down = wait_peer(site.victim, evil.url, lambda p: p["state"] == "down", "was marked down")
    assert re.search(REASONS["trickle"], down["reason"]) and down["failures"] >= 3, down
    for name in TRICKLED:
        assert stored_copy(site.victim, site.victim_pub, site.probe, identity(site.files[name])) == site.files[name]


def test_trusted_key_that_lies_is_never_served_whole_nor_kept_and_is_marked_down(site: Site) -> None:
    # T9, a compromised trusted key: a manifest of the right identity and size, validly
    # signed, listing other content whose chunks all match their ids. Only the whole-file
    # digest tells: the client never gets the lie whole (the held-back tail and an aborted
    # connection), nothing is kept, the liar is marked down with a hint to revoke its key,
    # and the next request is served from upstream without asking it.
    evil, data = site.evil["forged-content"], site.files[LIE]
    status, body = get_what_arrives(f"{site.victim.url}/{REPO}/resolve/main/{LIE}")
    assert status == 200 and len(body) < len(data)
    assert evil.count("chunks") >= 1
    assert any("integrity:" in line and LIE in line for line in site.victim.log)
    assert not is_stored(site.victim, site.victim_pub, site.probe, identity(data))
    down = wait_peer(site.victim, evil.url, lambda p: p["state"] == "down", "was marked down")
    assert "failed its hash" in down["reason"]
    assert any(f"mirror keys revoke {evil.key.public_hex}" in line for line in site.victim.log)
    chunks = evil.count("chunks")
    assert download(site, LIE) == data
    assert evil.count("chunks") == chunks
    assert stored_copy(site.victim, site.victim_pub, site.probe, identity(data)) == data
    # Revoking the key makes it untrusted for good.
    revoke(site.victim.data_dir, evil.key.public_hex)
    wait_peer(site.victim, evil.url, lambda p: p["state"] == "untrusted", "was dropped as untrusted")


def test_peer_with_an_untrusted_key_is_never_asked_for_anything(site: Site) -> None:
    stranger = site.evil["stranger"]
    name = TRICKLED[0]
    assert download(site, name) == site.files[name]
    assert stranger.count("hello") >= 1
    assert wait_peer(site.victim, stranger.url, lambda p: p["state"] == "untrusted", "stayed untrusted")["reason"]
    assert [stranger.count(e) for e in ("have", "manifest", "chunks", "fill")] == [0, 0, 0, 0]


def test_victim_store_verifies_after_the_faults(site: Site) -> None:
    for f in ONE_SHOT:
        data = site.files[f"{f}.bin"]
        assert download(site, f"{f}.bin") == data  # served from the store now (or fetched if run alone)
        stored_copy(site.victim, site.victim_pub, site.probe, identity(data))
    proc = mirror_cli("verify", "--config", str(site.victim.config_path), "--json")
    rep = json.loads(proc.stdout)
    assert proc.returncode == 0 and rep["ok"], (rep, proc.stderr)
    assert rep["bad_chunks"] == [] and rep["missing_chunks"] == [] and rep["quarantined"] == 0
    assert rep["manifests_checked"] >= len(ONE_SHOT)
    assert not any((site.victim.data_dir / "quarantine").iterdir())


# --- an honest peer killed mid-transfer --------------------------------------------------------


def test_peer_killed_mid_transfer_the_victim_finishes_from_upstream(hub: FakeHub, tmp_path: Path) -> None:
    site = PeerSite(tmp_path, hub, 2, start=False)
    # A file node 0 owns (rendezvous): node 1 asks node 0 to fetch it and follows that fill.
    base = rand(16 * MiB, 21)
    data = next(d for d in (base + bytes([i]) for i in range(64))
                if rendezvous_score(identity(d), site.keys[0]) > rendezvous_score(identity(d), site.keys[1]))
    hub.commit("org/big", {"model.safetensors": data})
    hub.bandwidth = 16 * MiB
    site.start()
    try:
        site.wait_all_up()
        got: list[bytes] = []
        client = threading.Thread(target=lambda: got.append(Path(hf_hub_download(
            "org/big", "model.safetensors", endpoint=site[1].url, cache_dir=tmp_path / "c1")).read_bytes()))
        client.start()
        for _ in range(600):  # until node 0's fill, followed by node 1, is a third in
            if hub.bytes_sent_for(sha256(data)) >= len(data) // 3:
                break
            time.sleep(0.02)
        site[0].kill()
        client.join(120)
        assert got and got[0] == data
        # Node 1 went on upstream where the followed stream broke, not from the start.
        assert len(data) < hub.bytes_sent_for(sha256(data)) < 2 * len(data)
        assert any("following" in line and "stopped at" in line for line in site[1].log)
        wait_peer(site[1], site[0].url, lambda p: p["failures"] >= 1, "was counted as failed")
        # Node 1 stored the whole file (read back as node 0, the key it trusts).
        node0 = NodeKey.load_or_create(open_layout(site.dirs[0]).keys)
        assert stored_copy(site[1], site.keys[1], node0, identity(data)) == data
    finally:
        site.stop()
