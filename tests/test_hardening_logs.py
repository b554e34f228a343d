"""What the daemon logs under hostile or careless clients (issue 14, defects 3, 4, 5, 9
and the token half of 15): a client cannot forge a log line, a client that goes away is
one access line with status 499, a request aiohttp's parser rejects is one rate-limited
line without the input it echoed (tokens included), and `mirror serve` on a taken port
exits with one line instead of hanging. Real daemon subprocess, real sockets, fake Hub.
"""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.hubenv import MiB, rand, raw, start_mirror  # isort: skip

from mirror import logsafe
from tests.daemon import MirrorDaemon
from tests.fakehub import FakeHub

_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")


def _exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes, return all the server answers until it closes the connection
    (every request here ends in a close: `Connection: close` or a parser rejection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        got = b""
        for _ in range(1000):
            try:
                piece = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not piece:
                break
            got += piece
        return got


def _wait_for(m: MirrorDaemon, needle: str, count: int = 1, timeout: float = 30.0) -> list[str]:
    """The log lines holding `needle`, once there are `count` of them (the daemon's stderr
    is read by a thread; 30 s is far beyond any write-to-read delay)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in list(m.log) if needle in line]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def _assert_every_line_is_a_record(m: MirrorDaemon) -> None:
    # The CLI's own first line (which data dir it uses) comes before the daemon logs.
    for line in [x for x in list(m.log) if not x.startswith("mirror: data dir ")]:
        assert _RECORD.match(line), f"log line that is not a record of its own: {line!r}"
        assert line.isprintable(), f"raw control character in the log: {line!r}"


def test_path_with_newline_cannot_forge_a_log_line(hub: FakeHub, tmp_path: Path) -> None:
    """Defect 3: a path that decodes to CR/LF/ESC/U+2028 is escaped in the access line."""
    hub.commit("acme/tiny", {"config.json": b"{}"})
    m = start_mirror(tmp_path, hub)
    try:
        forged = "2026-11-29%2010:00:00,000%20ERROR%20mirror.fill:%20FORGED%20LINE"
        for sep in ("%0a", "%0d%0a", "%0d", "%1b[2K%0d", "%e2%80%a8", "%c2%85"):
            _exchange(m.port, f"GET /acme/tiny/resolve/main/x{sep}{forged} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        assert raw(m.url + "/healthz")[0] == 200
        lines = _wait_for(m, "FORGED LINE", count=6)
        assert len(lines) == 6
        for line in lines:
            assert " INFO mirror.access: " in line and ("/x\\x" in line or "/x\\u2028" in line), line
        assert not any(line.startswith("2026-11-29 10:00:00,000") for line in m.log)
    finally:
        assert m.stop() == 0
    _assert_every_line_is_a_record(m)


def test_log_records_escape_arguments_and_indent_tracebacks() -> None:
    """Defect 3 for every logger, not only the access line: the filter the daemon
    installs on its handlers escapes the rendered message and the traceback."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("test.hardening.logsafe")
    logger.propagate = False
    logger.addHandler(handler)
    root = logging.Logger("test-root")
    root.addHandler(handler)
    logsafe.install(root)
    try:
        logger.warning("fill of %s %s failed", "acme/x\nERROR mirror: FORGED", "a\x00b\x1b[31m" + "z" * 5000)
        try:
            raise ValueError("bad path 'x\nERROR mirror: FORGED TOO'")
        except ValueError:
            logger.exception("crashed on %s", "p\r\nERROR mirror: FORGED THREE")
    finally:
        logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert not [line for line in lines if line.startswith("ERROR mirror: FORGED")]
    assert lines[0].startswith("WARNING test.hardening.logsafe: fill of acme/x\\x0aERROR mirror: FORGED a\\x00b\\x1b[31m")
    assert lines[0].endswith(" more chars]") and len(lines[0]) < 2200
    assert lines[1] == "ERROR test.hardening.logsafe: crashed on p\\x0d\\x0aERROR mirror: FORGED THREE"
    assert all(line.startswith(logsafe.TRACE_PREFIX) for line in lines[2:]) and len(lines) > 3


def test_client_that_disconnects_mid_download_is_a_499_not_a_500(hub: FakeHub, tmp_path: Path) -> None:
    """Defect 4: a real client reads part of a large file and closes its socket, on a
    whole-file GET and on a Range GET (a parallel downloader dropping a connection)."""
    import http.client

    data = rand(64 * MiB + 5, 41)
    hub.commit("acme/big", {"model.safetensors": data})
    m = start_mirror(tmp_path, hub)
    try:
        url = "/acme/big/resolve/main/model.safetensors"
        assert raw(m.url + url)[2] == data  # cached: the store streams faster than the client reads
        for headers in ({}, {"Range": f"bytes={MiB}-"}):
            conn = http.client.HTTPConnection("127.0.0.1", m.port, timeout=30)
            conn.request("GET", url, headers=headers)
            resp = conn.getresponse()
            assert resp.status in (200, 206)
            assert len(resp.read(MiB)) == MiB
            conn.sock.shutdown(socket.SHUT_RDWR)
            conn.close()
        aborted = _wait_for(m, '" 499 ', count=2)
        assert len(aborted) == 2 and all("mirror.access" in line and url in line for line in aborted)
        for line in aborted:
            sent = int(line.split('" 499 ')[1].split()[0])
            # The access line's tail (issue 12): request id, route group, source, cache outcome.
            assert re.search(r"ms id=[0-9a-f]{16} group=files\.read source=(store|fill) cache=(hit|miss)$", line), line
            assert MiB <= sent < len(data), line  # the bytes actually sent, not the announced length
        assert raw(m.url + "/healthz")[0] == 200
    finally:
        assert m.stop() == 0
    assert not [line for line in m.log if " 500 " in line or "ERROR" in line or "Traceback" in line]
    _assert_every_line_is_a_record(m)


_MALFORMED = [
    b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: a\x1b[31mb\r\n\r\n",
]


def test_malformed_requests_are_one_rate_limited_line_each(hub: FakeHub, tmp_path: Path) -> None:
    """Defect 5: 60 rejected requests give at most one line each, no traceback, and far
    fewer lines than requests (at most BURST per WINDOW = 60 s; sending 60 small requests
    on loopback cannot take the several minutes that would allow 60 lines)."""
    m = start_mirror(tmp_path, hub)
    try:
        for i in range(60):
            assert _exchange(m.port, _MALFORMED[i % len(_MALFORMED)]).startswith(b"HTTP/1.0 400"), i
        assert raw(m.url + "/healthz")[0] == 200
        lines = _wait_for(m, "rejected malformed request", count=logsafe.BURST)
    finally:
        assert m.stop() == 0
    assert logsafe.BURST <= len(lines) < 30
    kinds = " ".join(lines[: len(_MALFORMED)])
    for kind in ("InvalidURLError", "BadStatusLine", "PRI", "Invalid header value char"):
        assert kind in kinds
    assert all(" WARNING aiohttp.server: rejected malformed request from 127.0.0.1: 400 " in line for line in lines)
    assert not [line for line in m.log if "Traceback" in line or "ERROR" in line]
    _assert_every_line_is_a_record(m)


def test_rate_limit_counts_what_it_refused() -> None:
    """The parser-error limiter: `burst` lines per window, then the next allowed line
    carries the number refused meanwhile (a clock the test steps, not the wall clock)."""
    now = [100.0]
    limit = logsafe.RateLimit(burst=3, window=60.0, clock=lambda: now[0])
    assert [limit.allow() for _ in range(5)] == [(True, 0)] * 3 + [(False, 0)] * 2
    now[0] += 59.0
    assert limit.allow() == (False, 0)
    now[0] += 1.0
    assert limit.allow() == (True, 3)
    assert limit.allow() == (True, 0)


def test_malformed_authorization_header_never_logs_the_token(hub: FakeHub, tmp_path: Path) -> None:
    """Defect 15 (tokens in the log): a bad Authorization header is rejected by the
    parser, which echoes the header; the log line names the error, never the token."""
    secret = "hf_SENTINELuser_malformed_q8Zx3"  # an H7 sentinel (threat-model A4)
    requests = [
        f"GET /api/whoami-v2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\x01\x02\r\n\r\n".encode(),
        f"GET /api/whoami-v2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}{'A' * 20000}\r\n\r\n".encode(),
        f"GET /api/whoami-v2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\x00x\r\n\r\n".encode(),
        f"GET /api/whoami-v2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\x7f\r\n\r\n".encode(),
    ]
    m = start_mirror(tmp_path, hub)
    try:
        for req in requests:
            assert _exchange(m.port, req).startswith(b"HTTP/1.0 400")
        lines = _wait_for(m, "rejected malformed request", count=len(requests))
    finally:
        assert m.stop() == 0
    assert len(lines) == len(requests)  # each was logged, as one line...
    assert not [line for line in m.log if "SENTINEL" in line or "Bearer" in line]  # ...without the token


def test_serve_on_a_taken_port_exits_with_one_line(hub: FakeHub, tmp_path: Path) -> None:
    """Defect 9: the bind fails after the services started; the process must release
    them and exit non-zero with one line (60 s is a generous bound: it exits in about a
    second; before the fix it never exits)."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIRROR_", "HF_"))}
    cmd = [sys.executable, "-m", "mirror", "serve", "--data-dir", str(data_dir), "--host", "127.0.0.1",
           "--port", str(port), "--upstream", hub.url]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    finally:
        taken.close()
    # Besides the CLI's note of which data dir it uses, one line says why.
    lines = [x for x in proc.stderr.strip().splitlines() if not x.startswith("mirror: data dir ")]
    assert proc.returncode == 1, proc.stderr
    assert lines == [f"mirror: cannot listen on 127.0.0.1:{port}: Address already in use"], proc.stderr
    # Everything it opened was released cleanly: a daemon on the same data dir comes up.
    m = MirrorDaemon(data_dir, hub.url).start()
    try:
        assert raw(m.url + "/healthz")[0] == 200
    finally:
        assert m.stop() == 0
