"""Several nodes sharing one bucket (mirror/s3/gc.py, refs.py, manifests.py, origin.py).

In process (two nodes on two data dirs and one bucket, the collector driven with a
FakeClock): GC by one node never removes what the other references, including a chunk
written during the collection and an old unreferenced chunk another node starts to rely
on during it, while an unreferenced one goes; a held lease stops a second collector and
a stale one is taken over; an interrupted collection leaves every referenced chunk
readable and a later one finishes; `mirror gc --forget-node` removes a gone node's
reference sets. With two daemons (two starts): B fills a file A stored
from the bucket with 0 upstream bytes; a manifest in the bucket signed by an untrusted
key is refused and B goes upstream; no credential in any log."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path

import pytest

from tests.hubenv import MiB, rand, sha256  # isort: skip

from huggingface_hub import hf_hub_download

from mirror import config
from mirror.clock import FakeClock
from mirror.keys import NodeKey
from mirror.manifest import ChunkRef, Manifest
from mirror.node import Node, open_node
from mirror.s3 import gc as bucket_gc
from mirror.s3.client import S3Client
from mirror.s3.gc import LEASE_TTL, SKEW, BucketCollector
from mirror.s3.layout import chunk_key, manifest_key
from mirror.s3.manifests import BucketManifests
from mirror.s3.refs import RefSet
from mirror.s3.refs import encode as encode_refs
from mirror.store.chunkstore import chunk_id_of
from mirror.store.codec import Codec
from mirror.store.layout import open_layout
from tests.clihelp import run_cli, run_json, write_config
from tests.daemon import MirrorDaemon
from tests.fakehub import FakeHub
from tests.s3env import ACCESS_KEY, SECRET_KEY, MotoS3

PREFIX = "shared"


def _creds(tmp: Path) -> Path:
    path = tmp / "s3-credentials"
    path.write_text(f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n")
    path.chmod(0o600)
    return path


async def _node(moto: MotoS3, bucket: str, tmp: Path, name: str, clock: FakeClock) -> Node:
    cfg = config.load(env={}, overrides={
        "store": {"data_dir": str(tmp / name), "backend": "s3", "url": f"s3://{bucket}/{PREFIX}", "cache_size": "64M"},
        "s3": {"endpoint": moto.url, "region": "us-east-1", "credentials_file": str(_creds(tmp))}})
    return await open_node(cfg, clock=clock)


def _client(node: Node) -> S3Client:
    return node.store.backend.durable.client  # type: ignore[attr-defined, no-any-return]


def _identity(data: bytes) -> str:
    return "sha256:" + sha256(data)


async def _ingest(node: Node, data: bytes) -> Manifest:
    man = await node.ingestor.ingest_bytes(data, _identity(data))
    assert node.bucket_refs is not None and node.bucket_manifests is not None
    await asyncio.to_thread(node.bucket_refs.flush)
    await asyncio.to_thread(node.bucket_manifests.wait)
    return man


def _in_bucket(moto: MotoS3, bucket: str, cid: str) -> bool:
    return f"{PREFIX}/{chunk_key(cid)}" in moto.keys(bucket)


def _orphan(client: S3Client, seed: int) -> str:
    raw = rand(30_000, seed)
    cid = chunk_id_of(raw)
    assert client.put(chunk_key(cid), Codec().encode(raw, compress=False))
    return cid


def _now(clock: FakeClock) -> None:
    """The nodes' clock a little ahead of the objects written so far (LastModified is
    given to the second; the collector's SKEW is 0 in these tests)."""
    clock.advance(max(0.0, time.time() + 2 - clock.now()))


def _readable(node: Node, man: Manifest) -> None:
    """Every chunk of `man` read from the bucket (local copies dropped first)."""
    for c in man.chunks:
        node.store.backend.drop_cached(c.chunk_id)  # type: ignore[attr-defined]
        assert len(node.store.read(c.chunk_id, c.length)) == c.length


async def test_gc_by_one_node_never_removes_what_another_references(moto_s3: MotoS3, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bucket = moto_s3.bucket("gc")
    clock = FakeClock(time.time())
    a = await _node(moto_s3, bucket, tmp_path, "a", clock)
    b = await _node(moto_s3, bucket, tmp_path, "b", clock)
    try:
        x, y = rand(3 * MiB, 1), rand(2 * MiB, 2)
        revived_raw = rand(40_000, 3)  # one chunk: a content of one chunk has the chunk's id
        man_x = await _ingest(a, x)
        man_xb = await _ingest(b, x)  # B stores X too: its puts find A's chunks
        man_y = await _ingest(b, y)
        revived, gone = chunk_id_of(revived_raw), _orphan(_client(a), 11)
        assert _client(a).put(chunk_key(revived), Codec().encode(revived_raw, compress=False))
        # A drops X (its local GC would); it still publishes what it references.
        await a.catalog.lifecycle.delete_manifests([man_x.identity])
        a.catalog.content.forget(man_x.identity)
        await a.bucket_refs.publish_full()  # type: ignore[union-attr]
        await b.bucket_refs.publish_full()  # type: ignore[union-attr]
        # A's local GC with the shared bucket: local copies only, then the first round.
        _now(clock)
        rep = await a.collector.gc(policy=dataclasses.replace(a.collector.policy, gc_grace=0.0))
        assert rep.bucket is not None and rep.bucket.deleted_chunks == 0 and rep.bucket.candidates == 2
        assert all(_in_bucket(moto_s3, bucket, c.chunk_id) for c in man_x.chunks)
        assert not any((tmp_path / "a" / "chunks").rglob(man_x.chunks[0].chunk_id))  # A's copy went

        clock.advance(5)
        loop = asyncio.get_running_loop()
        written: list[str] = []

        def during() -> None:
            # While the collection runs: a new chunk lands, and B stores a file made of
            # the old unreferenced chunk `revived` (its put finds the object there).
            written.append(_orphan(_client(b), 12))
            asyncio.run_coroutine_threadsafe(_ingest(b, revived_raw), loop).result(60)

        collector = BucketCollector(_client(a), a.key.public_hex, clock, skew=0)
        second = await asyncio.to_thread(collector.collect, 0.0, before_delete=during)
        assert second.deleted_chunks == 1 and second.kept_rereferenced == 1, second
        assert not _in_bucket(moto_s3, bucket, gone)  # the unreferenced one went: the test can fail
        assert _in_bucket(moto_s3, bucket, revived) and _in_bucket(moto_s3, bucket, written[0])
        assert f"{PREFIX}/{manifest_key(man_x.identity)}" in moto_s3.keys(bucket)  # B references X
        for man in (man_xb, man_y):
            _readable(b, man)
        _readable(b, Manifest(_identity(revived_raw), len(revived_raw), (ChunkRef(revived, len(revived_raw)),)))
    finally:
        await a.close()
        await b.close()
    for rec in caplog.records:
        assert SECRET_KEY not in rec.getMessage() and ACCESS_KEY not in rec.getMessage()


async def test_lease_and_an_interrupted_collection(moto_s3: MotoS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = moto_s3.bucket("lease")
    clock = FakeClock(time.time())
    a = await _node(moto_s3, bucket, tmp_path, "a", clock)
    try:
        client = _client(a)
        first = BucketCollector(client, "a" * 64, clock, skew=0)
        second = BucketCollector(client, "b" * 64, clock, skew=0)
        holder, token = first.acquire()
        assert not holder and token
        assert second.collect(0.0).busy == "a" * 64  # a held lease stops a second collector
        clock.advance(LEASE_TTL + SKEW + 1)  # the holder died: its lease expired
        holder2, token2 = second.acquire()
        assert token2 and first._check(token)[1] == ""  # the first sees it lost the lease
        second.release(token2)
        assert second.read_lease() is None

        man = await _ingest(a, rand(3 * MiB, 5))
        await a.bucket_refs.publish_full()  # type: ignore[union-attr]
        orphans = [_orphan(client, 20 + i) for i in range(3)]
        _now(clock)
        assert first.collect(0.0).candidates == 3
        clock.advance(5)
        monkeypatch.setattr(bucket_gc, "DELETE_BATCH", 1)
        calls = []

        def crash() -> None:
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("collector killed mid-deletion")

        with pytest.raises(RuntimeError):
            first.collect(0.0, before_delete=crash)
        assert first.read_lease() is None  # released on the way out
        assert sum(_in_bucket(moto_s3, bucket, o) for o in orphans) == 2  # one went before the crash
        _readable(a, man)  # everything referenced is readable
        assert first.collect(0.0).deleted_chunks == 2  # a later collection finishes
        _readable(a, man)
    finally:
        await a.close()


# --- two daemons -----------------------------------------------------------------------


def test_a_second_daemon_fills_from_the_bucket_and_refuses_untrusted_manifests(hub: FakeHub, moto_s3: MotoS3,
                                                                               tmp_path: Path) -> None:
    one, two = rand(4 * MiB + 3, 31), rand(2 * MiB + 5, 32)
    hub.commit("org/m", {"model.safetensors": one, "other.bin": two})
    bucket = moto_s3.bucket("daemons")
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    key_a = NodeKey.load_or_create(open_layout(tmp_path / "a").keys)
    store = {"backend": "s3", "url": f"s3://{bucket}/{PREFIX}", "cache_size": "64M"}
    s3 = {"endpoint": moto_s3.url, "region": "us-east-1"}
    # An untrusted key signs a manifest of `two` in the bucket, its chunks stored too.
    (tmp_path / "rogue").mkdir()
    rogue = NodeKey.load_or_create(tmp_path / "rogue")
    client = moto_s3.client(bucket, PREFIX)
    raw_cid = chunk_id_of(two)
    client.put(chunk_key(raw_cid), Codec().encode(two, compress=False))
    BucketManifests(client).publish(Manifest(_identity(two), len(two), (ChunkRef(raw_cid, len(two)),)).signed(rogue))

    a = MirrorDaemon(tmp_path / "a", hub.url, env=env, store=dict(store), s3=dict(s3))
    b = MirrorDaemon(tmp_path / "b", hub.url, env=env, store=dict(store), s3=dict(s3), peers={"trust": [key_a.public_hex]})

    def pull(m: MirrorDaemon, path: str, client_dir: str) -> bytes:
        return Path(hf_hub_download("org/m", path, endpoint=m.url, cache_dir=tmp_path / client_dir)).read_bytes()

    try:
        a.start()
        assert pull(a, "model.safetensors", "ca") == one
        deadline = time.monotonic() + 60
        while f"{PREFIX}/{manifest_key(_identity(one))}" not in moto_s3.keys(bucket):
            assert time.monotonic() < deadline, "A did not publish its manifest"
            time.sleep(0.2)
        a.stop()
        hub.reset_counters()
        b.start()
        assert pull(b, "model.safetensors", "cb") == one
        assert hub.bytes_sent_for(sha256(one)) == 0  # every byte from the bucket
        assert pull(b, "other.bin", "cb") == two
        assert hub.bytes_sent_for(sha256(two)) == len(two)  # the rogue manifest was refused
        assert any("is refused" in line and "not trusted" in line for line in b.log), b.log[-20:]
    finally:
        for m in (a, b):
            if m.proc is not None and m.proc.poll() is None:
                m.stop()
    for line in a.log + b.log:
        assert SECRET_KEY not in line and ACCESS_KEY not in line, line


def test_gc_forget_node_removes_a_gone_nodes_references(moto_s3: MotoS3, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    bucket = moto_s3.bucket("forget")
    gone = "c" * 64
    moto_s3.client(bucket, PREFIX).put(f"refs/{gone}/full", encode_refs(
        RefSet(gone, "full", time.time(), "-", frozenset(), frozenset())), create=False)
    cfg = write_config(tmp_path / "m.toml", tmp_path / "data", "http://127.0.0.1:9",
                       store={"backend": "s3", "url": f"s3://{bucket}/{PREFIX}", "cache_size": "1M"},
                       s3={"endpoint": moto_s3.url, "region": "us-east-1", "credentials_file": str(_creds(tmp_path))})
    open_layout(tmp_path / "data")
    code, out = run_json(capsys, "gc", "--forget-node", gone, "--config", str(cfg))
    assert code == 0 and out == {"node": gone, "reference_sets_removed": 1}
    assert not [k for k in moto_s3.keys(bucket) if "/refs/" in k]
    code, _out, err = run_cli(capsys, "gc", "--forget-node", "not-a-key", "--config", str(cfg))
    assert code != 0 and "not a node key" in err
