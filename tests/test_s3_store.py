"""`[store] backend = "s3"`: the bucket is the durable store, the data dir a bounded
read-through cache (store/cached.py). In process: the cache stays under its size, least
recently used copies go first; a read of an uncached chunk is one GET (no HEAD); a bucket
that is down leaves local copies readable, fails writes with StorageError and keeps
nothing; a damaged local copy is quarantined without losing the bucket's good one. With
the daemon (two starts): huggingface_hub downloads, a restart with an emptied cache
refills from the bucket with 0 upstream bytes, `mirror verify` passes, and with the
bucket down the daemon serves what it holds and fetches the rest upstream; no
credential in its log."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hubenv import MiB, rand, raw, sha256  # isort: skip

from huggingface_hub import hf_hub_download

from mirror import config
from mirror.errors import BucketUnavailable, ConfigError, StorageError
from mirror.node import open_node
from mirror.s3.client import S3Client
from mirror.s3.url import S3Url
from mirror.store.cached import CachedBackend
from mirror.store.chunkstore import ChunkStore, chunk_id_of
from mirror.store.codec import Codec
from mirror.store.layout import open_layout
from mirror.store.localfs import LocalBackend
from mirror.store.s3backend import S3Backend
from tests.daemon import MirrorDaemon
from tests.fakehub import FakeHub
from tests.s3env import ACCESS_KEY, CREDENTIALS, SECRET_KEY, FaultProxy, MotoS3


def frame(i: int, size: int = 100_000) -> tuple[str, bytes]:
    raw = rand(size, i)
    return chunk_id_of(raw), Codec().encode(raw, compress=False)


def cached(moto: MotoS3, tmp: Path, endpoint: str, limit: int, bucket: str | None = None) -> CachedBackend:
    client = S3Client(S3Url(bucket or moto.bucket("cache"), "m"), moto.settings(endpoint, retries=1, timeout=2.0),
                      credentials=CREDENTIALS, cooldown=0.2)
    return CachedBackend(S3Backend(client), LocalBackend(open_layout(tmp / "data")), limit)


def local_ids(tmp: Path) -> set[str]:
    return set(LocalBackend(open_layout(tmp / "data")).list())


def test_cache_is_bounded_least_recently_used_first(moto_s3: MotoS3, tmp_path: Path) -> None:
    chunks = [frame(i) for i in range(6)]
    size = len(chunks[0][1])
    with FaultProxy(moto_s3.url) as proxy:
        cache = cached(moto_s3, tmp_path, proxy.url, limit=3 * size)
        for cid, fr in chunks[:3]:
            assert cache.put(cid, fr)
        assert local_ids(tmp_path) == {c for c, _ in chunks[:3]}
        cache.get(chunks[0][0])  # chunk 0 is now the most recent
        for cid, fr in chunks[3:5]:
            cache.put(cid, fr)
        assert local_ids(tmp_path) == {chunks[0][0], chunks[3][0], chunks[4][0]}
        assert cache.cached_bytes() == 3 * size
        # Every chunk reads back; an evicted one costs one GET and comes back as a copy.
        proxy.clear()
        assert cache.get(chunks[1][0]) == chunks[1][1]
        assert (proxy.count("GET"), proxy.count("HEAD")) == (1, 0)
        assert chunks[1][0] in local_ids(tmp_path) and cache.cached_bytes() <= 3 * size
        assert cache.get(chunks[1][0], 10, 20) == chunks[1][1][10:30] and proxy.count() == 1  # local now
        # The bucket holds every chunk; a new process rebuilds its index from the files.
        assert sorted(cache.list()) == sorted(c for c, _ in chunks[:5])
        again = cached(moto_s3, tmp_path, proxy.url, limit=3 * size, bucket=cache.durable.client.url.bucket)
        assert again.cached_bytes() == 3 * size


def test_a_read_through_the_store_is_one_get(moto_s3: MotoS3, tmp_path: Path) -> None:
    """The issue's request budget: no per-chunk HEAD when reading."""
    raw = rand(300_000, 7)
    with FaultProxy(moto_s3.url) as proxy:
        writer = cached(moto_s3, tmp_path / "a", proxy.url, limit=10 * MiB)
        cid = ChunkStore(writer, tmp_path / "a", tmp_path / "a").put_raw(raw).chunk_id
        (tmp_path / "b").mkdir()
        reader = cached(moto_s3, tmp_path / "b", proxy.url, limit=10 * MiB, bucket=writer.durable.client.url.bucket)
        store = ChunkStore(reader, tmp_path / "b", tmp_path / "b")
        proxy.clear()
        assert bytes(store.read(cid)) == raw
        assert (proxy.count("GET"), proxy.count("HEAD"), proxy.count()) == (1, 0, 1)
        assert bytes(store.read(cid)) == raw and proxy.count() == 1  # then the local copy


def test_bucket_down_local_copies_serve_writes_fail_and_keep_nothing(moto_s3: MotoS3, tmp_path: Path) -> None:
    (kept, kept_frame), (remote, remote_frame), (new, new_frame) = frame(1), frame(2), frame(3)
    with FaultProxy(moto_s3.url) as proxy:
        cache = cached(moto_s3, tmp_path, proxy.url, limit=10 * MiB)
        cache.put(kept, kept_frame)
        cache.put(remote, remote_frame)
        cache.drop_cached(remote)
        proxy.fail(10_000, 503, "SlowDown")
        assert cache.stat(kept) is not None and cache.get(kept) == kept_frame
        assert cache.stat(remote) is None  # not readable now: a reader goes to other origins
        with pytest.raises(BucketUnavailable, match="503"):
            cache.get(remote)
        with pytest.raises(StorageError, match="503"):
            cache.put(new, new_frame)
        assert new not in local_ids(tmp_path)
        proxy.clear()
        time.sleep(0.3)  # the client's cooldown
        assert cache.get(remote) == remote_frame and cache.put(new, new_frame) is True


def test_a_damaged_local_copy_is_quarantined_and_the_bucket_copy_kept(moto_s3: MotoS3, tmp_path: Path) -> None:
    raw = rand(200_000, 9)
    cache = cached(moto_s3, tmp_path, moto_s3.url, limit=10 * MiB)
    (tmp_path / "q").mkdir()
    store = ChunkStore(cache, tmp_path, tmp_path / "q", compress=False)
    cid = store.put_raw(raw).chunk_id
    path = cache.local.layout.chunk_path(cid)
    damaged = bytearray(path.read_bytes())
    damaged[5000] ^= 1
    path.write_bytes(bytes(damaged))
    with pytest.raises(Exception, match="blake3"):
        store.read(cid)
    assert store.quarantine(cid) is True
    assert (tmp_path / "q" / cid).read_bytes() == bytes(damaged)
    assert store.has(cid) and bytes(store.read(cid)) == raw  # from the bucket, cached again
    # A chunk bad in the bucket too is quarantined everywhere.
    path = cache.local.layout.chunk_path(cid)
    assert path.exists()
    cache.durable.client.put(f"chunks/{cid[:2]}/{cid}", bytes(damaged), create=False)
    cache.drop_cached(cid)
    assert store.quarantine(cid) is True and not store.has(cid)


def _bucket_node_config(moto: MotoS3, tmp_path: Path, hint: str, mode: int = 0o600) -> tuple[config.Config, Path]:
    """A config for a node whose chunk store is a new bucket, with its credentials in an
    AWS-format file of `mode` (the file is returned too)."""
    bucket = moto.bucket(hint)
    creds = tmp_path / "s3-credentials"
    creds.write_text(f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n")
    creds.chmod(mode)
    cfg = config.load(env={}, overrides={
        "store": {"data_dir": str(tmp_path / "data"), "backend": "s3", "url": f"s3://{bucket}/n", "cache_size": "1M"},
        "s3": {"endpoint": moto.url, "region": "us-east-1", "credentials_file": str(creds)}})
    return cfg, creds


async def test_node_opens_on_a_bucket_with_a_credentials_file(moto_s3: MotoS3, tmp_path: Path) -> None:
    cfg, creds = _bucket_node_config(moto_s3, tmp_path, "node", mode=0o640)
    with pytest.raises(ConfigError, match="chmod 600") as err:
        await open_node(cfg)
    assert SECRET_KEY not in str(err.value) and not (tmp_path / "data").exists()  # refused before anything opens
    creds.chmod(0o600)
    node = await open_node(cfg)
    try:
        assert isinstance(node.store.backend, CachedBackend)
        raw = rand(3 * MiB, 5)
        put = node.store.put_raw(raw)
        assert f"n/chunks/{put.chunk_id[:2]}/{put.chunk_id}" in moto_s3.keys(S3Url.parse(cfg.store.url, "url").bucket)
        node.store.backend.drop_cached(put.chunk_id)  # type: ignore[attr-defined]
        assert bytes(node.store.read(put.chunk_id)) == raw
    finally:
        await node.close()


# --- the daemon ------------------------------------------------------------------------


def _cli(config: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("MIRROR_", "AWS_"))}
    e.update(env)
    return subprocess.run([sys.executable, "-m", "mirror", *argv, "--config", str(config)], capture_output=True,
                          text=True, env=e, timeout=120)


def _wait_stored(config: Path, env: dict[str, str], n: int) -> None:
    """Until `n` contents are stored (a fill is ingested just after it is served)."""
    deadline = time.monotonic() + 120
    while True:
        proc = _cli(config, env, "stats", "--json")
        assert proc.returncode == 0, proc.stderr
        if int(json.loads(proc.stdout)["files"]) >= n:
            return
        assert time.monotonic() < deadline, "the daemon did not store the files"
        time.sleep(0.3)


# Credentials from the environment (obstore's default chain); nothing in the config.
ENV = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}


def _bucket_daemon(data: Path, hub: FakeHub, bucket: str, proxy: FaultProxy, retries: int) -> MirrorDaemon:
    """A daemon whose chunk store is `bucket` (through `proxy`), with a 64 MiB cache."""
    return MirrorDaemon(data, hub.url, env=ENV,
                        store={"backend": "s3", "url": f"s3://{bucket}/mirror", "cache_size": "64M"},
                        s3={"endpoint": proxy.url, "region": "us-east-1", "retries": retries, "timeout": 5.0})


def _restart_with_empty_cache(m: MirrorDaemon) -> None:
    """Stop, lose the cache (a new disk for chunks; catalog and keys stay), start."""
    m.stop()
    shutil.rmtree(m.data_dir / "chunks")
    (m.data_dir / "chunks").mkdir()
    m.start()


def test_daemon_on_a_bucket_refills_from_it_and_rides_out_an_outage(hub: FakeHub, moto_s3: MotoS3, tmp_path: Path) -> None:
    one, two = rand(5 * MiB + 11, 21), rand(3 * MiB + 7, 22)
    hub.commit("org/m", {"model.safetensors": one, "extra.bin": two})
    bucket = moto_s3.bucket("daemon")
    env = ENV
    with FaultProxy(moto_s3.url) as proxy:
        m = _bucket_daemon(tmp_path / "data", hub, bucket, proxy, retries=1)
        assert SECRET_KEY not in m.config_path.read_text()

        def pull(path: str, client: str) -> bytes:
            return Path(hf_hub_download("org/m", path, endpoint=m.url, cache_dir=tmp_path / client)).read_bytes()

        try:
            m.start()
            assert pull("model.safetensors", "c1") == one
            _wait_stored(m.config_path, env, 1)
            chunks = [k for k in moto_s3.keys(bucket) if k.startswith("mirror/chunks/")]
            assert chunks and "mirror/FORMAT" in moto_s3.keys(bucket)
            hub.reset_counters()
            _restart_with_empty_cache(m)
            proxy.clear()
            assert pull("model.safetensors", "c2") == one
            assert hub.bytes_sent_for(sha256(one)) == 0  # every byte from the bucket
            # A stored file's chunks are vouched for without a HEAD each (store/cached.py):
            # one GET per uncached chunk, nothing more.
            assert not [r for r in proxy.requests if r[0] == "HEAD" and "/chunks/" in r[1]], proxy.requests
            # No chunk written again (the node publishes its reference set at start: mirror/s3/refs.py).
            assert proxy.count("GET") >= len(chunks)
            assert not [r for r in proxy.requests if r[0] == "PUT" and "/chunks/" in r[1]], proxy.requests
            verify = _cli(m.config_path, env, "verify", "--json")
            assert verify.returncode == 0 and json.loads(verify.stdout)["ok"] is True, verify.stdout + verify.stderr
            # The bucket goes down: what the node holds is served, the rest comes from upstream.
            proxy.fail(10**6, 503, "SlowDown")
            assert pull("model.safetensors", "c3") == one
            assert hub.bytes_sent_for(sha256(one)) == 0
            assert pull("extra.bin", "c3") == two
            assert hub.bytes_sent_for(sha256(two)) == len(two)
            deadline = time.monotonic() + 30
            while not any("ingest of org/m extra.bin stopped" in line for line in m.log):
                assert time.monotonic() < deadline, m.log[-20:]
                time.sleep(0.2)
            assert any("object storage" in line and "503" in line for line in m.log)
            # A failed bucket write is not a full disk: no space relief (eviction and GC of
            # local copies) is started for it (resolve/fetcher.py `_relieve`).
            time.sleep(2.0)
            assert not [line for line in m.log if "space relief" in line], m.log[-20:]
            assert m.proc is not None and m.proc.poll() is None
        finally:
            if m.proc is not None and m.proc.poll() is None:
                m.stop()
    for line in m.log:
        assert SECRET_KEY not in line and ACCESS_KEY not in line, line


def test_a_bucket_that_stops_answering_mid_file_hands_the_stream_to_upstream(hub: FakeHub, moto_s3: MotoS3,
                                                                           tmp_path: Path) -> None:
    """A stored file whose chunks are only in the bucket is served without a HEAD per
    chunk (store/cached.py `vouches_for`); when the bucket stops answering, the same
    response goes on from upstream, uncached, instead of ending short."""
    body = rand(4 * MiB + 9, 23)
    hub.commit("org/o", {"model.safetensors": body})
    bucket = moto_s3.bucket("outage")
    with FaultProxy(moto_s3.url) as proxy:
        m = _bucket_daemon(tmp_path / "data", hub, bucket, proxy, retries=0)
        url = "/org/o/resolve/main/model.safetensors"
        try:
            m.start()
            assert raw(m.url + url)[2] == body
            _wait_stored(m.config_path, ENV, 1)
            _restart_with_empty_cache(m)  # only the bucket holds the chunks now
            proxy.clear()
            proxy.fail(10**6, 503, "SlowDown", method="GET", path="/chunks/")  # the bucket answers the rest
            hub.reset_counters()
            status, _h, got = raw(m.url + url)
            assert status == 200 and got == body  # one response, whole
            assert hub.bytes_sent_for(sha256(body)) > 0  # the bytes came from upstream
            assert any("going on with sha256:" in line and "from other origins uncached" in line for line in m.log), \
                m.log[-20:]
            assert not [r for r in proxy.requests if r[0] == "HEAD" and "/chunks/" in r[1]], proxy.requests
            assert m.proc is not None and m.proc.poll() is None
        finally:
            if m.proc is not None and m.proc.poll() is None:
                m.stop()


async def test_lifecycle_rounds_on_a_bucket_backed_node_with_the_default_watermarks(moto_s3: MotoS3,
                                                                                   tmp_path: Path) -> None:
    """The default watermarks are shares of a local volume ("90%"); a bucket has none.
    Eviction then does nothing and says why, and the daemon's round goes on to GC (which
    publishes this node's references to the bucket), instead of failing at eviction
    every round."""
    cfg, _creds = _bucket_node_config(moto_s3, tmp_path, "rounds")
    assert cfg.lifecycle.high_watermark.endswith("%")  # the defaults
    node = await open_node(cfg)
    try:
        rep = await node.lifecycle.evictor.evict()
        assert rep.evicted == [] and "bucket" in rep.note and "[store] cache_size" in rep.note, rep
        out = await node.lifecycle.run_once()
        assert out["gc"].bucket is not None  # the round reached GC, and GC the bucket's collection
    finally:
        await node.close()
