"""Issue 14, metadata and access: cached pass-through answers of a private repo stay
private when upstream is down (defect 1b), a gated repo's metadata stays public once
cached while its bytes stay gated (12), and requests for repo ids that do not exist
leave no catalog rows (15). Real daemon, real fake Hub, the real catalog file."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from tests.hubenv import OTHER, TOKEN, raw, start_mirror  # isort: skip

from tests.fakehub import FakeHub

ALICE = {"Authorization": f"Bearer {TOKEN}"}
BOB = {"Authorization": f"Bearer {OTHER}"}  # a valid token without access


def test_private_passthrough_answers_stay_private_when_upstream_is_down(hub: FakeHub, tmp_path: Path) -> None:
    """Defect 1b: Alice's refs and commits of a private repo (nothing else of it ever
    asked for) are cached; with upstream down, nobody else gets them, Alice does."""
    hub.create_repo("acme/secret", private=True, readers=[TOKEN])
    sha = hub.commit("acme/secret", {"config.json": b'{"secret": 1}'})
    m = start_mirror(tmp_path, hub)
    urls = ["/api/models/acme/secret/refs", "/api/models/acme/secret/commits/main"]
    try:
        for url in urls:
            status, _h, body = raw(m.url + url, headers=ALICE)
            assert status == 200 and sha in body.decode()
        hub.down()
        for url in urls:
            status, h, body = raw(m.url + url)
            assert status == 401 and h["X-Error-Code"] == "RepoNotFound", (url, status)
            assert sha not in body.decode()
            status, h, body = raw(m.url + url, headers=BOB)
            assert status == 404 and h["X-Error-Code"] == "RepoNotFound", (url, status)
            assert sha not in body.decode()
            # Alice's access was confirmed upstream moments ago (within cache.auth_ttl).
            status, h, body = raw(m.url + url, headers=ALICE)
            assert status == 200 and h.get("X-Mirror-Stale") == "1" and sha in body.decode()
        assert not any("SENTINEL" in line for line in m.log)
    finally:
        hub.up()
        m.stop()


def test_repo_made_private_later_has_its_new_answers_cached_as_private(hub: FakeHub, tmp_path: Path) -> None:
    """Defect 1b, the other order: the repo's visibility was learned while it was public;
    it turns private; an answer Alice fetches with her token after the auth TTL re-learns
    the flags, so with upstream down nobody else gets that answer."""
    first = hub.commit("acme/flip", {"config.json": b"1"})
    m = start_mirror(tmp_path, hub, cache={"auth_ttl": 0.5})
    try:
        assert raw(m.url + "/api/models/acme/flip/refs")[0] == 200  # learned: public
        hub.create_repo("acme/flip", private=True, readers=[TOKEN])
        second = hub.commit("acme/flip", {"config.json": b"2"})
        time.sleep(0.6)  # past cache.auth_ttl: the recorded flags are too old to trust
        status, _h, body = raw(m.url + "/api/models/acme/flip/refs", headers=ALICE)
        assert status == 200 and second in body.decode()
        hub.down()
        for hdrs, expected in (({}, 401), (BOB, 404)):
            status, _h, body = raw(m.url + "/api/models/acme/flip/refs", headers=hdrs)
            assert status == expected and second not in body.decode() and first not in body.decode()
    finally:
        hub.up()
        m.stop()


def test_gated_repo_metadata_stays_public_once_cached(hub: FakeHub, tmp_path: Path) -> None:
    """Defect 12: the Hub shows a gated repo's info, tree and paths-info to anyone; the
    mirror does too, from its cache and with upstream down. Only bytes are gated."""
    hub.create_repo("org/gated", gated="manual", readers=[TOKEN])
    sha = hub.commit("org/gated", {"config.json": b'{"g": 1}'})
    m = start_mirror(tmp_path, hub)
    api = "/api/models/org/gated"
    try:
        assert raw(m.url + "/org/gated/resolve/main/config.json", headers=ALICE)[2] == b'{"g": 1}'
        for when in ("cached", "upstream down"):
            if when == "upstream down":
                hub.down()
            for hdrs in ({}, BOB):
                for url in (api, f"{api}/revision/main", f"{api}/tree/main"):
                    status, _h, body = raw(m.url + url, headers=hdrs)
                    assert status == 200, (when, url, status)
                    assert sha in body.decode() or "config.json" in body.decode()
                status, _h, body = raw(m.url + f"{api}/paths-info/main", "POST", {**hdrs, "Content-Type": "application/x-www-form-urlencoded"}, b"paths=config.json")
                assert status == 200 and json.loads(body)[0]["path"] == "config.json", (when, status)
                status, h, body = raw(m.url + "/org/gated/resolve/main/config.json", headers=hdrs)
                assert status in (401, 403) and h["X-Error-Code"] == "GatedRepo" and b'"g"' not in body
    finally:
        hub.up()
        m.stop()


def test_junk_repo_ids_leave_no_catalog_rows(hub: FakeHub, tmp_path: Path) -> None:
    """Defect 15: requests for repos upstream does not know (info, refs, commits, files)
    create no catalog row; a real repo gets exactly one."""
    hub.commit("org/real", {"config.json": b"{}"})
    m = start_mirror(tmp_path, hub)
    try:
        for i in range(10):
            for url in (f"/api/models/junk/r{i}", f"/api/models/junk/r{i}/refs",
                        f"/api/models/junk/r{i}/commits/main", f"/junk/r{i}/resolve/main/config.json"):
                status, _h, _b = raw(m.url + url)
                assert status in (401, 404), (url, status)
        assert raw(m.url + "/api/models/org/real/refs")[0] == 200
        assert raw(m.url + "/org/real/resolve/main/config.json")[2] == b"{}"
    finally:
        m.stop()
    with sqlite3.connect(f"file:{m.data_dir / 'catalog.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT repo_type, repo_id FROM repos").fetchall()
    assert rows == [("model", "org/real")]
