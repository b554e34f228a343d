"""`[archive] url`: the lifecycle's archive packs in a bucket (store/s3packs.py), with one
daemon start: a pack overwritten in the bucket between its upload and its read-back
check fails the archive run and leaves every hot copy; then the archive goes to the
bucket (nothing in the local archive dir), is read back byte-exact through the Hub
routes (huggingface_hub and a Range request) in at most one GET per 8 MiB of pack and no
HEAD, with 0 upstream bytes; `mirror verify` is clean; a thaw brings the chunks back."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.hubenv import MiB, rand, raw, sha256  # isort: skip

from huggingface_hub import hf_hub_download

from tests.daemon import MirrorDaemon
from tests.fakehub import FakeHub
from tests.s3env import ACCESS_KEY, SECRET_KEY, FaultProxy, MotoS3
from mirror.store.s3packs import WINDOW

ENV = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}


def _cli(m: MirrorDaemon, *argv: str) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("MIRROR_", "AWS_"))}
    e.update(ENV)
    return subprocess.run([sys.executable, "-m", "mirror", *argv, "--config", str(m.config_path)], capture_output=True,
                          text=True, env=e, timeout=180)


def _hot_files(data: Path) -> int:
    return sum(len(files) for _d, _s, files in os.walk(data / "chunks"))


def test_archive_to_a_bucket_verified_read_in_ranges_and_thawed(hub: FakeHub, moto_s3: MotoS3, tmp_path: Path) -> None:
    body = rand(20 * MiB + 123, 31)  # incompressible: the pack holds it whole, > 2 upload parts
    commit = hub.commit("org/cold", {"model.safetensors": body})
    bucket = moto_s3.bucket("archive")
    data = tmp_path / "data"
    with FaultProxy(moto_s3.url) as proxy:
        m = MirrorDaemon(data, hub.url, env=ENV, archive={"url": f"s3://{bucket}/arch"}, lifecycle={"keep_revisions": 0},
                         s3={"endpoint": proxy.url, "region": "us-east-1", "retries": 1, "timeout": 10.0})

        def pull(client: str) -> bytes:
            return Path(hf_hub_download("org/cold", "model.safetensors", endpoint=m.url,
                                        cache_dir=tmp_path / client)).read_bytes()

        try:
            m.start()
            assert pull("c1") == body
            deadline = time.monotonic() + 120
            while json.loads(_cli(m, "stats", "--json").stdout or "{}").get("files", 0) < 1:  # ingested after serving
                assert time.monotonic() < deadline, "the file was not stored"
                time.sleep(0.3)
            hot = _hot_files(data)
            assert hot >= 5

            # 1. The pack is overwritten in the bucket right after its upload completes:
            #    the read-back check fails the run and no hot copy goes.
            def overwrite() -> None:
                direct = moto_s3.client(bucket, "arch")
                for key in moto_s3.keys(bucket):
                    if key.startswith("arch/packs/"):
                        got = direct.get(key[len("arch/"):])
                        assert got is not None
                        bad = bytearray(got.data)
                        bad[len(bad) // 2] ^= 0xFF
                        direct.put(key[len("arch/"):], bytes(bad), create=False)

            proxy.after("POST", "uploadId=", overwrite)  # CompleteMultipartUpload
            failed = _cli(m, "archive", "--older-than", "0s")
            assert failed.returncode != 0 and "does not read back as written" in failed.stderr, failed.stdout + failed.stderr
            assert _hot_files(data) == hot
            assert not [k for k in moto_s3.keys(bucket) if k.startswith("arch/packs/")]  # the bad object is removed
            assert pull("c1b") == body

            # 2. The archive goes to the bucket; uploaded once (bytes sent ~ the pack's size).
            proxy.clear()
            done = _cli(m, "archive", "--older-than", "0s", "--json")
            assert done.returncode == 0, done.stdout + done.stderr
            packs = [k for k in moto_s3.keys(bucket) if k.startswith("arch/packs/")]
            assert len(packs) == 1 and _hot_files(data) == 0
            assert not [p for p in (data / "archive").iterdir()]  # the local archive dir stays empty
            pack_size = moto_s3.client(bucket, "arch").head(packs[0][len("arch/"):]).size  # type: ignore[union-attr]
            assert pack_size <= proxy.sent < pack_size * 1.001  # nothing uploaded twice

            # 3. Read back through the Hub routes: one GET per 8 MiB window of the pack, no HEAD.
            hub.reset_counters()
            proxy.clear()
            assert pull("c2") == body
            assert hub.bytes_sent_for(sha256(body)) == 0
            assert proxy.count("HEAD") == 0
            assert 1 <= proxy.count("GET") <= math.ceil(pack_size / WINDOW), proxy.requests
            status, _h, part = raw(f"{m.url}/org/cold/resolve/main/model.safetensors",
                                   headers={"Range": f"bytes={9 * MiB + 5}-{13 * MiB}"})
            assert status == 206 and part == body[9 * MiB + 5:13 * MiB + 1]

            verify = _cli(m, "verify", "--json")
            assert verify.returncode == 0 and json.loads(verify.stdout)["ok"] is True, verify.stdout + verify.stderr

            # 4. Thaw: the chunks come back hot, read from the bucket.
            thaw = _cli(m, "thaw", f"org/cold@{commit}")
            assert thaw.returncode == 0, thaw.stdout + thaw.stderr
            assert _hot_files(data) == hot
            assert pull("c3") == body
        finally:
            if m.proc is not None and m.proc.poll() is None:
                m.stop()
    for line in m.log:
        assert SECRET_KEY not in line, line


def test_two_nodes_on_one_archive_prefix_cannot_collect_each_others_packs(hub: FakeHub, moto_s3: MotoS3,
                                                                          tmp_path: Path) -> None:
    """Two nodes given the same `[archive] url`: the first to upload owns the prefix
    (`packs-owner`, mirror/s3/layout.py). The second's archive run and GC refuse with one
    line naming the owner, instead of its GC deleting the first node's packs as orphans;
    the first node's archived file still reads back."""
    body = rand(3 * MiB + 7, 32)
    hub.commit("org/shared", {"model.safetensors": body})
    bucket = moto_s3.bucket("owned")
    url = f"s3://{bucket}/arch"
    s3 = {"endpoint": moto_s3.url, "region": "us-east-1", "retries": 1, "timeout": 10.0}
    a = MirrorDaemon(tmp_path / "a", hub.url, env=ENV, archive={"url": url}, lifecycle={"keep_revisions": 0}, s3=s3)
    b = MirrorDaemon(tmp_path / "b", hub.url, env=ENV, archive={"url": url}, lifecycle={"keep_revisions": 0}, s3=s3)
    for m in (a, b):
        pulled = _cli(m, "pull", "org/shared", "--json")
        assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    done = _cli(a, "archive", "--older-than", "0s", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    packs = sorted(k for k in moto_s3.keys(bucket) if k.startswith("arch/packs/"))
    assert len(packs) == 1 and f"arch/{'packs-owner'}" in moto_s3.keys(bucket)

    for argv in (("archive", "--older-than", "0s"), ("gc",)):
        refused = _cli(b, *argv)
        assert refused.returncode != 0, (argv, refused.stdout + refused.stderr)
        lines = [line for line in refused.stderr.splitlines() if "belong to node" in line]
        assert len(lines) == 1 and "not this node" in lines[0] and "[archive] url" in lines[0], refused.stderr
        assert "Traceback" not in refused.stderr
        assert sorted(k for k in moto_s3.keys(bucket) if k.startswith("arch/packs/")) == packs  # nothing deleted
    assert _hot_files(tmp_path / "b") > 0  # b kept its hot copies: its archive run stopped before any flip

    try:
        a.start()
        got = Path(hf_hub_download("org/shared", "model.safetensors", endpoint=a.url, cache_dir=tmp_path / "c")).read_bytes()
        assert got == body and _hot_files(tmp_path / "a") == 0  # read from a's pack in the bucket
    finally:
        a.stop()
    gc = _cli(a, "gc", "--json")  # the owner's own GC still works on its prefix
    assert gc.returncode == 0, gc.stdout + gc.stderr
