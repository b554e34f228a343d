"""An adversarial LAN peer for the peer-fault tests (threat-model §3.3, harness H2).

`EvilPeer` is a real aiohttp server on 127.0.0.1 (its own loop in a daemon thread) that
speaks peer protocol v1 (mirror/peers/wire.py) with its own Ed25519 key. It answers
`hello` and `have` signed by that key (`sign_response`), so a victim that trusts the key
uses it, and it claims to hold the files it was given. Its material is honest: the
signed manifests and the chunk frames of a real node's data directory (`Material.load`).
It misbehaves in exactly one way, its `fault` (`honest`, the default: not at all):

Manifest faults (P2 forged, P3 wrong target), every chunk record honest:
  untrusted-signer       re-signed by a fresh key nobody trusts
  field-changed          two chunk lines swapped after signing (the signature is stale)
  non-canonical          the signed bytes re-serialised with CRLF line ends, same signature
  revoked-signer         re-signed by `revoked` (a key the victim trusts in config, then revoked)
  signer-header-swapped  signed by this peer's key, the header naming the honest signer
  other-identity         another file's manifest, validly signed by this peer's (trusted) key
  other-size             the right identity without its last chunk, validly signed
  forged-content         the right identity and size, validly signed, listing chunks of
                         other (random) content, served as valid frames: only the file's
                         digest tells (T9, a trusted key that lies)

Chunk faults (P1, P5, P6), the manifest honest; the record of chunk `bad_index` of the
file (every chunk when None) is:
  random-bytes, bit-flip, truncated (a consistent record of a frame cut short),
  substituted            another chunk's valid frame under the asked id
  bomb-declared-size     a 17-byte zstd frame declaring 1 TiB (§1.6)
  bomb-window            a zstd frame with window log 31
  bomb-unsized           32 KiB of zstd without a content size expanding to 1 GiB
  trailing-frame         the right zstd frame followed by a second one
  overlong-record        a record length past the largest frame (P6b)
  endless-record         a record of the largest frame's length, bytes streamed until cut
  trickle                the right record, one byte a second (P6a)

It never checks the victim's signatures (it is the attacker), answers `/fill` with 409
(not a fault: "fetch it upstream"), and counts every request per endpoint (`count`), so
a test can prove what the victim asked after a refusal.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import zstandard
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mirror import config as config_mod
from mirror.keys import NodeKey
from mirror.manifest import ChunkRef, Manifest
from mirror.node import open_node
from mirror.peers import wire
from mirror.peers.auth import sign_response
from mirror.store.chunkstore import MAX_FRAME, chunk_id_of
from mirror.store.codec import HEADER, MAGIC, ZSTD, Codec

MANIFEST_FAULTS = ("untrusted-signer", "field-changed", "non-canonical", "revoked-signer", "signer-header-swapped",
                   "other-identity", "other-size")
LYING_FAULTS = ("forged-content",)
CHUNK_FAULTS = ("random-bytes", "bit-flip", "truncated", "substituted", "bomb-declared-size", "bomb-window",
                "bomb-unsized", "trailing-frame", "overlong-record", "endless-record", "trickle")
ENDLESS_CAP = 64 << 20  # an endless record stops here if nobody hangs up first
TRICKLE_CAP = 120  # bytes (seconds) a trickle sends at most


def new_key() -> NodeKey:
    return NodeKey(Ed25519PrivateKey.generate())


@dataclass
class Material:
    """Honest manifests (by identity) and stored frames (by chunk id) of a real node."""

    # Not in the repr: asyncio formats the repr of a task's result, and megabytes of
    # frames take seconds to format.
    manifests: dict[str, Manifest] = field(repr=False)
    frames: dict[str, bytes] = field(repr=False)

    @classmethod
    def load(cls, data_dir: Path, identities: Iterable[str]) -> "Material":
        """Read them from a stopped node's data directory, through the node itself."""
        return asyncio.run(_load(data_dir, list(identities)))


async def _load(data_dir: Path, identities: list[str]) -> Material:
    node = await open_node(config_mod.load(env={}, overrides={"store": {"data_dir": str(data_dir)}}))
    try:
        manifests, frames = {}, {}
        for identity in identities:
            man = await node.catalog.content.get_manifest(identity)
            if man is None:
                raise RuntimeError(f"{data_dir} does not hold {identity}")
            manifests[identity] = man
            for c in man.chunks:
                frames[c.chunk_id] = node.store.read_frame(c.chunk_id)
        return Material(manifests, frames)
    finally:
        await node.close()


# --- hostile frames -----------------------------------------------------------------------------

_ZSTD_MAGIC = struct.pack("<I", 0xFD2FB528)


def mmc1(raw_len: int, zstd_payload: bytes) -> bytes:
    """A chunk frame (codec.py) of codec zstd around `zstd_payload`."""
    return HEADER.pack(MAGIC, ZSTD, 0, 0, raw_len, len(zstd_payload)) + zstd_payload


def _rle_block(n: int, last: bool) -> bytes:
    return ((n << 3) | (1 << 1) | int(last)).to_bytes(3, "little") + b"\x07"


def zstd_declaring(size: int) -> bytes:
    """17 bytes: a single-segment frame declaring `size` bytes, holding one 128 KiB RLE block."""
    return _ZSTD_MAGIC + bytes([0xE0]) + struct.pack("<Q", size) + _rle_block(128 << 10, True)


def zstd_window31(raw_len: int) -> bytes:
    """A frame of `raw_len` bytes (RLE blocks) that asks for a 2 GiB window."""
    out, left = [_ZSTD_MAGIC + bytes([0xC0, (31 - 10) << 3]) + struct.pack("<Q", raw_len)], raw_len
    while left:
        n = min(left, 128 << 10)
        left -= n
        out.append(_rle_block(n, not left))
    return b"".join(out)


@functools.cache
def zstd_unsized() -> bytes:
    """~32 KiB of zstd without a content size that expands to 1 GiB of zeros."""
    c = zstandard.ZstdCompressor(level=3, write_content_size=False).compressobj()
    zeros = bytes(1 << 20)
    return b"".join(c.compress(zeros) for _ in range(1024)) + c.flush()


# --- the peer -----------------------------------------------------------------------------------


class EvilPeer:
    def __init__(self, material: Material, fault: str = "honest", *, holds: Iterable[str] | None = None,
                 bad_index: int | None = 0, revoked: NodeKey | None = None, key: NodeKey | None = None) -> None:
        if fault not in ("honest", *MANIFEST_FAULTS, *CHUNK_FAULTS, *LYING_FAULTS):
            raise ValueError(f"unknown fault {fault}")
        if fault == "revoked-signer" and revoked is None:
            raise ValueError("revoked-signer needs the revoked key")
        self.material = material
        self.fault = fault
        self.key = key or new_key()
        self.revoked = revoked
        self.holds = set(material.manifests if holds is None else holds)
        self.bad: set[str] = set()
        for identity in self.holds:
            chunks = material.manifests[identity].chunks
            self.bad |= {c.chunk_id for i, c in enumerate(chunks) if bad_index is None or i == bad_index}
        self.frames = dict(material.frames)  # plus this peer's forged ones
        self.forged: dict[str, Manifest] = {}
        if fault == "forged-content":
            for ident in self.holds:
                self.forged[ident] = self._forge_content(material.manifests[ident])
        self.lengths = {c.chunk_id: c.length for m in material.manifests.values() for c in m.chunks}
        self.url = ""
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> "EvilPeer":
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name=f"evilpeer-{self.fault}", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), loop).result(30)
        return self

    async def _start(self) -> None:
        app = web.Application()
        p = wire.PREFIX
        app.router.add_get(f"{p}/hello", self._hello)
        app.router.add_post(f"{p}/have", self._have)
        app.router.add_get(f"{p}/manifest/{{identity}}", self._manifest)
        app.router.add_post(f"{p}/chunks", self._chunks)
        app.router.add_post(f"{p}/fill", self._fill)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._closing = True
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> "EvilPeer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what the victim asked ------------------------------------------------------------

    def count(self, endpoint: str) -> int:
        with self._lock:
            return self._counts[endpoint]

    def _seen(self, endpoint: str) -> None:
        with self._lock:
            self._counts[endpoint] += 1

    # --- handlers -------------------------------------------------------------------------

    def _signed(self, request: web.Request, obj: Any) -> web.Response:
        body = json.dumps(obj, separators=(",", ":")).encode()
        headers = sign_response(self.key, request.headers.get(wire.H_NONCE, ""), body)
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def _hello(self, request: web.Request) -> web.Response:
        self._seen("hello")
        return self._signed(request, {"protocol": wire.VERSION, "public_key": self.key.public_hex, "url": self.url,
                                      "serial": 0, "time": int(time.time())})

    async def _have(self, request: web.Request) -> web.Response:
        self._seen("have")
        body = json.loads(await request.read())
        ids = {i: {"state": "stored"} for i in body.get("identities", []) if i in self.holds}
        return self._signed(request, {"identities": ids, "chunks": [c for c in body.get("chunks", []) if c in self.frames]})

    async def _fill(self, request: web.Request) -> web.Response:
        self._seen("fill")
        return web.json_response({"error": "following a peer for that file; fetch it upstream"}, status=409,
                                 headers={"X-Error-Code": "PeerFollowing"})

    async def _manifest(self, request: web.Request) -> web.Response:
        self._seen("manifest")
        identity = request.match_info["identity"]
        if identity not in self.holds:
            return web.json_response({"error": "not here"}, status=404)
        body, signer, sig = self._forge(self.material.manifests[identity])
        return web.Response(body=body, content_type="text/plain",
                            headers={wire.H_MANIFEST_SIGNER: signer, wire.H_MANIFEST_SIG: sig.hex()})

    def _forge_content(self, man: Manifest) -> Manifest:
        """A manifest of `man`'s identity and chunk lengths over random content, signed by
        this peer's key; its frames join the material so `/chunks` serves them."""
        codec, refs = Codec(), []
        for c in man.chunks:
            raw = os.urandom(c.length)
            cid = chunk_id_of(raw)
            self.frames[cid] = codec.encode(raw, compress=False)
            refs.append(ChunkRef(cid, c.length))
        return Manifest(man.identity, man.size, tuple(refs)).signed(self.key)

    def _forge(self, man: Manifest) -> tuple[bytes, str, bytes]:
        """(bytes, signer header, signature) served for `man` under this peer's fault."""
        f = self.fault
        if f == "untrusted-signer":
            man = man.signed(new_key())
        elif f == "revoked-signer":
            assert self.revoked is not None
            man = man.signed(self.revoked)
        elif f == "field-changed":
            c = list(man.chunks)
            c[0], c[1] = c[1], c[0]
            man = Manifest(man.identity, man.size, tuple(c), man.signer, man.signature)
        elif f == "non-canonical":
            return man.canonical().replace(b"\n", b"\r\n"), man.signer, man.signature
        elif f == "signer-header-swapped":
            return man.canonical(), man.signer, self.key.sign(man.canonical())
        elif f == "other-identity":
            other = next(m for i, m in sorted(self.material.manifests.items()) if i != man.identity)
            man = other.signed(self.key)
        elif f == "forged-content":
            man = self.forged[man.identity]
        elif f == "other-size":
            c = man.chunks[:-1]
            man = Manifest(man.identity, sum(x.length for x in c), c).signed(self.key)
        return man.canonical(), man.signer, man.signature

    async def _chunks(self, request: web.Request) -> web.StreamResponse:
        self._seen("chunks")
        ids = json.loads(await request.read())["ids"]
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await resp.prepare(request)
        for cid in ids:
            frame = self.frames.get(cid)
            if frame is None:
                await resp.write(wire.chunk_record(cid, None))
            elif cid in self.bad and self.fault in CHUNK_FAULTS:
                if not await self._bad_record(resp, cid, frame):
                    return resp  # a stream that must end here (cut, or the victim hung up)
            else:
                await resp.write(wire.chunk_record(cid, frame) + frame)
        await resp.write_eof()
        return resp

    async def _bad_record(self, resp: web.StreamResponse, cid: str, frame: bytes) -> bool:
        """Write the hostile record of chunk `cid`; False when the stream must stop."""
        f, n = self.fault, self.lengths[cid]
        if f == "overlong-record":
            await resp.write(wire.RECORD.pack(bytes.fromhex(cid), MAX_FRAME + 1) + os.urandom(4096))
            return False
        if f == "endless-record":
            await resp.write(wire.RECORD.pack(bytes.fromhex(cid), MAX_FRAME))
            block = os.urandom(1 << 16)
            sent = 0
            while not self._closing and sent < ENDLESS_CAP:
                await resp.write(block)
                sent += len(block)
            return False
        if f == "trickle":
            await resp.write(wire.chunk_record(cid, frame))
            for i in range(min(len(frame), TRICKLE_CAP)):
                if self._closing:
                    break
                await resp.write(frame[i:i + 1])
                await asyncio.sleep(1.0)
            return False
        if f == "random-bytes":
            bad = os.urandom(len(frame))
        elif f == "bit-flip":
            mid = len(frame) // 2
            bad = frame[:mid] + bytes([frame[mid] ^ 0x10]) + frame[mid + 1:]
        elif f == "truncated":
            bad = frame[: len(frame) // 2]
        elif f == "substituted":
            bad = next(fr for c, fr in self.frames.items() if c != cid)
        elif f == "bomb-declared-size":
            bad = mmc1(n, zstd_declaring(1 << 40))
        elif f == "bomb-window":
            bad = mmc1(n, zstd_window31(n))
        elif f == "bomb-unsized":
            bad = mmc1(n, zstd_unsized())
        elif f == "trailing-frame":
            raw = bytes(Codec().decode(frame, n))
            z = zstandard.ZstdCompressor(write_content_size=True)
            bad = mmc1(n, z.compress(raw) + z.compress(b"and one more frame"))
        else:
            raise AssertionError(f)
        await resp.write(wire.chunk_record(cid, bad) + bad)
        return True
