"""Transport and network (issue 10 item 6): TLS with a test CA (`trustme`), the address
allowlist, and the admin routes on their own listener (TCP or a 0600 unix socket).

The clients are real: `huggingface_hub` and the `hf` CLI run as subprocesses, because
they read `SSL_CERT_FILE` and `HF_ENDPOINT` at import; TLS versions are probed with the
standard `ssl` module; the unix socket is spoken to with `http.client` over AF_UNIX.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import sqlite3
import ssl
import stat
import subprocess
import sys
import warnings
from pathlib import Path

from tests.hubenv import access_lines, rand, raw, sha256, start_mirror  # isort: skip

import pytest
import trustme

import mirror.audit.log
from mirror.http.allowlist import Allowlist, DenialBudget
from mirror.http.tls import server_context
from tests.daemon import MirrorDaemon
from tests.fakehub import FakeHub

VENV_BIN = Path(sys.executable).parent


class Certs:
    def __init__(self, root: Path) -> None:
        self.ca = trustme.CA()
        leaf = self.ca.issue_cert("127.0.0.1", "localhost")
        root.mkdir(parents=True, exist_ok=True)
        self.ca_file = root / "ca.pem"
        self.cert = root / "cert.pem"
        self.key = root / "key.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        leaf.cert_chain_pems[0].write_to_path(str(self.cert))
        for pem in leaf.cert_chain_pems[1:]:
            pem.write_to_path(str(self.cert), append=True)
        leaf.private_key_pem.write_to_path(str(self.key))
        os.chmod(self.key, 0o600)

    def server(self) -> dict[str, object]:
        return {"tls_cert": str(self.cert), "tls_key": str(self.key)}

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        return ctx


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs(tmp_path / "tls")


def _client_env(m: MirrorDaemon, certs: Certs, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MIRROR_"))}
    env.update(SSL_CERT_FILE=str(certs.ca_file), REQUESTS_CA_BUNDLE=str(certs.ca_file), HF_ENDPOINT=m.url,
               HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1", NO_PROXY="127.0.0.1,localhost")
    return env


_DOWNLOAD = """
import hashlib, sys
from huggingface_hub import hf_hub_download
path = hf_hub_download(sys.argv[1], sys.argv[2])
print(hashlib.sha256(open(path, "rb").read()).hexdigest())
"""


def _tls_get(url_host: str, port: int, path: str, ctx: ssl.SSLContext) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPSConnection(url_host, port, context=ctx, timeout=30)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, dict(r.headers), r.read()
    finally:
        conn.close()


def _handshake(port: int, ctx: ssl.SSLContext) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw_sock:
        with ctx.wrap_socket(raw_sock, server_hostname="127.0.0.1") as tls:
            return str(tls.version())


def _admin_url(m: MirrorDaemon) -> str:
    for line in m.log:
        found = re.search(r"admin routes on (\S+)", line)
        if found:
            return found.group(1)
    raise AssertionError("no admin listener line:\n" + "\n".join(m.log[-10:]))


# --- TLS -------------------------------------------------------------------------------


def test_hf_client_and_cli_download_over_tls(hub: FakeHub, tmp_path: Path, certs: Certs) -> None:
    weights = rand(3 << 20, 61)
    hub.commit("org/m", {"config.json": b'{"model_type": "bert"}', "model.safetensors": weights})
    m = start_mirror(tmp_path, hub, server=certs.server())
    try:
        assert m.scheme == "https" and any("serving on https://127.0.0.1:" in line for line in m.log)
        env = _client_env(m, certs, tmp_path / "hf-home")
        py = subprocess.run([sys.executable, "-c", _DOWNLOAD, "org/m", "model.safetensors"], env=env,
                            capture_output=True, text=True, timeout=120)
        assert py.returncode == 0, py.stderr[-2000:]
        assert py.stdout.strip() == sha256(weights)

        out = tmp_path / "cli-out"
        cli = subprocess.run([str(VENV_BIN / "hf"), "download", "org/m", "config.json", "--local-dir", str(out)],
                             env=env, capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0, cli.stderr[-2000:]
        assert (out / "config.json").read_bytes() == b'{"model_type": "bert"}'

        # Without the CA the client refuses the certificate: verification is really on.
        env.pop("SSL_CERT_FILE")
        env.pop("REQUESTS_CA_BUNDLE")
        env["HF_HOME"] = str(tmp_path / "hf-home-2")
        info = "from huggingface_hub import HfApi; HfApi().model_info('org/m')"  # (a download would retry)
        bad = subprocess.run([sys.executable, "-c", info], env=env, capture_output=True, text=True, timeout=120)
        assert bad.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in bad.stderr
    finally:
        assert m.stop() == 0


def test_tls_versions_and_plain_http(hub: FakeHub, tmp_path: Path, certs: Certs) -> None:
    m = start_mirror(tmp_path, hub, server=certs.server())
    try:
        # TLS 1.3 by default; TLS 1.2 still accepted.
        assert _handshake(m.port, certs.client_context()) == "TLSv1.3"
        v12 = certs.client_context()
        v12.maximum_version = ssl.TLSVersion.TLSv1_2
        assert _handshake(m.port, v12) == "TLSv1.2"
        # A client that offers at most TLS 1.1 (its own floor lowered) is refused.
        # (Such a client does complete a TLS 1.1 handshake with a server that allows it.)
        old = certs.client_context()
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises(ssl.SSLError):
            _handshake(m.port, old)
        # Plain HTTP to the TLS port gets no HTTP answer.
        with pytest.raises((http.client.HTTPException, OSError)):
            conn = http.client.HTTPConnection("127.0.0.1", m.port, timeout=10)
            try:
                conn.request("GET", "/healthz")
                conn.getresponse().read()
            finally:
                conn.close()
        # The daemon is unharmed and answers over TLS.
        status, _, body = _tls_get("127.0.0.1", m.port, "/healthz", certs.client_context())
        assert status == 200 and json.loads(body)["status"] == "ok"
    finally:
        assert m.stop() == 0


def test_server_context_floor_is_tls12(certs: Certs) -> None:
    ctx = server_context(str(certs.cert), str(certs.key))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION


def _bad_key_mode(c: Certs) -> str:
    os.chmod(c.key, 0o644)
    return "readable by others"


def _missing_cert(c: Certs) -> str:
    c.cert.unlink()
    return "cannot read the TLS certificate"


def _garbage_cert(c: Certs) -> str:
    c.cert.write_text("not a certificate\n")
    return "not a PEM certificate"


def _mismatched_key(c: Certs) -> str:
    c.ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(c.key))
    return "does not match the certificate"


@pytest.mark.parametrize("breakage", [_bad_key_mode, _missing_cert, _garbage_cert, _mismatched_key])
def test_unusable_tls_files_stop_the_daemon_with_one_line(hub: FakeHub, tmp_path: Path, certs: Certs, breakage) -> None:  # type: ignore[no-untyped-def]
    expected = breakage(certs)
    m = MirrorDaemon(tmp_path / "data", hub.url, server=certs.server())
    with pytest.raises(RuntimeError):
        m.start()
    assert m.proc is not None and m.proc.wait(30) != 0
    m._reap()  # noqa: SLF001 - the reader thread has the whole stderr once joined
    # One line says what is wrong (the other names the data dir, as every command does).
    lines = [line for line in m.log if line.strip() and not line.startswith("mirror: data dir ")]
    assert len(lines) == 1 and expected in lines[0], m.log
    assert not any("serving on" in line for line in m.log)


# --- the address allowlist -----------------------------------------------------------------


_PATHS = [
    "/api/models/org/m",
    "/org/m/resolve/main/config.json",
    "/_peer/v1/hello",
    "/healthz",
    "/no/such/route",
]


def test_allowlist_refuses_other_addresses_everywhere(hub: FakeHub, tmp_path: Path) -> None:
    hub.commit("org/m", {"config.json": b"{}"})
    m = start_mirror(tmp_path, hub, server={"allow": ["10.0.0.0/8", "::ffff:10.0.0.0/104"]})
    try:
        for path in _PATHS:
            status, headers, body = raw(m.url + path)
            assert status == 403, path
            assert headers.get("X-Error-Code") == "AddressNotAllowed", path
            assert json.loads(body) == {"error": "this address is not allowed to use this mirror"}
        assert hub.count() == 0  # nothing behind the check ran
    finally:
        assert m.stop() == 0
    assert len(access_lines(m, '" 403 ')) == len(_PATHS)  # the whole log is read once stopped
    if "STUB" in (mirror.audit.log.__doc__ or ""):
        return  # the audit log's storage arrives with item 5; see test below
    rows = _denials(m)
    assert [r["target"] for r in rows] == _PATHS


def _denials(m: MirrorDaemon) -> list[dict[str, object]]:
    db = sqlite3.connect(f"file:{m.data_dir / 'catalog.db'}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT actor, action, target, outcome, detail FROM audit_log WHERE action = 'auth.denied' ORDER BY seq").fetchall()
        return [dict(r) for r in rows]
    finally:
        db.close()


@pytest.mark.skipif("STUB" in (mirror.audit.log.__doc__ or ""), reason="the audit log's storage arrives with item 5")
def test_refused_addresses_are_audited(hub: FakeHub, tmp_path: Path) -> None:
    m = start_mirror(tmp_path, hub, server={"allow": ["10.0.0.0/8"]})
    try:
        assert raw(m.url + "/api/models/org/m")[0] == 403
    finally:
        assert m.stop() == 0
    (row,) = _denials(m)
    assert row["actor"] == "address:127.0.0.1" and row["outcome"] == "denied"
    assert row["target"] == "/api/models/org/m"
    assert json.loads(str(row["detail"])) == {"reason": "address not allowed"}


def test_allowlist_serves_listed_addresses(hub: FakeHub, tmp_path: Path) -> None:
    hub.commit("org/m", {"config.json": b'{"a": 1}'})
    m = start_mirror(tmp_path, hub, server={"allow": ["10.0.0.0/8", "127.0.0.1/32"]})
    try:
        assert raw(m.url + "/healthz")[0] == 200
        status, _, body = raw(m.url + "/org/m/resolve/main/config.json")
        assert (status, body) == (200, b'{"a": 1}')
    finally:
        assert m.stop() == 0


def test_allowlist_addresses() -> None:
    allow = Allowlist(["10.0.0.0/8", "127.0.0.1/32", "fd00::/8", "fe80::/10"])
    assert allow.permits("10.1.2.3") and allow.permits("127.0.0.1")
    assert not allow.permits("127.0.0.2") and not allow.permits("192.168.1.1")
    assert allow.permits("::ffff:10.1.2.3")  # a dual-stack listener's view of an IPv4 client
    assert not allow.permits("::ffff:192.168.1.1")
    assert allow.permits("fd12::1") and allow.permits("fe80::1%eth0")
    assert not allow.permits("2001:db8::1")
    assert not allow.permits("") and not allow.permits(None) and not allow.permits("not-an-ip")
    assert Allowlist([]).permits("192.168.1.1")  # empty: everyone


def test_denial_budget_counts_what_it_suppresses() -> None:
    now = [0.0]
    budget = DenialBudget(per_minute=3, now=lambda: now[0])
    assert [budget.take() for _ in range(5)] == [0, 0, 0, None, None]
    now[0] += 20.0  # one token back
    assert budget.take() == 2  # the first recorded after a gap says how many were not
    assert budget.take() is None


# --- the admin listener --------------------------------------------------------------------


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=10)
        self.unix_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.unix_path)


def _unix_get(path: Path, url_path: str) -> tuple[int, bytes]:
    conn = _UnixHTTP(path)
    try:
        conn.request("GET", url_path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_admin_routes_on_a_unix_socket(hub: FakeHub, tmp_path: Path) -> None:
    sock = tmp_path / "admin.sock"
    m = start_mirror(tmp_path, hub, server={"admin_listen": f"unix:{sock}"})
    try:
        assert _admin_url(m) == f"unix:{sock}"
        assert stat.S_ISSOCK(os.lstat(sock).st_mode) and stat.S_IMODE(os.lstat(sock).st_mode) == 0o600
        assert _unix_get(sock, "/_admin/v1/ping") == (200, b'{"ok": true}')
        assert _unix_get(sock, "/healthz")[0] == 404  # only the admin routes live there
        assert raw(m.url + "/_admin/v1/ping")[0] == 404  # and they are not on the main port
        assert raw(m.url + "/healthz")[0] == 200
        # A daemon that died leaves its socket; the next start replaces it.
        m.kill()
        assert sock.exists()
        m.start()
        assert _unix_get(sock, "/_admin/v1/ping")[0] == 200
    finally:
        assert m.stop() == 0
    assert not sock.exists()


def test_admin_socket_path_in_use_or_not_a_socket_is_refused(hub: FakeHub, tmp_path: Path) -> None:
    path = tmp_path / "admin.sock"
    path.write_text("a file\n")
    m = MirrorDaemon(tmp_path / "data", hub.url, server={"admin_listen": f"unix:{path}"})
    with pytest.raises(RuntimeError):
        m.start()
    assert m.proc is not None and m.proc.wait(30) != 0
    m._reap()  # noqa: SLF001
    assert m.log[-1].endswith("the path exists and is not a socket"), m.log
    assert path.read_text() == "a file\n"

    path.unlink()
    # (The allowlist does not apply on the socket: its file mode is the gate.)
    first = start_mirror(tmp_path, hub, server={"admin_listen": f"unix:{path}", "allow": ["10.0.0.0/8"]})
    try:
        assert raw(first.url + "/healthz")[0] == 403
        second = MirrorDaemon(tmp_path / "data2", hub.url, server={"admin_listen": f"unix:{path}"})
        with pytest.raises(RuntimeError):
            second.start()
        assert second.proc is not None and second.proc.wait(30) != 0
        second._reap()  # noqa: SLF001
        assert any("another process is listening there" in line for line in second.log), second.log
        assert _unix_get(path, "/_admin/v1/ping")[0] == 200  # the first daemon's socket is intact
    finally:
        assert first.stop() == 0


def test_admin_routes_on_a_tcp_listener(hub: FakeHub, tmp_path: Path, certs: Certs) -> None:
    m = start_mirror(tmp_path, hub, server={"admin_listen": "127.0.0.1:0", **certs.server()})
    try:
        admin = _admin_url(m)
        assert admin.startswith("https://127.0.0.1:")  # TLS on the admin listener too
        port = int(admin.rsplit(":", 1)[1])
        assert port != m.port
        ctx = certs.client_context()
        status, _, body = _tls_get("127.0.0.1", port, "/_admin/v1/ping", ctx)
        assert (status, json.loads(body)) == (200, {"ok": True})
        assert _tls_get("127.0.0.1", port, "/healthz", ctx)[0] == 404
        assert _tls_get("127.0.0.1", m.port, "/_admin/v1/ping", ctx)[0] == 404
    finally:
        assert m.stop() == 0


def test_admin_listener_has_the_same_middlewares(hub: FakeHub, tmp_path: Path) -> None:
    """The allowlist applies to a TCP admin listener; the access log covers it."""
    m = start_mirror(tmp_path, hub, server={"admin_listen": "127.0.0.1:0", "allow": ["10.0.0.0/8"]})
    try:
        status, headers, _ = raw(_admin_url(m) + "/_admin/v1/ping")
        assert status == 403 and headers.get("X-Error-Code") == "AddressNotAllowed"
    finally:
        assert m.stop() == 0
    assert access_lines(m, '"GET /_admin/v1/ping" 403')


def test_admin_routes_on_the_main_listener_by_default(hub: FakeHub, tmp_path: Path) -> None:
    m = start_mirror(tmp_path, hub)
    try:
        status, _, body = raw(m.url + "/_admin/v1/ping")
        assert (status, json.loads(body)) == (200, {"ok": True})
        assert not any("admin routes on" in line for line in m.log)
    finally:
        assert m.stop() == 0
