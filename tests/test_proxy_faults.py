"""The proxy under faults: concurrency, broken and lying upstreams, outages, restarts,
gated and private repos, TTLs, overload and hostile input. Each test runs its own fake
Hub and its own daemon."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.hubenv import MiB, OTHER, TOKEN, rand, raw, sha256, start_mirror  # isort: skip

from huggingface_hub import HfApi, hf_hub_download, snapshot_download

from tests.fakehub import FakeHub


def _get_all(url: str, n: int) -> list[bytes]:
    with ThreadPoolExecutor(n) as pool:
        return [r[2] for r in pool.map(lambda _: raw(url), range(n))]


def test_concurrent_cold_clients_make_one_upstream_copy(hub: FakeHub, tmp_path: Path) -> None:
    data = rand(24 * MiB + 3, 7)
    hub.commit("org/m", {"model.safetensors": data})
    hub.bandwidth = 60 * MiB  # slow enough that all 8 clients overlap the fill
    m = start_mirror(tmp_path, hub)
    try:
        bodies = _get_all(m.url + "/org/m/resolve/main/model.safetensors", 8)
        assert all(b == data for b in bodies)
        assert hub.bytes_sent_for(sha256(data)) == len(data)
        assert hub.count("GET", origin="cdn") == 1
        # Later hits come from the store: no upstream bytes at all.
        hub.reset_counters()
        assert raw(m.url + "/org/m/resolve/main/model.safetensors")[2] == data
        assert hub.bytes_sent == 0
    finally:
        m.stop()


def test_upstream_cut_mid_file_is_resumed(hub: FakeHub, tmp_path: Path) -> None:
    data = rand(20 * MiB + 11, 8)
    hub.commit("org/m", {"model.safetensors": data})
    hub.cut_after(7 * MiB + 5, times=1)
    m = start_mirror(tmp_path, hub)
    try:
        p = hf_hub_download("org/m", "model.safetensors", endpoint=m.url, cache_dir=tmp_path / "c")
        assert Path(p).read_bytes() == data
        cdn_gets = [r for r in hub.requests if r.origin == "cdn"]
        assert len(cdn_gets) == 2 and cdn_gets[1].headers.get("range", "").startswith("bytes=")
        assert hub.bytes_sent_for(sha256(data)) < len(data) + 2 * MiB
    finally:
        m.stop()


def test_html_error_page_from_upstream_is_retried_not_served(hub: FakeHub, tmp_path: Path) -> None:
    data = rand(5 * MiB + 1, 9)
    hub.commit("org/m", {"model.safetensors": data})
    hub.corrupt("model.safetensors", mode="html", times=1)
    m = start_mirror(tmp_path, hub)
    try:
        # The HTML 200 has the wrong length: the mirror refuses it and fetches again.
        status, _h, body = raw_tolerant(m.url + "/org/m/resolve/main/model.safetensors")
        assert status == 200 and body == data and b"<html" not in body.lower()
        assert hub.count("GET", origin="cdn") == 2
    finally:
        m.stop()


def test_wrong_upstream_bytes_never_served_whole_nor_kept(hub: FakeHub, tmp_path: Path) -> None:
    data = rand(5 * MiB + 1, 9)
    hub.commit("org/m", {"model.safetensors": data})
    hub.corrupt("model.safetensors", mode="flip", times=1)
    m = start_mirror(tmp_path, hub)
    try:
        status, _h, body = raw_tolerant(m.url + "/org/m/resolve/main/model.safetensors")
        assert body != data and len(body) < len(data)
        time.sleep(0.5)
        assert not list((m.data_dir / "spool").iterdir())
        assert _stats(m)["files"] == 0
        # The next request (upstream fixed) fetches and serves the right bytes.
        assert raw(m.url + "/org/m/resolve/main/model.safetensors")[2] == data
        assert any("integrity" in line for line in m.log)
    finally:
        m.stop()


def raw_tolerant(url: str) -> tuple[int, dict[str, str], bytes]:
    """A GET that returns what arrived even when the server aborts mid-body."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", u.path)
    resp = conn.getresponse()
    got = b""
    try:
        while True:
            piece = resp.read1(1 << 20)
            if not piece:
                break
            got += piece
    except (http.client.IncompleteRead, ConnectionError) as exc:
        got += getattr(exc, "partial", b"")
    conn.close()
    return resp.status, dict(resp.headers), got


def _stats(m) -> dict:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mirror", "stats", "--json", "--config", str(m.config_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_offline_after_upstream_down_and_after_restart(hub: FakeHub, tmp_path: Path) -> None:
    files = {"config.json": b'{"model_type": "bert"}', "model.safetensors": rand(2 * MiB, 3)}
    sha = hub.commit("org/m", files)
    m = start_mirror(tmp_path, hub, cache={"ref_ttl": 0.0})
    try:
        snap = snapshot_download("org/m", endpoint=m.url, cache_dir=tmp_path / "c1")
        time.sleep(0.3)  # let the background ingest finish
        hub.down()
        for rev in ("main", sha):
            snap2 = Path(snapshot_download("org/m", revision=rev, endpoint=m.url, cache_dir=tmp_path / f"c-{rev[:4]}"))
            assert (snap2 / "model.safetensors").read_bytes() == files["model.safetensors"]
        status, h, _ = raw(m.url + "/org/m/resolve/main/config.json", "HEAD")
        assert status == 200 and h["X-Mirror-Stale"] == "1" and h["X-Repo-Commit"] == sha
        assert m.stop() == 0
        m.start()
        for rev in ("main", sha):
            p = hf_hub_download("org/m", "model.safetensors", revision=rev, endpoint=m.url, cache_dir=tmp_path / f"d-{rev[:4]}")
            assert Path(p).read_bytes() == files["model.safetensors"]
        info = HfApi(endpoint=m.url).model_info("org/m")
        assert info.sha == sha
        status, h, body = raw(m.url + "/org/m/resolve/main/nothing.bin")
        assert status == 404 and h["X-Error-Code"] == "EntryNotFound"
        # Nothing cached for this repo and upstream down: a JSON 5xx, not a hang or a 500.
        status, h, body = raw(m.url + "/api/models/org/other")
        assert status in (502, 504) and "error" in json.loads(body)
        assert Path(snap).exists()
    finally:
        hub.up()
        m.stop()


def test_new_commit_visible_after_ttl(hub: FakeHub, tmp_path: Path) -> None:
    first = hub.commit("org/m", {"config.json": b"1"})
    m = start_mirror(tmp_path, hub, cache={"ref_ttl": 0.5})
    try:
        api = HfApi(endpoint=m.url)
        assert api.model_info("org/m", revision="main").sha == first
        second = hub.commit("org/m", {"config.json": b"2"})
        assert api.model_info("org/m", revision="main").sha == first  # within the TTL
        time.sleep(0.6)
        assert api.model_info("org/m", revision="main").sha == second
        assert raw(m.url + "/org/m/resolve/main/config.json")[2] == b"2"
    finally:
        m.stop()


def test_private_and_gated_refused_without_access_even_when_cached(hub: FakeHub, tmp_path: Path) -> None:
    hub.create_repo("org/private", private=True, readers=[TOKEN])
    hub.commit("org/private", {"model.safetensors": rand(MiB, 4), "config.json": b"{}"})
    hub.create_repo("org/gated", gated="manual", readers=[TOKEN])
    hub.commit("org/gated", {"config.json": b'{"g": 1}'})
    m = start_mirror(tmp_path, hub, cache={"auth_ttl": 1.0})
    try:
        for repo in ("org/private", "org/gated"):
            for f in ("config.json",):
                status, _h, body = raw(m.url + f"/{repo}/resolve/main/{f}", headers={"Authorization": f"Bearer {TOKEN}"})
                assert status == 200
        time.sleep(0.3)
        for token in (None, OTHER):
            hdrs = {"Authorization": f"Bearer {token}"} if token else {}
            status, h, body = raw(m.url + "/org/private/resolve/main/config.json", headers=hdrs)
            assert status in (401, 404) and h["X-Error-Code"] == "RepoNotFound" and body != b"{}"
            status, h, body = raw(m.url + "/api/models/org/private/tree/main", headers=hdrs)
            assert status in (401, 404) and "model.safetensors" not in body.decode()
            status, h, body = raw(m.url + "/org/gated/resolve/main/config.json", headers=hdrs)
            assert status in (401, 403) and h["X-Error-Code"] == "GatedRepo" and b'"g"' not in body
        # Upstream down: the entitled user is still refused after the memo expires (fail closed).
        hub.down()
        time.sleep(1.1)
        status, h, _ = raw(m.url + "/org/gated/resolve/main/config.json", headers={"Authorization": f"Bearer {TOKEN}"})
        assert status in (401, 403)
        assert not any("SENTINEL" in line for line in m.log)
    finally:
        hub.up()
        m.stop()


def test_range_on_uncached_file_passes_through_and_fills(hub: FakeHub, tmp_path: Path) -> None:
    data = rand(9 * MiB + 3, 5)
    hub.commit("org/m", {"model.safetensors": data})
    m = start_mirror(tmp_path, hub)
    try:
        status, h, body = raw(m.url + "/org/m/resolve/main/model.safetensors", headers={"Range": "bytes=1000-1999"})
        assert status == 206 and body == data[1000:2000] and h["Content-Range"] == f"bytes 1000-1999/{len(data)}"
        deadline = time.monotonic() + 20
        while _stats(m)["files"] == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        hub.reset_counters()
        status, h, body = raw(m.url + "/org/m/resolve/main/model.safetensors", headers={"Range": "bytes=-10"})
        assert status == 206 and body == data[-10:] and hub.bytes_sent == 0
    finally:
        m.stop()


def test_overload_answers_429_with_retry_after(hub: FakeHub, tmp_path: Path) -> None:
    hub.commit("org/m", {"a.safetensors": rand(4 * MiB, 1), "b.safetensors": rand(4 * MiB, 2)})
    hub.bandwidth = 2 * MiB
    m = start_mirror(tmp_path, hub, server={"max_cold_fetches": 1})
    try:
        t = threading.Thread(target=raw, args=(m.url + "/org/m/resolve/main/a.safetensors",))
        t.start()
        time.sleep(0.5)
        status, h, body = raw(m.url + "/org/m/resolve/main/b.safetensors")
        assert status == 429 and h["Retry-After"].isdigit() and "error" in json.loads(body)
        hub.bandwidth = None
        t.join(30)
    finally:
        m.stop()


def test_restart_resumes_half_fetched_spool(hub: FakeHub, tmp_path: Path) -> None:
    data = rand(16 * MiB + 9, 6)
    hub.commit("org/m", {"model.safetensors": data})
    hub.bandwidth = 8 * MiB
    m = start_mirror(tmp_path, hub)
    t = threading.Thread(target=raw_tolerant, args=(m.url + "/org/m/resolve/main/model.safetensors",))
    t.start()
    time.sleep(1.2)
    m.kill()
    t.join(10)
    part = next((m.data_dir / "spool").glob("*.part"))
    assert 0 < part.stat().st_size < len(data)
    hub.bandwidth = None
    m.start()
    try:
        assert raw(m.url + "/org/m/resolve/main/model.safetensors")[2] == data
        assert hub.bytes_sent_for(sha256(data)) < 2 * len(data) - MiB
        cdn = [r for r in hub.requests if r.origin == "cdn"]
        assert any(r.headers.get("range", "").startswith("bytes=") for r in cdn[1:])
    finally:
        m.stop()


BAD_PATHS = [
    "/org/m/resolve/main/..%2f..%2fetc%2fpasswd",
    "/org/m/resolve/main/%2e%2e/%2e%2e/etc/passwd",
    "/org/m/resolve/main/a%5cb",
    "/org/m/resolve/main/a%00b",
    "/org/m/resolve/main/%252e%252e/x",
    "/org/m/resolve/..%2f/config.json",
    "/org/m/resolve/%2e%2e/config.json",
    "/or%2eg/m/resolve/main/config.json",
    "/%EF%BD%8Drg/m/resolve/main/config.json",
    "/org/m/resolve/main/" + "a" * 5000,
    "/api/models/org/m/tree/main/..%2f..",
    "/api/models/..%2f..%2fetc/revision/main",
    "/api/models/org/m/revision/..%2fx",
    "/api/models/org--x/m",
]


def test_hostile_paths_and_ranges_get_4xx_never_500(hub: FakeHub, tmp_path: Path) -> None:
    data = rand(3 * MiB, 11)
    hub.commit("org/m", {"config.json": b"{}", "model.safetensors": data})
    m = start_mirror(tmp_path, hub)
    try:
        for path in BAD_PATHS:
            status, h, _ = raw(m.url + path)
            assert 400 <= status < 500, (path, status)
        url = m.url + "/org/m/resolve/main/model.safetensors"
        raw(url)
        size = len(data)
        cases = {
            "bytes=0-18446744073709551615": (206, data),
            "bytes=-0": (416, None),
            f"bytes={size}-{size + 5}": (416, None),
            "bytes=5-1": (200, data),
            "items=0-1": (200, data),
            "bytes=1_0-2_0": (200, data),
            "bytes=\u0663-\u0664": (200, data),
            "bytes=+5-9": (200, data),
            ",".join(f"bytes={i}-{i + 10}" for i in range(200)): (200, data),
            "bytes=0-0,5-9": (200, data),
        }
        for rng, (want_status, want_body) in cases.items():
            status, h, body = raw(url, headers={"Range": rng.encode("utf-8").decode("latin-1")})
            assert status == want_status, (rng, status)
            if want_body is not None:
                assert body == want_body, rng
            if status == 416:
                assert h["Content-Range"] == f"bytes */{size}"
        status, _h, body = raw(url, headers={"Range": "bytes=0-9", "If-Range": '"stale-etag"'})
        assert status == 200 and body == data
        assert raw(m.url + "/healthz")[0] == 200
    finally:
        assert m.stop() == 0


def test_native_request_parser_in_use() -> None:
    from mirror.app import request_parser_is_native

    assert request_parser_is_native(), "aiohttp's C request parser (llhttp) is not active"


def test_redirect_to_private_address_refused(hub: FakeHub, tmp_path: Path) -> None:
    """With private redirects not allowed, the hop to the CDN (another port on loopback)
    is refused before connecting: the client gets a JSON 502, the CDN sees nothing."""
    hub.commit("org/m", {"model.safetensors": rand(MiB, 12), "config.json": b"{}"})
    m = start_mirror(tmp_path, hub, upstream={"allow_private_redirects": False})
    try:
        assert raw(m.url + "/org/m/resolve/main/config.json")[2] == b"{}"  # same host: fine
        status, h, body = raw_tolerant(m.url + "/org/m/resolve/main/model.safetensors")
        assert status == 502 or len(body) < MiB
        assert hub.count(origin="cdn") == 0
    finally:
        m.stop()


def test_overloaded_mirror_is_retried_by_the_client(hub: FakeHub, tmp_path: Path) -> None:
    """hf-protocol §7.24: a 429 with Retry-After during a fill; hf_hub_download retries."""
    a, b = rand(3 * MiB, 13), rand(3 * MiB, 14)
    hub.commit("org/m", {"a.safetensors": a, "b.safetensors": b})
    hub.bandwidth = 3 * MiB
    m = start_mirror(tmp_path, hub, server={"max_cold_fetches": 1})
    try:
        with ThreadPoolExecutor(2) as pool:
            fa = pool.submit(hf_hub_download, "org/m", "a.safetensors", endpoint=m.url, cache_dir=tmp_path / "ca")
            time.sleep(0.3)
            fb = pool.submit(hf_hub_download, "org/m", "b.safetensors", endpoint=m.url, cache_dir=tmp_path / "cb")
            assert Path(fa.result(60)).read_bytes() == a
            assert Path(fb.result(60)).read_bytes() == b
        assert [line for line in m.log if '" 429 ' in line]
    finally:
        m.stop()


def test_client_cache_works_with_mirror_stopped(hub: FakeHub, tmp_path: Path) -> None:
    """hf-protocol §7.27: after one online snapshot, the client's own cache answers."""
    files = {"config.json": b'{"model_type": "bert"}', "model.safetensors": rand(MiB, 15)}
    hub.commit("org/m", files)
    m = start_mirror(tmp_path, hub)
    snap = snapshot_download("org/m", endpoint=m.url, cache_dir=tmp_path / "c")
    assert m.stop() == 0
    assert snapshot_download("org/m", endpoint=m.url, cache_dir=tmp_path / "c") == snap
    p = hf_hub_download("org/m", "config.json", revision="main", endpoint=m.url, cache_dir=tmp_path / "c")
    assert Path(p).read_bytes() == files["config.json"]


def test_whoami_passes_through(hub: FakeHub, tmp_path: Path) -> None:
    m = start_mirror(tmp_path, hub)
    try:
        assert HfApi(endpoint=m.url, token=TOKEN).whoami()["name"] == "alice"
        status, h, _ = raw(m.url + "/api/whoami-v2")
        assert status == 401
    finally:
        m.stop()


def test_bit_rot_in_a_cached_chunk_is_never_served(hub: FakeHub, tmp_path: Path) -> None:
    """threat-model C6: a flipped byte on disk is caught by blake3 before it is sent;
    the chunk is quarantined and the file comes again from upstream."""
    data = rand(6 * MiB + 5, 16)
    hub.commit("org/m", {"model.safetensors": data})
    m = start_mirror(tmp_path, hub)
    try:
        url = m.url + "/org/m/resolve/main/model.safetensors"
        assert raw(url)[2] == data
        deadline = time.monotonic() + 20
        while _stats(m)["files"] == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        chunk = max((p for p in (m.data_dir / "chunks").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        blob = bytearray(chunk.read_bytes())
        blob[len(blob) // 2] ^= 0x01
        chunk.write_bytes(bytes(blob))
        _status, _h, body = raw_tolerant(url)
        assert body != data
        assert (m.data_dir / "quarantine" / chunk.name).exists()
        p = hf_hub_download("org/m", "model.safetensors", endpoint=m.url, cache_dir=tmp_path / "c")
        assert Path(p).read_bytes() == data
    finally:
        m.stop()


def test_upstream_429_storm_is_absorbed_by_one_fill(hub: FakeHub, tmp_path: Path) -> None:
    """threat-model U7: upstream answers 429 + Retry-After twice; 8 clients of one cold
    file all get it, and upstream sees one request per retry, not per client."""
    data = rand(4 * MiB + 1, 17)
    hub.commit("org/m", {"model.safetensors": data})
    m = start_mirror(tmp_path, hub)
    try:
        assert raw(m.url + "/org/m/resolve/main/model.safetensors", "HEAD")[0] == 200
        hub.reset_counters()
        hub.fail_status(429, times=2, retry_after=1, paths_glob="*/resolve/*")
        bodies = _get_all(m.url + "/org/m/resolve/main/model.safetensors", 8)
        assert all(b == data for b in bodies)
        assert hub.count("GET", path_contains="/resolve/") == 3
    finally:
        m.stop()


def test_upstream_failure_before_first_byte_gets_an_error_status(hub: FakeHub, tmp_path: Path) -> None:
    data = rand(2 * MiB, 18)
    hub.commit("org/m", {"model.safetensors": data})
    m = start_mirror(tmp_path, hub, upstream={"max_resumes": 1})
    try:
        assert raw(m.url + "/org/m/resolve/main/model.safetensors", "HEAD")[0] == 200
        hub.fail_status(500, paths_glob="*/resolve/*")
        status, h, body = raw(m.url + "/org/m/resolve/main/model.safetensors")
        assert status == 502 and "error" in json.loads(body)
        hub.clear_faults()
        assert raw(m.url + "/org/m/resolve/main/model.safetensors")[2] == data
    finally:
        m.stop()


def test_fill_outlives_the_client_that_started_it(hub: FakeHub, tmp_path: Path) -> None:
    """threat-model L2: the first client leaves after 1 MiB; the fetch goes on, the
    content is stored, and nobody fetches it again."""
    import http.client

    data = rand(12 * MiB + 3, 19)
    hub.commit("org/m", {"model.safetensors": data})
    hub.bandwidth = 12 * MiB
    m = start_mirror(tmp_path, hub)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", m.port, timeout=30)
        conn.request("GET", "/org/m/resolve/main/model.safetensors")
        resp = conn.getresponse()
        assert len(resp.read(MiB)) == MiB
        conn.close()
        deadline = time.monotonic() + 30
        while _stats(m)["files"] == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        hub.bandwidth = None
        hub.reset_counters()
        assert raw(m.url + "/org/m/resolve/main/model.safetensors")[2] == data
        assert hub.bytes_sent == 0
    finally:
        m.stop()
