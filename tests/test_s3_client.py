"""The S3 client (mirror/s3/): URLs and settings, credentials, every operation against a
real S3 protocol server (moto's server mode), and faults injected by a proxy in front of
it: 503 SlowDown, 500, stalls and dropped connections are retried within their bounds; a
bucket that stays down gives a clear error, fast during the cooldown; nothing half
written becomes visible; no credential in a message or a log line."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from mirror import config
from mirror.errors import BucketUnavailable, ConfigError, StorageError
from mirror.s3 import client as client_mod
from mirror.s3.client import S3Client
from mirror.s3.credentials import Credentials, load_credentials
from mirror.s3.layout import BUCKET_FORMAT, ensure_format
from mirror.s3.url import S3Url, endpoint_for
from tests.s3env import (
    ACCESS_KEY,
    CREDENTIALS,
    SECRET_KEY,
    FaultProxy,
    MotoS3,
    free_port,
)

MiB = 1 << 20


# --- URLs, settings, credentials ----------------------------------------------------------


def test_s3_urls() -> None:
    assert S3Url.parse("s3://models/mirror/a") == S3Url("models", "mirror/a")
    assert S3Url.parse("s3://models/mirror/") == S3Url("models", "mirror")
    assert S3Url.parse("s3://my.bucket-1") == S3Url("my.bucket-1", "")
    assert str(S3Url("models", "p")) == "s3://models/p"
    for bad in ("https://models/x", "s3://Models", "s3://ab", "s3://a..b", "s3://192.168.0.1/x", "s3://key:secret@b/x",
                "s3://bucket:9000/x", "s3://bucket/a/../b", "s3://bucket/a//b", "s3://bucket/x?y=1", "s3://bucket/a b"):
        with pytest.raises(ConfigError, match="url"):
            S3Url.parse(bad)


def test_addressing_and_endpoints() -> None:
    path = config.S3Config(endpoint="https://minio.lan:9000/", addressing="path")
    virtual = config.S3Config(endpoint="https://minio.lan:9000", addressing="virtual")
    assert endpoint_for(path, "models") == "https://minio.lan:9000"
    assert endpoint_for(virtual, "models") == "https://models.minio.lan:9000"
    assert endpoint_for(config.S3Config(endpoint="https://models.minio.lan", addressing="virtual"), "models") \
        == "https://models.minio.lan"
    assert endpoint_for(config.S3Config(addressing="virtual"), "models") == ""  # AWS: obstore builds it
    S3Client(S3Url("models"), virtual, credentials=CREDENTIALS)  # builds without a request


@pytest.mark.parametrize(("tables", "key"), [
    ({"store": {"backend": "s3"}}, "store.url"),
    ({"store": {"backend": "tape"}}, "store.backend"),
    ({"store": {"url": "s3://models/x"}}, "store.url"),
    ({"store": {"backend": "s3", "url": "s3://Bad_Bucket"}}, "store.url"),
    ({"store": {"backend": "s3", "url": "s3://models", "cache_size": "lots"}}, "store.cache_size"),
    ({"archive": {"url": "/srv/archive"}}, "archive.url"),
    ({"s3": {"addressing": "dns"}}, "s3.addressing"),
    ({"s3": {"endpoint": "http://key:secret@minio:9000"}}, "s3.endpoint"),
    ({"s3": {"endpoint": "minio:9000"}}, "s3.endpoint"),
    ({"s3": {"region": "EU West"}}, "s3.region"),
    ({"s3": {"timeout": 0}}, "s3.timeout"),
    ({"s3": {"retries": 99}}, "s3.retries"),
])
def test_bad_object_storage_settings_name_the_key(tables: dict[str, dict[str, object]], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.load(env={}, overrides=tables)


def test_object_storage_settings_load() -> None:
    cfg = config.load(env={"MIRROR_S3_ENDPOINT": "http://127.0.0.1:9000"}, overrides={
        "store": {"backend": "s3", "url": "s3://models/mirror", "cache_size": "2G"},
        "archive": {"url": "s3://cold/packs"}, "s3": {"addressing": "virtual", "retries": 2}})
    assert (cfg.store.backend, cfg.store.url, cfg.archive.url) == ("s3", "s3://models/mirror", "s3://cold/packs")
    assert (cfg.s3.endpoint, cfg.s3.addressing, cfg.s3.retries) == ("http://127.0.0.1:9000", "virtual", 2)


def test_credentials_file(tmp_path: Path) -> None:
    f = tmp_path / "credentials"
    f.write_text(f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n")
    f.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600") as err:
        load_credentials(str(f))
    assert SECRET_KEY not in str(err.value)
    f.chmod(0o600)
    creds = load_credentials(str(f))
    assert creds == Credentials(ACCESS_KEY, SECRET_KEY)
    assert SECRET_KEY not in repr(creds) and SECRET_KEY not in str(creds) and ACCESS_KEY not in repr(creds)
    assert creds() == {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, "token": None, "expires_at": None}
    assert load_credentials("") is None
    f.write_text(f"[ci]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\naws_session_token = tok123\n")
    assert load_credentials(str(f)) == Credentials(ACCESS_KEY, SECRET_KEY, "tok123")
    for text in (f"[default]\naws_access_key_id = {ACCESS_KEY}\n", f"aws_secret_access_key = {SECRET_KEY}\n",
                 f"[a]\naws_secret_access_key = {SECRET_KEY}\n[b]\nx = 1\n",
                 (f"[default]\naws_access_key_id = a b\naws_secret_access_key = {SECRET_KEY}\n")):
        f.write_text(text)
        with pytest.raises(ConfigError, match="credentials_file") as err:
            load_credentials(str(f))
        assert SECRET_KEY not in str(err.value)
    with pytest.raises(ConfigError, match="No such file"):
        load_credentials(str(tmp_path / "absent"))


# --- operations ------------------------------------------------------------------------


def test_create_only_put_ranged_get_head_delete(moto_s3: MotoS3) -> None:
    bucket = moto_s3.bucket("ops")
    c = moto_s3.client(bucket, "m")
    assert c.put("a/one", b"hello world") is True
    assert c.put("a/one", b"other bytes") is False  # create-only: kept
    assert c.get("a/one") == (b"hello world", 11)
    assert c.get("a/one", 6) == (b"world", 11)
    assert c.get("a/one", 2, 3) == (b"llo", 11)
    assert c.get("a/one", 8, 100) == (b"rld", 11)  # shorter at the end
    assert c.get("a/one", 11) == (b"", 11) and c.get("a/one", 50, 2) == (b"", 11) and c.get("a/one", 0, 0) == (b"", 11)
    assert c.get("a/absent") is None and c.get("a/absent", 0, 0) is None and c.head("a/absent") is None
    info = c.head("a/one")
    assert info is not None and (info.key, info.size) == ("a/one", 11) and info.mtime > 0
    assert c.put("a/one", b"replaced", create=False) is True and c.get("a/one") == (b"replaced", 8)
    c.delete("a/one")
    c.delete("a/one")  # idempotent
    assert c.head("a/one") is None
    assert moto_s3.keys(bucket) == []
    for bad in ("", "/abs", "a/../b", "a//b", "a/./b", "sp ace", "a\nb"):
        with pytest.raises(ValueError):
            c.put(bad, b"x")


def test_list_pages_and_prefixes_keep_apart(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = moto_s3.bucket("list")
    a, b = moto_s3.client(bucket, "node-a"), moto_s3.client(bucket, "node-a2")
    for i in range(7):
        a.put(f"chunks/{i:02d}", b"x" * i)
    a.put("other/x", b"y")
    b.put("chunks/99", b"z")
    monkeypatch.setattr(client_mod, "LIST_PAGE", 3)
    assert sorted(i.key for i in a.list("chunks/")) == [f"chunks/{i:02d}" for i in range(7)]
    assert sorted(i.key for i in a.list()) == [f"chunks/{i:02d}" for i in range(7)] + ["other/x"]
    assert [i.key for i in b.list("chunks")] == ["chunks/99"]
    assert sorted(moto_s3.keys(bucket))[:1] == ["node-a/chunks/00"]


def test_bucket_format_marker(moto_s3: MotoS3) -> None:
    bucket = moto_s3.bucket("fmt")
    c = moto_s3.client(bucket, "p")
    assert ensure_format(c) == BUCKET_FORMAT and ensure_format(c) == BUCKET_FORMAT
    assert c.get("FORMAT") == (f"model-mirror bucket {BUCKET_FORMAT}\n".encode(), 22)
    newer = moto_s3.client(bucket, "q")
    newer.put("FORMAT", f"model-mirror bucket {BUCKET_FORMAT + 1}\n".encode())
    with pytest.raises(ConfigError, match="newer than this build"):
        ensure_format(newer)


def test_multipart_upload_is_whole_or_absent(moto_s3: MotoS3, tmp_path: Path) -> None:
    bucket = moto_s3.bucket("mpu")
    data = os.urandom(12 * MiB + 5)
    src = tmp_path / "pack"
    src.write_bytes(data)
    with FaultProxy(moto_s3.url) as proxy:
        c = moto_s3.client(bucket, "p", endpoint=proxy.url, retries=1)
        c.upload("packs/one", src, part_size=5 * MiB)
        assert c.get("packs/one") == (data, len(data))
        assert proxy.count("POST") == 2 and proxy.count("PUT") == 3  # create, 3 parts, complete
        c.upload("packs/iter", (data[i:i + MiB] for i in range(0, len(data), MiB)), part_size=5 * MiB)
        assert c.get("packs/iter", 7 * MiB, 10) == (data[7 * MiB:7 * MiB + 10], len(data))
        proxy.fail(100, 500, "InternalError", method="PUT")  # every part fails, retries too
        with pytest.raises(StorageError, match="InternalError"):
            c.upload("packs/two", src, part_size=5 * MiB)
    assert sorted(moto_s3.keys(bucket)) == ["p/packs/iter", "p/packs/one"]  # nothing half written
    assert moto_s3.uploads(bucket) == []  # the failed upload was aborted


# --- faults ----------------------------------------------------------------------------


def test_5xx_slowdown_stalls_and_drops_are_retried(moto_s3: MotoS3) -> None:
    bucket = moto_s3.bucket("retry")
    with FaultProxy(moto_s3.url) as proxy:
        c = moto_s3.client(bucket, "p", endpoint=proxy.url, timeout=1.0, retries=3)
        proxy.fail(2, 503, "SlowDown", method="PUT")
        assert c.put("k/a", b"alpha") is True
        assert proxy.count("PUT", 503) == 2 and proxy.count("PUT", 200) == 1
        proxy.fail(3, 500, "InternalError", method="GET")
        assert c.get("k/a") == (b"alpha", 5)
        proxy.drop(1, method="HEAD")
        assert c.head("k/a") is not None
        proxy.stall(1, 2.5, method="GET")  # longer than the 1 s timeout
        assert c.get("k/a", 1, 2) == (b"lp", 5)
        proxy.stall(1, 2.5, method="PUT")  # obstore does not retry a PUT's timeout: put does
        assert c.put("k/b", b"beta") is True
        assert c.get("k/b") == (b"beta", 4)


def test_a_bucket_that_stays_down_fails_clearly_and_boundedly(moto_s3: MotoS3, caplog: pytest.LogCaptureFixture) -> None:
    bucket = moto_s3.bucket("down")
    caplog.set_level(logging.DEBUG)
    with FaultProxy(moto_s3.url) as proxy:
        c = S3Client(S3Url(bucket, "p"), moto_s3.settings(proxy.url, retries=2), credentials=CREDENTIALS, cooldown=0.5)
        proxy.fail(1000, 503, "SlowDown")
        with pytest.raises(BucketUnavailable) as err:
            c.get("k/a")
        assert proxy.count("GET") == 3  # the first attempt and 2 retries
        assert "503" in str(err.value) and "SlowDown" in str(err.value) and "after 2 retries" in str(err.value)
        assert f"s3://{bucket}/p/k/a" in str(err.value)
        with pytest.raises(StorageError, match="not retried"):  # the cooldown: no request at all
            c.put("k/a", b"x")
        assert proxy.count() == 3
        proxy.clear()
        import time

        time.sleep(0.6)
        assert c.put("k/a", b"back") is True  # answers again after the cooldown
        assert c.get("k/a") == (b"back", 4)
    # A port nobody listens on: reads and writes say so, promptly.
    gone = S3Client(S3Url(bucket), moto_s3.settings(f"http://127.0.0.1:{free_port()}", retries=1), credentials=CREDENTIALS)
    with pytest.raises(BucketUnavailable, match="cannot connect"):
        gone.head("x")
    gone = S3Client(S3Url(bucket), moto_s3.settings(f"http://127.0.0.1:{free_port()}", retries=1), credentials=CREDENTIALS)
    with pytest.raises(StorageError, match="cannot connect"):
        gone.put("x", b"x")
    for rec in caplog.records:
        assert SECRET_KEY not in rec.getMessage() and ACCESS_KEY not in rec.getMessage()
    assert sum("answers again" in r.getMessage() for r in caplog.records) == 1


def test_nothing_half_written_after_failed_puts(moto_s3: MotoS3) -> None:
    bucket = moto_s3.bucket("half")
    with FaultProxy(moto_s3.url) as proxy:
        c = S3Client(S3Url(bucket, "p"), moto_s3.settings(proxy.url, retries=1), credentials=CREDENTIALS, cooldown=0)
        proxy.fail(2, 500, "InternalError", method="PUT")
        with pytest.raises(StorageError):
            c.put("k/a", os.urandom(MiB))
        proxy.drop(2, method="PUT")
        with pytest.raises(StorageError):
            c.put("k/b", os.urandom(MiB))
    assert moto_s3.keys(bucket) == []


def test_no_credential_in_errors_even_when_the_server_echoes_them(moto_s3: MotoS3, tmp_path: Path) -> None:
    """Whatever the server answers (here: the request's Authorization header, which names
    the access key), a message quotes only the status and S3 error code."""
    bucket = moto_s3.bucket("echo")
    with FaultProxy(moto_s3.url) as proxy:
        c = S3Client(S3Url(bucket), moto_s3.settings(proxy.url, retries=0), credentials=CREDENTIALS, cooldown=0)
        proxy.fail(5, 403, "AccessDenied", echo=True)
        errors: list[str] = []
        for call in (lambda: c.get("k"), lambda: c.put("k", b"x"), lambda: list(c.list())):
            with pytest.raises((BucketUnavailable, StorageError)) as err:
                call()
            errors.append(str(err.value))
        assert all("403" in e and "AccessDenied" in e for e in errors), errors
        assert proxy.echoed and ACCESS_KEY in proxy.echoed[0]  # the server did send it
        assert not any(ACCESS_KEY in e or SECRET_KEY in e for e in errors)
    assert client_mod._scrub(f"x {SECRET_KEY} y", CREDENTIALS.secrets()) == "x *** y"
