"""The whole role x route-group x action matrix (issue 10 item 8, threat-model A3), over
real daemons: every route group (health, Hub API, files, metrics, peer, admin reads,
admin writes, audit, the web dashboard) for every role (admin, developer with grants, auditor,
anonymous), under two configs, with the exact status and error code. The expectation comes from the
checked-in table `tests/auth_table.json` (data, default deny), not from the code under
test: a cell the table allows answers 200, one it refuses answers 401 TokenRequired to a
caller without a token and 403 AccessDenied to one with a token; repo reads outside a
developer's grants are refused whatever the table says; unsigned peer requests are 401
PeerUnsigned for everyone (peers authenticate by key). Also: the admin API's input
checks, revoked and expired tokens, the last admin, and two-factor admin over HTTP.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from tests.hubenv import raw  # isort: skip

import pyotp
import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError

from tests.daemon import MirrorDaemon
from tests.fakehub import FakeHub
from tests.test_auth import cli, token

HERE = Path(__file__).parent
TABLE = json.loads((HERE / "auth_table.json").read_text())
CONFIG = b"{\"x\": 1}"
WEIGHTS = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(256)) * 4
ROLES = ("admin", "developer", "auditor", "anonymous")
# Config name in auth_table.json -> the [auth] table of its daemon.
CONFIGS = {"anonymous_read": {}, "token_required_auditor_files": {"anonymous_read": False, "auditor_files": True}}
DEV_GRANTS = ("team",)

Body = Callable[[str], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Route:
    group: str
    method: str
    path: str
    action: str  # what auth_table.json is asked about
    body: Body = lambda _tag: None
    repo: str = ""  # the repo a Hub-facing route names (developer grants apply)
    hub_facing: bool = False  # a refused repo read answers X-Error-Code GatedRepo (hf clients understand it)
    ok: int = 200  # the status of an allowed call


def _key() -> str:
    return secrets.token_hex(32)


def _report() -> dict[str, Any]:
    return {"repo": "team/model", "revision": "main", "name": "accuracy", "value": 0.9}


A = "/_admin/v1"
ROUTES = [
    Route("health", "GET", "/healthz", "health"),
    Route("health", "GET", "/readyz", "health"),
    Route("health", "GET", f"{A}/ping", "health"),
    Route("hub", "GET", "/api/models/team/model/revision/main", "hub.read", repo="team/model", hub_facing=True),
    Route("hub", "GET", "/api/models/team/model/tree/main", "hub.read", repo="team/model", hub_facing=True),
    Route("hub", "GET", "/api/models/other/model/revision/main", "hub.read", repo="other/model", hub_facing=True),
    Route("files", "GET", "/team/model/resolve/main/config.json", "files.read", repo="team/model", hub_facing=True),
    Route("files", "HEAD", "/team/model/resolve/main/model.safetensors", "files.read", repo="team/model", hub_facing=True),
    Route("files", "GET", "/other/model/resolve/main/config.json", "files.read", repo="other/model", hub_facing=True),
    Route("metrics", "GET", "/metrics", "metrics.read"),
    Route("peer", "GET", "/_peer/v1/hello", "peer.api"),
    Route("peer", "POST", "/_peer/v1/have", "peer.api", lambda _t: {"chunks": []}),
    Route("admin-read", "GET", f"{A}/repos", "cache.read"),
    Route("admin-read", "GET", f"{A}/stats", "cache.read"),
    Route("admin-read", "GET", f"{A}/peers", "cache.read"),
    Route("admin-read", "GET", f"{A}/tokens", "tokens.manage"),
    Route("admin-read", "GET", f"{A}/grants", "tokens.manage"),
    Route("admin-write", "POST", f"{A}/pull", "pull.request", lambda _t: {"repo": "team/model", "revision": "main"},
          hub_facing=True),
    Route("admin-write", "POST", f"{A}/gc", "cache.write", lambda _t: {"dry_run": True}),
    Route("admin-write", "POST", f"{A}/evict", "cache.write", lambda _t: {"dry_run": True}),
    Route("admin-write", "POST", f"{A}/pins", "cache.write", lambda t: {"repo": "team/model", "revision": "main", "label": t}),
    Route("admin-write", "DELETE", f"{A}/pins", "cache.write", lambda _t: {"repo": "team/model", "revision": "main"}),
    Route("admin-write", "POST", f"{A}/tokens", "tokens.manage", lambda t: {"name": f"made-{t}", "role": "developer",
                                                                             "grants": ["team"], "expires": "30d"}),
    Route("admin-write", "DELETE", f"{A}/tokens/victim", "tokens.manage"),
    Route("admin-write", "POST", f"{A}/grants", "tokens.manage", lambda _t: {"repo": "team/*", "to": "developer"}),
    Route("admin-write", "DELETE", f"{A}/grants", "tokens.manage", lambda _t: {"repo": "team/*", "to": "developer"}),
    Route("admin-write", "POST", f"{A}/local-only", "config.manage", lambda t: {"namespace": f"island-{t}", "local": True}),
    Route("admin-write", "POST", f"{A}/keys/trust", "config.manage", lambda _t: {"public_key": _key(), "label": "x"}),
    Route("admin-write", "POST", f"{A}/keys/revoke", "config.manage", lambda _t: {"public_key": _key()}),
    Route("admin-read", "GET", f"{A}/metrics?repo=team/model&revision=main", "releases.read"),
    Route("admin-read", "GET", f"{A}/metrics/compare?repo=team/model&a=main&b=main", "releases.read"),
    Route("admin-write", "POST", "/_admin/metrics", "metrics.report", lambda _t: _report(), repo="team/model", ok=201),
    Route("admin-write", "POST", f"{A}/metrics", "metrics.report", lambda _t: {"metrics": [_report()]}, repo="team/model",
          ok=201),
    Route("audit", "GET", f"{A}/audit?limit=50", "audit.read"),
    Route("audit", "GET", f"{A}/audit/verify", "audit.read"),
    Route("releases", "GET", f"{A}/releases?repo=team/model", "releases.read"),
    Route("releases", "GET", f"{A}/aliases?repo=team/model", "releases.read"),
    Route("releases", "POST", f"{A}/aliases", "releases.write",
          lambda t: {"repo": "team/model", "alias": f"ch-{t}", "revision": "main", "reason": "matrix"}),
    Route("ui", "GET", "/ui", "ui.read"),
    Route("ui", "GET", "/ui/repos", "ui.read"),
    Route("ui", "GET", "/ui/revision?repo=team/model&rev=main", "ui.read"),
    Route("ui", "GET", "/ui/audit", "ui.read"),
    Route("ui", "GET", "/ui/login", "ui.public"),
    Route("ui", "GET", "/ui/static/style.css", "ui.public"),
]


def expected(config: str, role: str, route: Route) -> tuple[int, str | None, str | None]:
    """(status, X-Error-Code, X-Mirror-Error-Code) for one cell, from the checked-in table."""
    if route.group == "peer":
        return 401, "PeerUnsigned", None
    if not TABLE[config][role][route.action]:
        if role == "anonymous":
            return 401, "TokenRequired", None
        return 403, "GatedRepo" if route.hub_facing else "AccessDenied", "AccessDenied"
    if role == "developer" and route.repo and not any(route.repo.startswith(g + "/") for g in DEV_GRANTS):
        return 403, "GatedRepo", "AccessDenied"  # the table allows the action, the grants refuse the repo
    return route.ok, None, None


def call(m: MirrorDaemon, method: str, path: str, tok: str | None = None, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    h = dict(headers or {})
    if tok:
        h["Authorization"] = f"Bearer {tok}"
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    return raw(m.url + path, method, h, data)


@dataclass
class Site:
    config: str
    daemon: MirrorDaemon
    tokens: dict[str, str | None]


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub.running() as h:
        h.commit("team/model", {"config.json": CONFIG, "model.safetensors": WEIGHTS})
        h.commit("other/model", {"config.json": CONFIG})
        yield h


@pytest.fixture(scope="module")
def sites(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Site]]:
    """One daemon per config; an admin token made by the CLI, the others by the admin API."""
    out: dict[str, Site] = {}
    try:
        for config, auth in CONFIGS.items():
            m = MirrorDaemon(tmp_path_factory.mktemp(config) / "data", hub.url, auth=auth)
            admin = token(m, "root", "admin")
            m.start()
            out[config] = Site(config, m, {"admin": admin, "anonymous": None})
            made = (("dev", "developer", list(DEV_GRANTS)), ("aud", "auditor", []), ("victim", "developer", []))
            for name, role, grants in made:
                status, _h, body = call(m, "POST", f"{A}/tokens", admin, {"name": name, "role": role, "grants": grants})
                assert status == 200, body
                out[config].tokens[{"dev": "developer", "aud": "auditor"}.get(name, name)] = json.loads(body)["token"]
            # Warm team/model so that pins name a known revision.
            assert call(m, "GET", "/team/model/resolve/main/config.json", admin)[2] == CONFIG
        yield out
    finally:
        for site in out.values():
            site.daemon.stop()


@pytest.mark.parametrize("config", list(CONFIGS))
def test_every_role_on_every_route_group(sites: dict[str, Site], config: str) -> None:
    site = sites[config]
    wrong = []
    for role in ROLES:
        for route in ROUTES:
            status, h, body = call(site.daemon, route.method, route.path, site.tokens[role], route.body(f"{config[:5]}-{role}"))
            want = expected(config, role, route)
            got = (status, h.get("X-Error-Code"), h.get("X-Mirror-Error-Code"))
            if got != want:
                wrong.append(f"{role:9} {route.method:6} {route.path}: got {got}, want {want}: {body[:200]!r}")
            if status == 200 and route.group == "files" and route.method == "GET":
                assert body == CONFIG
            if status >= 400:
                assert body.startswith(b'{"error": ') or route.method == "HEAD", body  # the Hub's error format
    assert not wrong, "\n".join(wrong)


def test_huggingface_hub_client_cells(sites: dict[str, Site], tmp_path: Path) -> None:
    site = sites["token_required_auditor_files"]
    m, dev = site.daemon, site.tokens["developer"]
    api = HfApi(endpoint=m.url)
    assert api.model_info("team/model", token=dev).sha
    p = hf_hub_download("team/model", "config.json", endpoint=m.url, token=dev, cache_dir=tmp_path / "a")
    assert Path(p).read_bytes() == CONFIG
    for fn in (lambda: api.model_info("other/model", token=dev),
               lambda: hf_hub_download("other/model", "config.json", endpoint=m.url, token=dev, cache_dir=tmp_path / "b")):
        with pytest.raises(HfHubHTTPError) as exc:
            fn()
        assert exc.value.response.status_code == 403 and "outside the grants" in str(exc.value)
    # Without a token on a token-only mirror: 401.
    with pytest.raises(HfHubHTTPError) as exc:
        api.model_info("team/model", token=False)
    assert exc.value.response.status_code == 401
    # The auditor (auditor_files = true here) downloads bytes; on the default config it may not.
    aud = site.tokens["auditor"]
    p = hf_hub_download("team/model", "model.safetensors", endpoint=m.url, token=aud, cache_dir=tmp_path / "c")
    assert Path(p).read_bytes() == WEIGHTS
    other = sites["anonymous_read"]
    with pytest.raises(HfHubHTTPError) as exc:
        hf_hub_download("team/model", "model.safetensors", endpoint=other.daemon.url, token=other.tokens["auditor"],
                        cache_dir=tmp_path / "d")
    assert exc.value.response.status_code == 403


def test_admin_api_input_and_token_lifecycle(sites: dict[str, Site]) -> None:
    site = sites["token_required_auditor_files"]
    m, admin = site.daemon, site.tokens["admin"]
    for method, path, body, needle in [
        ("POST", f"{A}/tokens", {"name": "x y", "role": "developer"}, "token name"),
        ("POST", f"{A}/tokens", {"name": "king", "role": "king"}, "role must be"),
        ("POST", f"{A}/tokens", {"name": "soon", "role": "developer", "expires": "soon"}, "duration"),
        ("POST", f"{A}/tokens", {"name": "neg", "role": "developer", "expires": -5}, "positive"),
        ("POST", f"{A}/tokens", b"{not json", "not valid JSON"),
        ("POST", f"{A}/tokens", [1, 2], "JSON object"),
        ("POST", f"{A}/pull", {}, "'repo' is required"),
        ("POST", f"{A}/pull", {"repo": "../etc"}, "not a repo spec"),
        ("POST", f"{A}/gc", {"dry_run": "yes"}, "true or false"),
        ("POST", f"{A}/keys/trust", {"public_key": "abc"}, "64 hex"),
        ("POST", f"{A}/local-only", {"namespace": "a/b"}, "bad namespace"),
        ("POST", f"{A}/grants", {"repo": "team/*", "to": "nobody"}, "no token named"),
        ("DELETE", f"{A}/tokens/nobody", None, "no token named"),
        ("GET", f"{A}/audit?limit=0", None, "limit"),
    ]:
        status, h, raw_body = call(m, method, path, admin, body)
        assert (status, h.get("X-Error-Code")) == (400, "BadRequest"), (path, body, raw_body)
        assert needle in json.loads(raw_body)["error"], (needle, raw_body)
    # A revoked token and an expired one, on an admin route: 401 with the reason.
    made = {}
    for name, role, expires in (("gone", "admin", None), ("brief", "auditor", 1)):
        status, _h, body = call(m, "POST", f"{A}/tokens", admin, {"name": name, "role": role, "expires": expires})
        assert status == 200, body
        made[name] = json.loads(body)["token"]
        assert "token" not in json.loads(call(m, "GET", f"{A}/tokens", admin)[2])[0]
    assert call(m, "GET", f"{A}/repos", made["gone"])[0] == 200
    assert call(m, "DELETE", f"{A}/tokens/gone", admin)[0] == 200
    status, h, _ = call(m, "GET", f"{A}/repos", made["gone"])
    assert (status, h["X-Error-Code"]) == (401, "TokenRevoked")
    deadline = time.monotonic() + 15
    while (status := call(m, "GET", f"{A}/audit", made["brief"])[0]) == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    status, h, _ = call(m, "GET", f"{A}/audit", made["brief"])
    assert (status, h["X-Error-Code"]) == (401, "TokenExpired")
    # The last active admin cannot be revoked over HTTP.
    status, h, body = call(m, "DELETE", f"{A}/tokens/root", admin)
    assert status == 403 and "last admin" in json.loads(body)["error"]
    assert call(m, "GET", f"{A}/ping", admin)[0] == 200
    listing = {t["name"]: t for t in json.loads(call(m, "GET", f"{A}/tokens", admin)[2])}
    assert listing["gone"]["revoked_at"] and not listing["root"]["revoked_at"]
    # The admin's changes and the refusals are in the audit log, under the token's name,
    # and the chain verifies; no token secret is in it.
    deadline = time.monotonic() + 10
    records: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        status, _h, body = call(m, "GET", f"{A}/audit?limit=5000", admin)
        records = json.loads(body)
        if any(r["action"] == "token.revoke" and r["target"] == "gone" for r in records):
            break
        time.sleep(0.3)
    assert any(r["actor"] == "root" and r["action"] == "token.create" and r["target"] == "brief" for r in records)
    assert any(r["actor"] == "root" and r["action"] == "token.revoke" and r["target"] == "gone" for r in records)
    assert any(r["action"] == "auth.denied" and r["outcome"] == "denied" for r in records)
    assert made["gone"] not in body.decode() and made["brief"] not in body.decode()
    report = json.loads(call(m, "GET", f"{A}/audit/verify", admin)[2])
    assert report["ok"] and report["records"] >= len(records)


def test_two_factor_admin_over_http(hub: FakeHub, tmp_path: Path) -> None:
    m = MirrorDaemon(tmp_path / "data", hub.url, auth={"admin_totp": True})
    admin = token(m, "root", "admin")
    p = cli(m, "token", "totp-enroll", "root", "--json")
    assert p.returncode == 0, p.stderr
    secret = json.loads(p.stdout)["secret"]
    with m:
        gc, dry = f"{A}/gc", {"dry_run": True}
        status, h, _ = call(m, "POST", gc, admin, dry)
        assert (status, h["X-Error-Code"]) == (401, "TotpRequired")
        wrong = "000000" if pyotp.TOTP(secret).now() != "000000" else "111111"
        status, h, _ = call(m, "POST", gc, admin, dry, headers={"X-Mirror-OTP": wrong})
        assert (status, h["X-Error-Code"]) == (401, "TotpRequired")
        code = pyotp.TOTP(secret).now()
        status, _h, body = call(m, "POST", gc, admin, dry, headers={"X-Mirror-OTP": code})
        assert status == 200 and json.loads(body)["dry_run"] is True
        status, h, body = call(m, "POST", gc, admin, dry, headers={"X-Mirror-OTP": code})
        assert (status, h["X-Error-Code"]) == (401, "TotpRequired") and b"used already" in body
        # Read-only admin routes need no code; a developer's reads are not two-factor either.
        assert call(m, "GET", f"{A}/tokens", admin)[0] == 200
        assert call(m, "GET", f"{A}/stats", admin)[0] == 200
        assert call(m, "GET", "/team/model/resolve/main/config.json", admin)[0] == 200
    # The seed is in the data directory only sealed.
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
