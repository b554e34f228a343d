"""The peer API refuses whoever is not a trusted, unrevoked peer (threat-model P6c, T17;
issue 9 item 2), and the same daemon's Hub API goes on serving its clients.

One real daemon holds a public, a private and a gated file; requests to `/_peer/v1/*`
are made by hand (tests/peerprobe.py `signed_call`): unsigned, stale, replayed, signed
by an untrusted key, tampered after signing, or by a key revoked while the daemon runs.
Each is refused with the status and `X-Error-Code` of peers/auth.py before anything is
looked up, so a LAN client learns nothing of gated or private content through it. A
correctly signed request by a trusted key is the control: it is answered.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.hubenv import MiB, TOKEN, rand, sha256  # isort: skip

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import HfHubHTTPError

from mirror.keys import NodeKey
from mirror.peers.auth import check_response
from tests.daemon import MirrorDaemon
from tests.evilpeer import new_key
from tests.fakehub import FakeHub
from tests.peerenv import node_key
from tests.peerprobe import revoke, signed_call, stored_copy

FILES = {"org/pub": rand(MiB + 1, 1), "org/priv": rand(MiB + 2, 2), "org/gated": rand(MiB + 3, 3)}


def ident(data: bytes) -> str:
    return "sha256:" + sha256(data)


@dataclass
class Node:
    tmp: Path
    hub: FakeHub
    daemon: MirrorDaemon
    pub: str
    trusted: NodeKey
    revokable: NodeKey  # trusted by config too, until a test revokes it
    chunks: dict[str, list[str]]  # repo -> chunk ids of its file


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("peer-auth")
    trusted, revokable = new_key(), new_key()
    with FakeHub.running() as hub:
        hub.add_token(TOKEN, "alice")
        hub.create_repo("org/priv", private=True, readers=[TOKEN])
        hub.create_repo("org/gated", gated="manual", readers=[TOKEN])
        for repo, data in FILES.items():
            hub.commit(repo, {"model.bin": data})
        d = MirrorDaemon(tmp / "node", hub.url, peers={"trust": [trusted.public_hex, revokable.public_hex]})
        pub = node_key(d.data_dir)
        d.start()
        try:
            chunks = {}
            for repo, data in FILES.items():
                p = hf_hub_download(repo, "model.bin", endpoint=d.url, cache_dir=tmp / "c", token=TOKEN)
                assert Path(p).read_bytes() == data
                assert stored_copy(d, pub, trusted, ident(data)) == data
                _s, _h, body, _ = signed_call(d, trusted, "GET", f"/manifest/{ident(data)}")
                chunks[repo] = [line.split(" ")[0] for line in body.decode().splitlines()[4:]]
            yield Node(tmp, hub, d, pub, trusted, revokable, chunks)
        finally:
            d.stop()


def refused(resp: tuple[int, dict[str, str], bytes, dict[str, str]], status: int, code: str) -> bytes:
    st, h, body, _ = resp
    assert (st, h.get("X-Error-Code")) == (status, code), (st, h, body)
    assert json.loads(body)["error"]
    return body


def requests(n: Node, repo: str = "org/priv") -> list[tuple[str, str, bytes]]:
    """One request of every peer endpoint, about the file of `repo`."""
    data, chunks = FILES[repo], n.chunks[repo]
    target = {"repo_type": "model", "repo_id": repo, "commit": "0" * 40, "path": "model.bin", "oid": "0" * 40,
              "size": len(data), "lfs_sha256": sha256(data), "start": 0}
    return [
        ("GET", "/hello", b""),
        ("POST", "/have", json.dumps({"identities": [ident(data)], "chunks": chunks}).encode()),
        ("GET", f"/manifest/{ident(data)}", b""),
        ("POST", "/chunks", json.dumps({"ids": chunks}).encode()),
        ("POST", "/fill", json.dumps(target).encode()),
        ("GET", "/changes?since=0&limit=10", b""),
        ("GET", f"/revision?repo_type=model&repo_id={repo}&commit={'0' * 40}", b""),
        ("GET", f"/ref?repo_type=model&repo_id={repo}&revision=main", b""),
        ("GET", "/channels?after=0&releases=0", b""),
    ]


def test_trusted_signed_request_is_answered_and_the_answer_signed(node: Node) -> None:
    st, h, body, sent = signed_call(node.daemon, node.trusted, "GET", "/hello")
    assert st == 200 and json.loads(body)["public_key"] == node.pub
    assert check_response(h, sent["X-Mirror-Peer-Nonce"], body) == node.pub


def test_unsigned_and_malformed_requests_are_refused_on_every_endpoint(node: Node) -> None:
    for repo, data in FILES.items():  # public content too: the peer API is for peers only
        for method, path, body in requests(node, repo):
            got = refused(signed_call(node.daemon, None, method, path, body), 401, "PeerUnsigned")
            assert data[:32] not in got and b"model-mirror manifest" not in got
    _s, _h, _b, good = signed_call(node.daemon, node.trusted, "GET", "/hello")
    for name, bad in (("X-Mirror-Peer-Key", "zz" * 32), ("X-Mirror-Peer-Time", "+1"), ("X-Mirror-Peer-Nonce", "abc"),
                      ("X-Mirror-Peer-Signature", "00" * 63)):
        refused(signed_call(node.daemon, None, "GET", "/hello", headers={**good, name: bad}), 401, "PeerUnsigned")


def test_stale_and_future_requests_are_refused(node: Node) -> None:
    for skew in (-3600, +3600):
        refused(signed_call(node.daemon, node.trusted, "GET", "/hello", now=time.time() + skew), 401, "PeerStale")


def test_replayed_request_is_refused(node: Node) -> None:
    method, path, body = requests(node)[1]  # POST /have
    st, _h, _b, sent = signed_call(node.daemon, node.trusted, method, path, body)
    assert st == 200
    refused(signed_call(node.daemon, None, method, path, body, headers=sent), 401, "PeerReplay")


def test_untrusted_key_is_refused(node: Node) -> None:
    for method, path, body in requests(node):
        got = refused(signed_call(node.daemon, new_key(), method, path, body), 403, "PeerUntrusted")
        assert FILES["org/priv"][:32] not in got


def test_tampered_body_path_or_host_is_refused(node: Node) -> None:
    d, k = node.daemon, node.trusted
    pub, priv = ident(FILES["org/pub"]), ident(FILES["org/priv"])
    # Signed for the public file's manifest, sent for the private one's.
    refused(signed_call(d, k, "GET", f"/manifest/{priv}", sign_path=f"/manifest/{pub}"), 401, "PeerBadSignature")
    # Signed for the public file's chunks, sent with the private file's.
    body = json.dumps({"ids": node.chunks["org/priv"]}).encode()
    refused(signed_call(d, k, "POST", "/chunks", body, sign_body=json.dumps({"ids": node.chunks["org/pub"]}).encode()),
            401, "PeerBadSignature")
    # Signed for this node, sent again under another Host.
    sent = signed_call(d, k, "GET", "/hello")[3]
    refused(signed_call(d, None, "GET", "/hello", headers={**sent, "Host": "10.0.0.9:8090"}), 401, "PeerBadSignature")


def test_key_revoked_while_running_is_refused(node: Node) -> None:
    d, key = node.daemon, node.revokable
    assert signed_call(d, key, "GET", "/hello")[0] == 200
    revoke(d.data_dir, key.public_hex)  # trusted by config; the running daemon re-reads its catalog
    for _ in range(200):
        st, h, _b, _ = signed_call(d, key, "GET", "/hello")
        if st != 200:
            break
        time.sleep(0.05)
    assert (st, h.get("X-Error-Code")) == (403, "PeerRevoked")
    refused(signed_call(d, key, "POST", "/chunks", json.dumps({"ids": node.chunks["org/pub"]}).encode()), 403, "PeerRevoked")
    assert signed_call(d, node.trusted, "GET", "/hello")[0] == 200


def test_private_and_gated_content_never_reaches_an_unsigned_client(node: Node) -> None:
    for repo in ("org/priv", "org/gated"):
        data, chunks = FILES[repo], node.chunks[repo]
        # The control: the node holds them and gives them to a trusted peer.
        st, h, body, _ = signed_call(node.daemon, node.trusted, "GET", f"/manifest/{ident(data)}")
        assert st == 200 and body.startswith(b"model-mirror manifest v1\n")
        st, _h, frames, _ = signed_call(node.daemon, node.trusted, "POST", "/chunks", json.dumps({"ids": chunks}).encode())
        assert st == 200 and len(frames) > len(data)
        # A LAN client without a node key: refused, not a byte of either.
        for method, path, body in (("GET", f"/manifest/{ident(data)}", b""),
                                   ("POST", "/chunks", json.dumps({"ids": chunks}).encode())):
            st, h, got, _ = signed_call(node.daemon, None, method, path, body)
            assert st == 401 and len(got) < 512, (st, got)
            assert "X-Mirror-Manifest-Signature" not in h and data[:32] not in got and data[-32:] not in got


def test_hub_api_of_the_same_daemon_still_serves_clients(node: Node) -> None:
    for _ in range(3):  # after a burst of refused peer requests
        for method, path, body in requests(node):
            signed_call(node.daemon, new_key(), method, path, body)
    c = node.tmp / "after"
    assert Path(hf_hub_download("org/pub", "model.bin", endpoint=node.daemon.url, cache_dir=c)).read_bytes() == FILES["org/pub"]
    p = hf_hub_download("org/priv", "model.bin", endpoint=node.daemon.url, cache_dir=c, token=TOKEN)
    assert Path(p).read_bytes() == FILES["org/priv"]
    with pytest.raises(HfHubHTTPError):
        hf_hub_download("org/gated", "model.bin", endpoint=node.daemon.url, cache_dir=node.tmp / "anon")
    assert not [line for line in node.daemon.log if "Traceback" in line]
