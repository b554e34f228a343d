"""Issue 14, upstream failures: a cold file with upstream refusing connections fails
fast with a JSON 502 (defect 6), a refused private redirect names its setting (7), an
upstream 4xx on a pass-through call keeps its status (15), and a host that refused a
connection is not tried again for a few seconds (15). Real daemon, real fake Hub; the
outage window is driven by an injected FakeClock in the in-process test."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.hubenv import MiB, rand, raw, start_mirror  # isort: skip

import pytest

from mirror.clock import FakeClock
from mirror.config import UpstreamConfig
from mirror.errors import UpstreamCannotConnect
from mirror.upstream.client import HubClient
from mirror.upstream.outage import TTL
from tests.fakehub import FakeHub


def test_cold_file_with_upstream_refusing_fails_fast_with_json_502(hub: FakeHub, tmp_path: Path) -> None:
    """Defect 6: metadata cached, file not; upstream refuses connections. However many
    resumes the operator allows, the fill gives up at the first refused connect (no
    retries, no backoff) and the client gets a JSON 502 - never a 200 that breaks off."""
    data = rand(2 * MiB, 61)
    hub.commit("org/m", {"model.safetensors": data, "config.json": b"{}"})
    # Many resumes: with retries on a refused connect, the backoff outlasts the 8 s the
    # edge waits for a first byte, and the client used to get a 200 that broke off.
    m = start_mirror(tmp_path, hub, upstream={"max_resumes": 10})
    try:
        assert raw(m.url + "/org/m/resolve/main/model.safetensors", "HEAD")[0] == 200
        hub.down()
        for _ in range(2):
            # A JSON error, not a 200 that breaks off, and no retry first (the log check
            # below): what "fast" means here, checked without a clock.
            status, h, body = raw(m.url + "/org/m/resolve/main/model.safetensors")
            assert status in (502, 504), status
            assert h["Content-Type"].startswith("application/json")
            assert "unreachable" in json.loads(body)["error"]
        assert not [line for line in m.log if "retrying in" in line], "a refused connect was retried"
        assert not [line for line in m.log if "aborting" in line]
        hub.up()
        # The outage mark expires on its own: the file is served once upstream is back.
        deadline = time.monotonic() + 30
        while True:
            status, _h, body = raw(m.url + "/org/m/resolve/main/model.safetensors")
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status == 200 and body == data
    finally:
        hub.up()
        m.stop()


def test_cold_file_with_upstream_resetting_fails_fast_with_json_502(hub: FakeHub, tmp_path: Path) -> None:
    """Defect 6, the reset case: upstream takes the connection and drops it before any
    answer. Nothing received: a JSON 502 at once, no retries with backoff."""
    data = rand(MiB, 62)
    hub.commit("org/m", {"model.safetensors": data})
    m = start_mirror(tmp_path, hub, upstream={"max_resumes": 10})
    try:
        assert raw(m.url + "/org/m/resolve/main/model.safetensors", "HEAD")[0] == 200
        hub.reset_connections(paths_glob="*/resolve/*")
        status, h, body = raw(m.url + "/org/m/resolve/main/model.safetensors")
        assert status == 502 and "reset the connection" in json.loads(body)["error"]
        assert not [line for line in m.log if "retrying in" in line]
        hub.clear_faults()
        # A reset does not mark upstream down: the next request is fetched at once.
        status, _h, body = raw(m.url + "/org/m/resolve/main/model.safetensors")
        assert status == 200 and body == data
    finally:
        m.stop()


def test_refused_private_redirect_names_the_setting(hub: FakeHub, tmp_path: Path) -> None:
    """Defect 7: the CDN hop goes to loopback and private redirects are off. The client
    gets a JSON 502 naming `upstream.allow_private_redirects`, without the internal
    address; the log names both; the fill is not retried and the CDN sees nothing."""
    hub.commit("org/m", {"model.safetensors": rand(MiB, 71), "config.json": b"{}"})
    m = start_mirror(tmp_path, hub, upstream={"allow_private_redirects": False})
    try:
        status, h, body = raw(m.url + "/org/m/resolve/main/model.safetensors")
        assert status == 502
        error = json.loads(body)["error"]
        assert "upstream.allow_private_redirects" in error
        assert "127.0.0.1" not in error and str(hub.cdn_port) not in error
        assert "upstream.allow_private_redirects" in h["X-Error-Message"]
        # The daemon's stderr is read by a thread: give the line a moment to arrive.
        deadline = time.monotonic() + 5
        logged: list[str] = []
        while not logged and time.monotonic() < deadline:
            logged = [line for line in m.log if "upstream.allow_private_redirects" in line and "127.0.0.1" in line]
            time.sleep(0.05)
        assert logged, "no log line names the setting and the refused target"
        assert hub.count(origin="cdn") == 0
        assert hub.count("GET", path_contains="/resolve/") == 1  # refused once, not retried
    finally:
        m.stop()


@pytest.mark.parametrize("status", [400, 422])
def test_upstream_4xx_on_passthrough_keeps_its_status(hub: FakeHub, tmp_path: Path, status: int) -> None:
    """Defect 15: upstream's own 4xx on a commits call reaches the client with its status
    and message, not as a 502."""
    hub.commit("org/m", {"config.json": b"{}"})
    m = start_mirror(tmp_path, hub)
    try:
        hub.fail_status(status, times=1, paths_glob="*/commits/*", error_code="BadRequest")
        got, h, body = raw(m.url + "/api/models/org/m/commits/main")
        assert got == status
        assert json.loads(body)["error"] == f"Injected fault {status}"
        assert h["X-Error-Code"] == "BadRequest"
        # Then upstream answers again: the same call passes through.
        assert raw(m.url + "/api/models/org/m/commits/main")[0] == 200
    finally:
        m.stop()


async def test_unreachable_upstream_is_remembered_briefly(tmp_path: Path) -> None:
    """Defect 15: after a refused connect, requests to that host fail at once (no
    connect attempt) until the outage window ends on the injected clock."""
    with FakeHub.running() as hub:
        hub.commit("org/m", {"config.json": b"{}"})
        hub.down()
        clock = FakeClock()
        client = HubClient(UpstreamConfig(url=hub.url), clock=clock)
        await client.start()
        try:
            with pytest.raises(UpstreamCannotConnect, match="connection refused"):
                await client.get_json("/api/models/org/m", None)
            hub.up()  # upstream is back, but the mark still stands on the clock
            with pytest.raises(UpstreamCannotConnect, match="moments ago"):
                await client.get_json("/api/models/org/m", None)
            assert hub.count() == 0
            clock.advance(TTL + 0.1)
            reply = await client.get_json("/api/models/org/m", None)
            assert reply.data["id"] == "org/m" and hub.count() == 1
        finally:
            await client.close()
