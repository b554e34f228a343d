"""The web dashboard without a browser (issue 12 item 3): who may see `/ui` (auditors and
admins; anonymous only with `[auth] anonymous_ui`), signing in with a cookie that counts
for `/ui` only, the security headers, HTML-escaping of text users control (an alias
reason, a file path), error pages, and the pieces under the pages: the traffic sampler
over a real catalog and the SVG charts. One real daemon with a fake Hub; the headless
browser test is tests/test_ui_browser.py."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Any, Iterator
from urllib.parse import quote, urlencode

from tests.hubenv import raw  # isort: skip

import pytest
from huggingface_hub import snapshot_download

from mirror.auth.permissions import allowed
from mirror.clock import FakeClock
from mirror.config import AuthConfig, Config
from mirror.http.ui import CSP
from mirror.node import open_node
from mirror.ui.charts import Mark, Part, Series, line_chart, stacked_bar
from mirror.ui.history import TrafficHistory
from tests.daemon import MirrorDaemon
from tests.fakehub import FakeHub
from tests.test_auth import token

REPO = "team/model"
EVIL_PATH = "notes/x<script>alert('path')</script>.txt"
EVIL_REASON = "CAB-7 <script>alert('reason')</script> & \"quotes\""
A = "/_admin/v1"
PAGES = ["/ui", "/ui?hours=1", "/ui/repos", f"/ui/repo?repo={REPO}", "/ui/releases", f"/ui/alias?repo={REPO}&alias=prod",
         "/ui/peers", "/ui/sync", "/ui/lifecycle", "/ui/audit", "/ui/audit?action=ui&actor=ops"]


def call(m: MirrorDaemon, method: str, path: str, tok: str | None = None, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    h = dict(headers or {})
    if tok:
        h["Authorization"] = f"Bearer {tok}"
    data = None
    if isinstance(body, dict):
        data, h["Content-Type"] = json.dumps(body).encode(), "application/json"
    elif isinstance(body, str):
        data, h["Content-Type"] = body.encode(), "application/x-www-form-urlencoded"
    return raw(m.url + path, method, h, data)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ui")
    with FakeHub.running() as hub:
        v1 = hub.commit(REPO, {"config.json": b'{"v": 1}', "model.safetensors": bytes(range(256)) * 512,
                               EVIL_PATH: b"user-controlled path"})
        v2 = hub.commit(REPO, {"config.json": b'{"v": 2}'})
        m = MirrorDaemon(tmp / "data", hub.url)
        admin = token(m, "root", "admin")
        m.start()
        try:
            toks = {"admin": admin}
            for name, role in (("ops", "auditor"), ("dev", "developer")):
                status, _h, body = call(m, "POST", f"{A}/tokens", admin, {"name": name, "role": role})
                assert status == 200, body
                toks[role] = json.loads(body)["token"]
            for rev in (v1, v2):
                snapshot_download(REPO, revision=rev, endpoint=m.url, cache_dir=tmp / "hf", token=False)
            for version, rev in (("v1.0.0", v1), ("v1.1.0", v2)):
                status, _h, body = call(m, "POST", f"{A}/releases", admin, {"repo": REPO, "version": version, "revision": rev})
                assert status == 201, body
            status, _h, body = call(m, "POST", f"{A}/aliases", admin,
                                    {"repo": REPO, "alias": "prod", "revision": "v1.0.0", "reason": EVIL_REASON})
            assert status == 200, body
            yield {"m": m, "tok": toks, "v1": v1, "v2": v2}
        finally:
            m.stop()


def test_who_sees_the_dashboard(site: dict[str, Any]) -> None:
    m, tok = site["m"], site["tok"]
    # No token: the JSON error for API clients, the sign-in form for a browser (same status and code).
    status, h, body = call(m, "GET", "/ui")
    assert (status, h["X-Error-Code"]) == (401, "TokenRequired") and body.startswith(b'{"error": ')
    status, h, body = call(m, "GET", "/ui/repos", headers={"Accept": "text/html"})
    assert (status, h["X-Error-Code"]) == (401, "TokenRequired")
    assert h["Content-Type"].startswith("text/html") and b'name="token"' in body and b'value="/ui/repos"' in body
    assert h["Content-Security-Policy"] == CSP
    # A developer token: 403 (it may read repos, not the dashboard).
    status, h, _ = call(m, "GET", "/ui", tok["developer"])
    assert (status, h["X-Error-Code"]) == (403, "AccessDenied")
    # The sign-in form and the stylesheet are for everyone.
    assert call(m, "GET", "/ui/login")[0] == 200
    status, h, css = call(m, "GET", "/ui/static/style.css")
    assert status == 200 and h["Content-Type"].startswith("text/css") and b"prefers-color-scheme" in css
    assert call(m, "GET", "/ui/static/../app.py")[0] == 404
    assert call(m, "GET", "/ui/static/nothing.js")[0] == 404
    # Auditors and admins: every page, with the security headers and no script at all.
    for role in ("auditor", "admin"):
        for page in PAGES + [f"/ui/revision?repo={REPO}&rev={site['v1']}",
                             f"/ui/file?repo={REPO}&rev={site['v1']}&path=config.json"]:
            status, h, body = call(m, "GET", page, tok[role])
            assert status == 200, (role, page, body[:300])
            assert h["Content-Type"] == "text/html; charset=utf-8"
            assert h["Content-Security-Policy"] == CSP and "script-src" not in CSP and "default-src 'none'" in CSP
            assert h["X-Content-Type-Options"] == "nosniff" and h["Cache-Control"] == "no-store"
            assert b"<script" not in body.lower(), page
            assert b' style="' not in body, page  # inline styles would break the CSP


def test_signing_in_keeps_the_token_in_a_cookie_for_ui_only(site: dict[str, Any]) -> None:
    m, tok = site["m"], site["tok"]
    form = urlencode({"token": tok["auditor"], "next": "/ui/repos"})
    status, h, _ = call(m, "POST", "/ui/login", body=form, headers={"Origin": m.url})
    assert status == 303 and h["Location"] == "/ui/repos"
    cookie = h["Set-Cookie"]
    assert cookie.startswith("mirror_ui=mm_") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Path=/ui" in cookie
    jar = {"Cookie": cookie.split(";")[0]}
    status, _h, body = call(m, "GET", "/ui/repos", headers=jar)
    assert status == 200 and b"ops (auditor)" in body and b"Sign out" in body
    # The cookie is no credential outside /ui: the admin API sees an anonymous caller.
    for path in (f"{A}/stats", f"{A}/audit"):
        status, h, _ = call(m, "GET", path, headers=jar)
        assert (status, h["X-Error-Code"]) == (401, "TokenRequired"), path
    # An off-site sign-in, a bad token, a developer's token and a Hub token are refused.
    status, h, _ = call(m, "POST", "/ui/login", body=form, headers={"Origin": "https://evil.example"})
    assert status == 403 and "Set-Cookie" not in h
    for bad, want in ((tok["auditor"] + "x", 401), (tok["developer"], 403), ("hf_abcdefgh", 400)):
        status, h, body = call(m, "POST", "/ui/login", body=urlencode({"token": bad}))
        assert status == want and "Set-Cookie" not in h and b'id="login-error"' in body, (bad[:6], status)
    # A dangerous `next` goes to the overview instead.
    for nxt in ("//evil.example/", "https://evil.example/ui", "/ui/..\\x", "/uix"):
        status, h, _ = call(m, "POST", "/ui/login", body=urlencode({"token": tok["auditor"], "next": nxt}))
        assert status == 303 and h["Location"] == "/ui", nxt
    status, h, _ = call(m, "POST", "/ui/logout", headers=jar)
    assert status == 303 and h["Location"] == "/ui/login" and "mirror_ui=" in h["Set-Cookie"]
    assert "Max-Age=0" in h["Set-Cookie"] or "expires=Thu, 01 Jan 1970" in h["Set-Cookie"]
    # The sign-in and the refusals are audited, never with the token.
    status, _h, body = call(m, "GET", f"{A}/audit?limit=200", tok["admin"])
    records = json.loads(body)
    assert any(r["action"] == "ui.login" and r["actor"] == "ops" for r in records)
    assert any(r["action"] == "auth.denied" and r["target"] == "/ui/login" for r in records)
    assert tok["auditor"] not in body.decode() and tok["developer"] not in body.decode()


def test_text_users_control_is_escaped(site: dict[str, Any]) -> None:
    m, aud, v1 = site["m"], site["tok"]["auditor"], site["v1"]
    file_page = f"/ui/file?repo={REPO}&rev={v1}&path={quote(EVIL_PATH)}"
    pages = [f"/ui/revision?repo={REPO}&rev={v1}", file_page, f"/ui/alias?repo={REPO}&alias=prod", "/ui/repos"]
    seen = set()
    for page in pages:
        status, _h, body = call(m, "GET", page, aud)
        assert status == 200, (page, body[:300])
        text = body.decode()
        assert "<script" not in text.lower(), page
        if "&lt;script&gt;alert(&#39;path&#39;)&lt;/script&gt;" in text:
            seen.add("path")
        if "CAB-7 &lt;script&gt;alert(&#39;reason&#39;)&lt;/script&gt; &amp; &#34;quotes&#34;" in text:
            seen.add("reason")
    assert seen == {"path", "reason"}
    # The revision page links to the file page with the path query-encoded, and that link works.
    body = call(m, "GET", f"/ui/revision?repo={REPO}&rev={v1}", aud)[2].decode()
    links = re.findall(r'href="(/ui/file\?[^"]+)"', body)
    evil = [link for link in links if "notes" in link]
    assert evil and "<" not in evil[0]
    status, _h, page = call(m, "GET", evil[0].replace("&amp;", "&"), aud)
    assert status == 200 and b'id="file-identity">sha1:' in page


def test_errors_are_pages_for_browsers_and_json_for_programs(site: dict[str, Any]) -> None:
    m, aud = site["m"], site["tok"]["auditor"]
    html = {"Accept": "text/html"}
    for path, status, code in [
        ("/ui/repo?repo=no/such", 404, "RepoNotFound"),
        (f"/ui/revision?repo={REPO}&rev={'0' * 40}", 404, "RevisionNotFound"),
        (f"/ui/file?repo={REPO}&rev={site['v1']}&path=missing.bin", 404, "EntryNotFound"),
        (f"/ui/alias?repo={REPO}&alias=nope", 404, "RevisionNotFound"),
        ("/ui/repo", 400, "BadRequest"),
        ("/ui/repo?repo=../etc", 400, "BadRequest"),
        ("/ui?hours=7", 400, "BadRequest"),
        (f"/ui/file?repo={REPO}&rev={site['v1']}&path=../x", 400, "BadRequest"),
    ]:
        got, h, body = call(m, "GET", path, aud)
        assert (got, h.get("X-Error-Code")) == (status, code), (path, body[:200])
        assert json.loads(body)["error"]
        got, h, body = call(m, "GET", path, aud, headers=html)
        assert (got, h.get("X-Error-Code")) == (status, code) and h["Content-Type"].startswith("text/html"), path
        assert b'id="error-message"' in body and h["Content-Security-Policy"] == CSP
    got, h, body = call(m, "GET", "/ui/no-such-page", aud, headers=html)
    assert got == 404 and b'id="error-message"' in body


def test_anonymous_ui_is_its_own_switch() -> None:
    assert not allowed("anonymous", "ui.read", AuthConfig())
    assert allowed("anonymous", "ui.read", AuthConfig(anonymous_ui=True))
    assert allowed("anonymous", "ui.read", AuthConfig(anonymous_ui=True, anonymous_read=False))
    assert not allowed("anonymous", "hub.read", AuthConfig(anonymous_ui=True, anonymous_read=False))
    assert allowed("anonymous", "ui.public", AuthConfig(anonymous_read=False))
    assert not allowed("developer", "ui.read", AuthConfig(anonymous_ui=True))


async def test_the_traffic_history_samples_counters_into_a_bounded_ring(config: Config) -> None:
    clock = FakeClock(1_800_000_000.0)
    async with await open_node(config, clock=clock) as node:
        meta, history = node.catalog.meta, node.history
        peer = node.peers.add("http://10.0.0.9:8090", "static")
        await history.sample()  # t0: nothing yet
        meta.bump("served_bytes", 1000)
        meta.bump("upstream_bytes", 400)
        peer.bytes_out = 70
        clock.advance(60)
        await history.sample()  # t0+60
        meta.bump("served_bytes", 500)
        meta.bump("peer_bytes", 30)
        peer.bytes_out = 20  # the peer table was reset: no negative traffic
        clock.advance(90)
        live = await history.read()  # t0+150, not kept
        assert len(history.samples()) == 2 and history.covers() == 60
        buckets = history.buckets(live, 3600, 60)  # one-minute buckets, the last one ends now
        assert len(buckets) == 60 and buckets[-1].end == live.at
        totals = tuple(sum(b.bytes[i] for b in buckets) for i in range(4))
        assert totals == (1500, 400, 30, 70)
        assert buckets[-1].bytes == (500, 0, 30, 0) and buckets[-2].bytes == (1000, 400, 0, 70)
        # A window that starts after the first sample's delta leaves it out.
        assert sum(b.bytes[0] for b in history.buckets(live, 80, 2)) == 500
        # Bounded: the oldest samples go.
        small = TrafficHistory(meta, node.peers, clock, keep=3)
        for _ in range(5):
            clock.advance(60)
            await small.sample()
        assert len(small.samples()) == 3 and small.covers() == 120
        with pytest.raises(ValueError):
            TrafficHistory(meta, node.peers, clock, keep=1)


def test_charts_are_well_formed_svg_with_their_numbers() -> None:
    bar = stacked_bar([Part("<b>stored</b>", 30, "c-stored", "stored"), Part("saved", 70, "c-saved"), Part("neg", -5, "x")],
                      marks=[Mark("high", 90)], chart_id="t")
    root = ET.fromstring(str(bar))
    rects = [r for r in root.iter("rect") if r.get("data-part")]
    assert [r.get("data-value") for r in rects] == ["30", "70", "0"]
    assert sum(float(r.get("width", 0)) for r in rects) == pytest.approx(1000)
    assert "<b>" not in str(bar) and "&lt;b&gt;stored&lt;/b&gt;" in str(bar)
    assert [ln.get("data-value") for ln in root.iter("line")] == ["90"]
    empty = ET.fromstring(str(stacked_bar([Part("a", 0, "c")])))
    assert [r.get("width") for r in empty.iter("rect")] == ["1000", "0"]
    chart = line_chart([Series("served", "served", [0, 5, 10], "c-served"), Series("up", "<up>", [1, 1, 1], "c-up")],
                       ["a", "b"])
    fig = ET.fromstring(str(chart))
    lines = {p.get("data-series"): p for p in fig.iter("polyline")}
    assert lines["served"].get("data-total") == "15" and lines["up"].get("data-total") == "3"
    assert len(lines["served"].get("points", "").split()) == 3
    assert "&lt;up&gt;" in str(chart)
    ET.fromstring(str(line_chart([], [])))  # no series: still a drawing
