"""Ranges of a file that is not stored come from its verified content or from the running
fill behind its hold-back, never straight from upstream (issue 14, defects 1c and 10)."""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.hubenv import MiB, rand, raw, sha256, start_mirror  # isort: skip

from tests.fakehub import FakeHub


def ranged_get(url: str, rng: str) -> tuple[int, bytes, bool]:
    """(status, what arrived, whether the body completed)."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("GET", u.path, headers={"Range": rng})
    resp = conn.getresponse()
    try:
        body = resp.read()
        complete = True
    except (http.client.IncompleteRead, ConnectionError) as exc:
        body, complete = getattr(exc, "partial", b""), False
    finally:
        conn.close()
    return resp.status, body, complete


def test_range_of_an_uncached_file_never_completes_with_rejected_bytes(hub: FakeHub, tmp_path: Path) -> None:
    data = rand(3 * MiB + 5, 31)
    hub.commit("org/m", {"model.safetensors": data})
    hub.corrupt("model.safetensors", mode="flip")  # every answer carries a flipped byte
    m = start_mirror(tmp_path, hub, upstream={"max_resumes": 1})
    try:
        url = m.url + "/org/m/resolve/main/model.safetensors"
        for rng in ("bytes=0-99", "bytes=0-", "bytes=1048576-2097151"):
            try:
                status, body, complete = ranged_get(url, rng)
            except TimeoutError:
                raise AssertionError("\n".join(m.log[-15:])) from None
            # Either an error status, or a body that breaks off: never a complete range
            # that a client could stitch into a wrong file.
            assert not (status == 206 and complete), (rng, status, len(body), m.log[-10:])
            assert status >= 500 or not complete
        # A client resuming a cut download (curl -C -) cannot assemble a wrong file.
        assert not any(line for line in m.log if "Traceback" in line)
    finally:
        m.stop()
    hub.clear_faults()


def test_resume_with_range_during_a_running_fill_costs_upstream_nothing_more(hub: FakeHub, tmp_path: Path) -> None:
    data = rand(24 * MiB + 7, 32)
    hub.commit("org/m", {"model.safetensors": data})
    hub.bandwidth = 24 * MiB  # about a second: the fill is still running when the resume comes
    m = start_mirror(tmp_path, hub)
    try:
        url = m.url + "/org/m/resolve/main/model.safetensors"
        u = urlsplit(url)
        # A client that reads the first MiB and then gives up (curl -L cut after 3 s).
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        conn.request("GET", u.path)
        first = conn.getresponse()
        head = first.read(1 * MiB)
        conn.close()
        # ... then resumes with Range from what it has (curl -C -).
        status, body, complete = ranged_get(url, f"bytes={len(head)}-")
        assert status == 206 and complete and head + body == data
        assert hub.bytes_sent_for(sha256(data)) == len(data), "the resume fetched the file from upstream again"
        # And once stored, a range costs upstream nothing at all.
        deadline = time.monotonic() + 30
        while list((m.data_dir / "spool").glob("*.part")) and time.monotonic() < deadline:
            time.sleep(0.1)
        hub.reset_counters()
        assert raw(url, headers={"Range": "bytes=5-9"})[2] == data[5:10]
        assert hub.bytes_sent == 0
    finally:
        m.stop()


def test_parallel_segment_downloader_gets_the_right_file(hub: FakeHub, tmp_path: Path) -> None:
    """aria2-style: several ranges of a cold file at once, stitched by the client."""
    data = rand(8 * MiB + 13, 33)
    hub.commit("org/m", {"model.safetensors": data})
    m = start_mirror(tmp_path, hub)
    try:
        url = m.url + "/org/m/resolve/main/model.safetensors"
        bounds = [(i * 2 * MiB, min(len(data), (i + 1) * 2 * MiB) - 1) for i in range(5)]
        parts: dict[int, bytes] = {}

        def get(lo: int, hi: int) -> None:
            status, body, complete = ranged_get(url, f"bytes={lo}-{hi}")
            if status == 206 and complete:
                parts[lo] = body

        threads = [threading.Thread(target=get, args=b) for b in bounds]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert b"".join(parts[lo] for lo, _ in bounds) == data
        assert hub.bytes_sent_for(sha256(data)) == len(data)
    finally:
        m.stop()
