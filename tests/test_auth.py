"""Access control at the edge (issue 10 items 1-3, threat-model A1/A3): mirror tokens with
roles and grants, default deny, repo rules, local-only namespaces and the upstream
service token, through a real daemon, the real `mirror` CLI and huggingface_hub."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.hubenv import MiB, OTHER, TOKEN, rand, raw, sha256, start_mirror  # isort: skip

import pytest
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import HfHubHTTPError

from mirror.auth.permissions import ACTIONS, table
from mirror.config import AuthConfig
from tests.clihelp import clean_env
from tests.daemon import MirrorDaemon
from tests.fakehub import FakeHub

HERE = Path(__file__).parent


def cli(m: MirrorDaemon, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mirror", *argv, "--config", str(m.config_path)],
                          capture_output=True, text=True, env=clean_env(), timeout=60)


def token(m: MirrorDaemon, name: str, role: str, *extra: str) -> str:
    p = cli(m, "token", "create", "--name", name, "--role", role, "--json", *extra)
    assert p.returncode == 0, p.stderr
    return str(json.loads(p.stdout)["token"])


def get(m: MirrorDaemon, path: str, tok: str | None = None) -> tuple[int, dict[str, str], bytes]:
    return raw(m.url + path, headers={"Authorization": f"Bearer {tok}"} if tok else {})


def test_the_permission_table_is_the_checked_in_one() -> None:
    # The exact allow/deny table, as data (threat-model A3): a change to permissions.py
    # must change this file too, on purpose.
    expected = json.loads((HERE / "auth_table.json").read_text())
    assert table(AuthConfig()) == expected["anonymous_read"]
    assert table(AuthConfig(anonymous_read=False, auditor_files=True)) == expected["token_required_auditor_files"]
    assert set(ACTIONS) == set(expected["anonymous_read"]["admin"])


def test_tokens_roles_and_grants_through_huggingface_hub(hub: FakeHub, tmp_path: Path) -> None:
    a, b, c = rand(MiB + 1, 1), rand(MiB + 2, 2), b'{"x": 1}'
    hub.commit("team/model", {"model.safetensors": a, "config.json": c})
    hub.commit("other/model", {"model.safetensors": b})
    m = start_mirror(tmp_path, hub, auth={"anonymous_read": False})
    try:
        admin = token(m, "root", "admin")
        dev = token(m, "ci-job", "developer", "--grant", "team")
        auditor = token(m, "audit", "auditor")
        assert admin.startswith("mm_") and dev.startswith("mm_")
        # No token: 401 TokenRequired; health still answers.
        status, h, _ = get(m, "/team/model/resolve/main/config.json")
        assert status == 401 and h["X-Error-Code"] == "TokenRequired"
        assert get(m, "/healthz")[0] == 200
        # The developer pulls within its grants with huggingface_hub (token as HF_TOKEN would send it).
        p = hf_hub_download("team/model", "model.safetensors", endpoint=m.url, token=dev, cache_dir=tmp_path / "c1")
        assert Path(p).read_bytes() == a
        with pytest.raises(HfHubHTTPError) as exc:
            hf_hub_download("other/model", "model.safetensors", endpoint=m.url, token=dev, cache_dir=tmp_path / "c2")
        assert exc.value.response.status_code == 403 and "outside the grants" in str(exc.value)
        status, h, _ = get(m, "/api/models/other/model/revision/main", dev)
        assert status == 403 and h["X-Mirror-Error-Code"] == "AccessDenied" and "outside the grants" in h["X-Error-Message"]
        # The auditor reads metadata, not bytes; the admin reads everything.
        assert get(m, "/api/models/team/model/revision/main", auditor)[0] == 200
        status, h, body = get(m, "/team/model/resolve/main/model.safetensors", auditor)
        assert status == 403 and a[:32] not in body
        assert get(m, "/other/model/resolve/main/model.safetensors", admin)[2] == b
        # A mirror token never goes upstream; the Hub saw no mm_ bearer at all.
        assert not [r for r in hub.requests if "mm_" in r.headers.get("authorization", "")]
        # Unknown, revoked, expired.
        status, h, _ = get(m, "/api/models/team/model/revision/main", "mm_abcdefgh_" + "x" * 40)
        assert status == 401 and h["X-Error-Code"] == "InvalidToken"
        assert cli(m, "token", "revoke", "ci-job").returncode == 0
        short = token(m, "short", "developer", "--grant", "team/*", "--expires", "1s")
        time.sleep(2.5)  # the daemon re-reads a token row after 2 s
        status, h, _ = get(m, "/api/models/team/model/revision/main", dev)
        assert status == 401 and h["X-Error-Code"] == "TokenRevoked"
        status, h, _ = get(m, "/api/models/team/model/revision/main", short)
        assert status == 401 and h["X-Error-Code"] == "TokenExpired"
        # The last admin cannot be revoked by mistake.
        p = cli(m, "token", "revoke", "root")
        assert p.returncode != 0 and "last admin" in p.stderr
        listing = json.loads(cli(m, "token", "list", "--json").stdout)
        assert {t["name"] for t in listing} == {"root", "ci-job", "audit", "short"}
        assert all("hash" not in t and "token" not in t for t in listing)
        assert next(t for t in listing if t["name"] == "root")["last_used_at"] is not None
    finally:
        m.stop()
    # Neither the daemon's log nor the data directory holds a token in clear.
    assert not [line for line in m.log for t in (admin, dev, auditor, short) if t in line]
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert admin.encode() not in blob and dev.encode() not in blob, path


def test_repo_rules_deny_and_local_only_never_reach_upstream(hub: FakeHub, tmp_path: Path) -> None:
    data = rand(MiB, 3)
    hub.commit("secret/model", {"model.safetensors": data})
    hub.commit("lab/model", {"model.safetensors": data, "config.json": b"{}"})
    m = start_mirror(tmp_path, hub, auth={"deny": ["secret/*"], "local_only": ["island"]})
    try:
        status, h, _ = get(m, "/secret/model/resolve/main/model.safetensors")
        assert status == 403 and h["X-Mirror-Error-Code"] == "RepoDenied"
        assert get(m, "/api/models/secret/model/revision/main")[0] == 403
        assert hub.count(path_contains="secret/model") == 0
        # A local-only namespace is never asked upstream, known or not.
        assert get(m, "/island/model/resolve/main/config.json")[0] == 404
        assert hub.count(path_contains="island") == 0
        # Marked local-only at run time: what is cached keeps being served, upstream is not asked.
        assert get(m, "/lab/model/resolve/main/config.json")[2] == b"{}"
        assert cli(m, "local-only", "lab").returncode == 0
        time.sleep(2.5)  # the daemon re-reads run-time rules after 2 s
        hub.reset_counters()
        status, _h, body = get(m, "/lab/model/resolve/main/config.json")
        assert status == 200 and body == b"{}"
        assert get(m, "/lab/model/resolve/main/model.safetensors")[0] in (502, 504, 404)
        assert hub.count() == 0
    finally:
        m.stop()


def test_service_token_is_used_only_for_granted_repos_and_callers(hub: FakeHub, tmp_path: Path) -> None:
    data = rand(MiB + 5, 4)
    hub.create_repo("org/gated", gated="manual")
    hub.create_repo("org/gated2", gated="manual")
    hub.add_token(TOKEN)
    hub.grant("org/gated", TOKEN)
    hub.grant("org/gated2", TOKEN)
    hub.commit("org/gated", {"model.safetensors": data})
    hub.commit("org/gated2", {"model.safetensors": data})
    secret = tmp_path / "service-token"
    secret.write_text(TOKEN + "\n")
    secret.chmod(0o600)
    m = start_mirror(tmp_path, hub, upstream={"service_token_file": str(secret)})
    try:
        dev = token(m, "dev", "developer", "--grant", "org")
        dev2 = token(m, "dev2", "developer", "--grant", "org")
        assert cli(m, "grant", "org/gated", "--to", "dev").returncode == 0
        time.sleep(2.5)
        p = hf_hub_download("org/gated", "model.safetensors", endpoint=m.url, token=dev, cache_dir=tmp_path / "c")
        assert Path(p).read_bytes() == data
        # Not granted: the other token, the other repo, anonymous.
        status, _h, body = get(m, "/org/gated/resolve/main/model.safetensors", dev2)
        assert status in (401, 403) and data[:32] not in body
        assert get(m, "/org/gated2/resolve/main/model.safetensors", dev)[0] in (401, 403)
        assert get(m, "/org/gated/resolve/main/model.safetensors")[0] in (401, 403)
        # The per-user pass-through still works: a Hub token with access, no mirror token.
        p = hf_hub_download("org/gated2", "model.safetensors", endpoint=m.url, token=TOKEN, cache_dir=tmp_path / "c2")
        assert Path(p).read_bytes() == data
        assert get(m, "/org/gated2/resolve/main/model.safetensors", OTHER)[0] in (401, 403)
    finally:
        m.stop()
    # Every read of gated bytes is audited with who read it; the Hub tokens (the service
    # token and the user's) appear nowhere in the audit log, the daemon's log or the data dir.
    records = json.loads(cli(m, "audit", "--action", "files.read.gated", "--json").stdout)
    readers = {(r["actor"], r["target"]) for r in records}
    assert ("dev", "org/gated") in readers and ("anonymous", "org/gated2") in readers, readers
    assert not [line for line in m.log if TOKEN in line or dev in line]
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    # A service-token file others can read is refused at start, in one line.
    secret.chmod(0o644)
    d = MirrorDaemon(tmp_path / "data2", hub.url, upstream={"service_token_file": str(secret)})
    with pytest.raises(RuntimeError) as exc:
        d.start(timeout=20)
    assert "readable by others" in str(exc.value)
    assert sha256(data)


def test_the_cli_answers_like_the_admin_api_for_a_token(hub: FakeHub, tmp_path: Path) -> None:
    # One table for both paths (threat-model A3): with MIRROR_TOKEN set, a CLI command
    # is allowed or refused exactly as the admin API route of the same action.
    m = start_mirror(tmp_path, hub)
    try:
        admin, dev, auditor = token(m, "root", "admin"), token(m, "dev", "developer", "--grant", "team"), token(m, "aud", "auditor")
        cases = [("stats", "/_admin/v1/stats", "GET"), ("gc", "/_admin/v1/gc", "POST"), ("audit", "/_admin/v1/audit", "GET")]
        for tok, role in ((admin, "admin"), (dev, "developer"), (auditor, "auditor")):
            for command, path, method in cases:
                p = subprocess.run([sys.executable, "-m", "mirror", command, "--config", str(m.config_path)],
                                   capture_output=True, text=True, env=clean_env(MIRROR_TOKEN=tok), timeout=60)
                status = raw(m.url + path, method=method, headers={"Authorization": f"Bearer {tok}",
                                                                   "Content-Type": "application/json"},
                             data=b"{}" if method == "POST" else None)[0]
                http_ok, cli_ok = status < 400, p.returncode == 0
                assert http_ok == cli_ok, (role, command, status, p.returncode, p.stderr)
                if not cli_ok:
                    assert p.returncode == 3 and "may not" in p.stderr.splitlines()[-1], p.stderr
        p = subprocess.run([sys.executable, "-m", "mirror", "stats", "--config", str(m.config_path)],
                           capture_output=True, text=True, env=clean_env(MIRROR_TOKEN="mm_nope"), timeout=60)
        assert p.returncode != 0 and "malformed mirror token" in p.stderr and "ignoring environment" not in p.stderr
    finally:
        m.stop()
