"""The test side of a node's peer surface: what a node thinks of its peers, what it stores
as read back through its peer API, raw signed requests, and revocation in its catalog.

- `peer_state` / `wait_peer`: a node's view of one peer, from `<data_dir>/peers.json`
  (what `mirror peers` shows), waited for with a bound.
- `stored_copy`: the file a node stores for an identity, read by a key it trusts with the
  project's own `PeerClient`; its manifest must carry the node's valid signature and every
  frame must decode to bytes that hash to their chunk id, so a bad chunk kept by a victim
  cannot pass unseen.
- `signed_call`: one request to `/_peer/v1/...` signed as `sign_request` does, with knobs
  to make it stale, tampered or replayed (the headers are returned for a replay).
- `revoke`: what `mirror keys revoke` records, written to a node's catalog (it may run).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Callable

from mirror.catalog import Catalog
from mirror.clock import SystemClock
from mirror.config import PeersConfig
from mirror.keys import NodeKey
from mirror.peers import wire
from mirror.peers.auth import sign_request
from mirror.peers.client import PeerClient
from mirror.store.chunkstore import chunk_id_of
from mirror.store.codec import Codec
from mirror.store.layout import open_layout
from tests.daemon import MirrorDaemon
from tests.hubenv import raw


def peer_state(node: MirrorDaemon, url: str) -> dict[str, Any]:
    try:
        st = json.loads((node.data_dir / "peers.json").read_text())
    except (OSError, ValueError):
        return {}
    return next((p for p in st.get("peers", []) if p["url"] == url), {})


def wait_peer(node: MirrorDaemon, url: str, pred: Callable[[dict[str, Any]], bool], what: str,
              timeout: float = 20.0) -> dict[str, Any]:
    """The node's view of peer `url` once `pred` holds (bounded)."""
    for _ in range(int(timeout / 0.05)):
        p = peer_state(node, url)
        if p and pred(p):
            return p
        time.sleep(0.05)
    raise AssertionError(f"peer {url} never {what}: {peer_state(node, url)}\n" + "\n".join(node.log[-15:]))


async def _stored(node: MirrorDaemon, node_pub: str, probe: NodeKey, identity: str) -> bytes | None:
    client = PeerClient(probe, PeersConfig(timeout=10, transfer_timeout=10), SystemClock())
    await client.start()
    try:
        ids, _ = await client.have(node.url, node_pub, [identity])
        if ids.get(identity, {}).get("state") != "stored":
            return None
        man = await client.manifest(node.url, node_pub, identity, trusted=frozenset({node_pub}), size=None)
        codec, parts = Codec(), {}
        lengths = {c.chunk_id: c.length for c in man.chunks}
        async for cid, frame in client.chunks(node.url, node_pub, list(lengths), man.size):
            assert frame is not None, f"the stored manifest lists chunk {cid} the node lacks"
            data = bytes(codec.decode(frame, lengths[cid]))
            assert chunk_id_of(data) == cid, f"stored chunk {cid} does not hash to its id"
            parts[cid] = data
        return b"".join(parts[c.chunk_id] for c in man.chunks)
    finally:
        await client.close()


def is_stored(node: MirrorDaemon, node_pub: str, probe: NodeKey, identity: str) -> bool:
    return asyncio.run(_stored(node, node_pub, probe, identity)) is not None


def stored_copy(node: MirrorDaemon, node_pub: str, probe: NodeKey, identity: str, timeout: float = 30.0) -> bytes:
    """The file `identity` as the node stores it, once stored (bounded wait for the ingest)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = asyncio.run(_stored(node, node_pub, probe, identity))
        if got is not None:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{identity} was never stored")


def signed_call(node: MirrorDaemon, key: NodeKey | None, method: str, path_qs: str, body: bytes = b"", *,
                now: float | None = None, sign_path: str | None = None, sign_body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes, dict[str, str]]:
    """One peer API request (`path_qs` under wire.PREFIX) -> (status, response headers,
    body, request headers). Unsigned when `key` is None; `sign_path`/`sign_body` sign
    other bytes than those sent; `headers` are sent as given (a replay)."""
    host = node.url.removeprefix("http://")
    if headers is None:
        headers = {"Host": host}
        if key is not None:
            to = "" if path_qs == "/hello" else (node.data_dir / "keys" / "node.pub").read_text().strip()
            headers |= sign_request(key, method, host, wire.PREFIX + (sign_path or path_qs),
                                    body if sign_body is None else sign_body, time.time() if now is None else now, to)
        if body:
            headers["Content-Type"] = "application/json"
    status, rh, data = raw(node.url + wire.PREFIX + path_qs, method=method, headers=headers, data=body or None)
    return status, rh, data, headers


async def _revoke(data_dir: Path, key: str) -> None:
    catalog = await Catalog.open(open_layout(data_dir).catalog_db)
    try:
        await catalog.meta.revoke(key)
    finally:
        await catalog.close()


def revoke(data_dir: Path, key: str) -> None:
    """Revoke `key` in a node's catalog, as `mirror keys revoke` records it; a running
    node sees it within its trust store's refresh (auth.REFRESH)."""
    asyncio.run(_revoke(data_dir, key))
