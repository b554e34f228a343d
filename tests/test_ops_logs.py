"""Structured logs, request ids and readiness (issue 12 item 6), through one real daemon
with `[server] log_format = "json"` and the fake Hub: every stderr line is one JSON
object; an access record carries the request id (the client's sane `X-Request-Id`, or a
new one, echoed on every response, errors included), the route group, status, bytes,
duration, source and cache outcome; no token reaches the log; `/readyz` reports its
checks, fails with 503 naming the store when the data dir takes no writes, and stays
ready, declaring stale serving, while upstream is unreachable.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Iterator

import pytest

from tests.hubenv import MiB, rand, raw  # isort: skip

from tests.daemon import MirrorDaemon
from tests.fakehub import FakeHub

SECRET = "hf_SENTINELuser_jsonlog_Zq81"
FILE = "/acme/m/resolve/main/model.bin"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeHub, MirrorDaemon]]:
    with FakeHub.running() as hub:
        hub.commit("acme/m", {"config.json": b"{}", "model.bin": rand(2 * MiB + 3, 12)})
        m = MirrorDaemon(tmp_path_factory.mktemp("jsonlog") / "data", hub.url, server={"log_format": "json"}).start()
        try:
            yield hub, m
        finally:
            m.stop()


def records(m: MirrorDaemon) -> list[dict[str, Any]]:
    """Every log line as its JSON object (a line that is not one fails the test)."""
    out = []
    for line in list(m.log):
        try:
            rec = json.loads(line)
        except ValueError:
            raise AssertionError(f"a log line that is not a JSON object: {line!r}") from None
        assert isinstance(rec, dict) and {"time", "level", "logger", "message"} <= rec.keys(), line
        out.append(rec)
    return out


def access(m: MirrorDaemon, request_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """The access record of one request (the daemon's stderr is read by a thread; 30 s is
    far beyond any write-to-read delay)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in records(m) if r["logger"] == "mirror.access" and r.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, (request_id, m.log[-10:])
            return found[0]
        time.sleep(0.05)


def get(m: MirrorDaemon, path: str, rid: str | None = None, method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes, str]:
    if rid is not None:
        headers["X-Request-Id"] = rid
    status, h, body = raw(m.url + path, method=method, headers=headers)
    return status, h, body, h.get("X-Request-Id", "")


def test_access_records_carry_id_group_source_and_cache(site: tuple[FakeHub, MirrorDaemon]) -> None:
    _hub, m = site
    auth = {"Authorization": f"Bearer {SECRET}"}
    status, _h, body, rid = get(m, FILE, "cold-1", **auth)
    assert status == 200 and len(body) == 2 * MiB + 3 and rid == "cold-1"
    miss = access(m, "cold-1")
    assert (miss["source"], miss["cache"], miss["status"], miss["bytes"]) == ("fill", "miss", 200, len(body))
    assert miss["group"] == "files.read" and miss["path"] == FILE and miss["method"] == "GET"
    assert isinstance(miss["duration_ms"], float) and miss["duration_ms"] >= 0
    assert "id=cold-1 group=files.read source=fill cache=miss" in miss["message"]  # the text line, as in text format
    # Once the fill is ingested the store serves it (a bounded wait for the ingest).
    for i in range(200):
        get(m, FILE, f"warm-{i}")
        if access(m, f"warm-{i}")["source"] == "store":
            break
        time.sleep(0.1)
    hit = access(m, f"warm-{i}")
    assert (hit["source"], hit["cache"], hit["status"]) == ("store", "hit", 200)

    # Metadata and errors: no source, the id echoed all the same.
    status, _h, _b, rid = get(m, "/acme/m/resolve/main/missing.txt", "err-1")
    assert status == 404 and rid == "err-1"
    err = access(m, "err-1")
    assert (err["status"], err["group"], err["source"], err["cache"]) == (404, "files.read", "-", "-")
    status, _h, _b, rid = get(m, FILE, "head-1", method="HEAD")
    assert status == 200 and rid == "head-1" and access(m, "head-1")["source"] == "-"
    status, _h, _b, rid = get(m, "/no/such/route/here/x")
    assert status == 404 and len(rid) == 16 and access(m, rid)["group"] == "-"

    # An id that is not a plain token (spaces, too long, shaped like a token) is replaced.
    for bad in ("a b", "x" * 65, SECRET, "mm_abcdefgh_" + "A" * 40, "id;rm"):
        status, _h, _b, rid = get(m, "/api/models/acme/m", bad)
        assert status == 200 and rid != bad and len(rid) == 16, bad
        assert access(m, rid)["group"] == "hub.read"


def test_no_token_reaches_the_json_log(site: tuple[FakeHub, MirrorDaemon]) -> None:
    """The hardening rule (tests/test_hardening_logs.py) in the JSON format: a token in a
    request id, a good Authorization header and one the parser rejects never show."""
    _hub, m = site
    get(m, "/api/models/acme/m", SECRET, Authorization=f"Bearer {SECRET}")
    with socket.create_connection(("127.0.0.1", m.port), timeout=10) as s:
        s.sendall(f"GET /api/whoami-v2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\x01\r\n\r\n".encode())
        assert s.recv(100).startswith(b"HTTP/1.0 400")
    deadline = time.monotonic() + 30
    while not [r for r in records(m) if "rejected malformed request" in r["message"]]:
        assert time.monotonic() < deadline, m.log[-5:]
        time.sleep(0.05)
    assert not [line for line in m.log if "SENTINEL" in line or "Bearer" in line]
    assert records(m)[0]["message"].startswith("data dir ")  # the CLI's notice is a record too


def test_readyz_checks_catalog_store_and_upstream(site: tuple[FakeHub, MirrorDaemon]) -> None:
    hub, m = site
    status, h, body, rid = get(m, "/readyz", "ready-1")
    assert status == 200 and rid == "ready-1", body
    assert json.loads(body) == {"status": "ready", "checks": {"catalog": {"ok": True}, "store": {"ok": True},
                                                              "upstream": {"ok": True, "reachable": True}}}

    # The data dir's tmp/ cannot take a file: not ready, and the answer says why.
    tmp = m.data_dir / "tmp"
    os.rename(tmp, m.data_dir / "tmp.away")
    tmp.write_text("not a directory")
    try:
        status, h, body, _rid = get(m, "/readyz", "ready-2")
    finally:
        tmp.unlink()
        os.rename(m.data_dir / "tmp.away", tmp)
    rep = json.loads(body)
    assert status == 503 and h["X-Error-Code"] == "NotReady", body
    assert rep["failed"] == ["store"] and rep["checks"]["catalog"] == {"ok": True}
    assert rep["error"].startswith("not ready: store: ") and "not writable" in rep["error"]
    failed = access(m, "ready-2")  # a failing probe is logged; a passing one is not
    assert (failed["status"], failed["group"]) == (503, "health")
    assert not [r for r in records(m) if r.get("request_id") == "ready-1"]

    # Upstream refuses connections: still ready, serving what it holds, marked stale.
    hub.down()
    try:
        assert get(m, "/api/models/acme/never-seen")[0] in (502, 504)
        status, _h, body, _rid = get(m, "/readyz")
        assert status == 200, body
        assert json.loads(body)["checks"]["upstream"] == {
            "ok": True, "reachable": False, "serving": "stale", "detail": "last connect failed: connection refused"}
        status, _h, data, _rid = get(m, FILE)
        assert status == 200 and len(data) == 2 * MiB + 3  # stored content is served meanwhile
    finally:
        hub.up()
    deadline = time.monotonic() + 30
    while json.loads(get(m, "/readyz")[2])["checks"]["upstream"]["reachable"] is False:
        assert time.monotonic() < deadline
        get(m, "/api/models/acme/another-unknown")
        time.sleep(0.2)


def test_json_log_format_is_a_config_key() -> None:
    from mirror import config
    from mirror.errors import ConfigError

    assert config.load(None, env={"MIRROR_SERVER_LOG_FORMAT": "json"}).server.log_format == "json"
    with pytest.raises(ConfigError, match="server.log_format"):
        config.load(None, env={"MIRROR_SERVER_LOG_FORMAT": "xml"})
