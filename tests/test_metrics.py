"""`GET /metrics` (issue 12 item 1) on a real daemon with content: scraped with a token
and parsed with prometheus_client's own parser, the figures move as the traffic says
(bytes served from the store after a warm download, requests by route group and status,
a whole-file hash failure when the fake Hub corrupts a file), a canary's weight is there,
the store's counters come from the catalog and survive a restart while process counters
start again, and every metric the alert rules and the Grafana dashboard use exists.
Refused for anonymous (401) and a developer (403). One daemon, started twice."""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

from tests.hubenv import raw  # isort: skip

import pytest
from huggingface_hub import hf_hub_download
from prometheus_client.parser import text_string_to_metric_families

from mirror.config import Config, ServerConfig, StoreConfig, UpstreamConfig
from tests.conftest import random_bytes
from tests.daemon import MirrorDaemon
from tests.fakehub import FakeHub
from tests.test_auth import token

ROOT = Path(__file__).resolve().parents[1]
REPO = "team/model"
CONFIG = b'{"model_type": "bert"}'
WEIGHTS = random_bytes(3 << 20, seed=12)  # several chunks
BROKEN = b"corrupt me " * 10000
# A static peer nobody listens on: the peer families have a series (state down).
DEAD_PEER = "http://127.0.0.1:9"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Site:
    def __init__(self, daemon: MirrorDaemon, tokens: dict[str, str], commits: tuple[str, str]) -> None:
        self.m = daemon
        self.tokens = tokens
        self.commits = commits

    def scrape(self, role: str = "auditor", accept: str | None = None) -> tuple[int, dict[str, str], bytes]:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        if accept:
            headers["Accept"] = accept
        return raw(self.m.url + "/metrics", headers=headers)

    def samples(self) -> Samples:
        status, _h, body = self.scrape()
        assert status == 200, body
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}

    def until(self, ok: Callable[[Samples], bool], timeout: float = 20.0) -> Samples:
        """Scrape until `ok` (catalog figures are cached for a few seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.samples()
            if ok(s) or time.monotonic() > deadline:
                return s
            time.sleep(0.5)

    def admin(self, route: str, body: dict[str, Any]) -> Any:
        status, _h, out = raw(f"{self.m.url}/_admin/v1/{route}", "POST", {
            "Authorization": f"Bearer {self.tokens['admin']}", "Content-Type": "application/json"},
            json.dumps(body).encode())
        assert status == 200, out
        return json.loads(out)

    def stats(self) -> dict[str, Any]:
        status, _h, body = raw(self.m.url + "/_admin/v1/stats", headers={"Authorization": f"Bearer {self.tokens['admin']}"})
        assert status == 200, body
        return json.loads(body)  # type: ignore[no-any-return]


def value(s: Samples, name: str, **labels: str) -> float:
    return s.get((name, tuple(sorted(labels.items()))), 0.0)


def total(s: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lab), v in s.items() if n == name and want <= set(lab))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("metrics")
    with FakeHub.running() as hub:
        stable = hub.commit(REPO, {"config.json": CONFIG, "model.safetensors": WEIGHTS, "broken.bin": BROKEN})
        canary = hub.commit(REPO, {"config.json": b'{"model_type": "roberta"}', "model.safetensors": WEIGHTS,
                                   "broken.bin": BROKEN})
        m = MirrorDaemon(tmp / "data", hub.url, peers={"nodes": [DEAD_PEER]})
        tokens = {"admin": token(m, "root", "admin")}
        m.start()
        try:
            s = Site(m, tokens, (stable, canary))
            for name, role in (("dev", "developer"), ("prom", "auditor")):
                tokens[role] = s.admin("tokens", {"name": name, "role": role, "grants": ["team"]})["token"]
            for sha in (stable, canary):  # an alias names known commits
                assert raw(f"{m.url}/{REPO}/resolve/{sha}/config.json")[0] == 200
            s.admin("aliases", {"repo": REPO, "alias": "prod", "revision": stable, "reason": "v1"})
            s.admin("aliases/canary", {"repo": REPO, "alias": "prod", "to": canary, "percent": 10, "every": "1h"})
            s.hub = hub  # type: ignore[attr-defined]
            yield s
        finally:
            if m.proc is not None and m.proc.poll() is None:
                m.stop()


def test_metrics_need_an_admin_or_auditor_token(site: Site) -> None:
    status, headers, body = raw(site.m.url + "/metrics")
    assert status == 401 and headers["X-Error-Code"] == "TokenRequired", body
    status, headers, body = site.scrape("developer")
    assert status == 403 and headers["X-Mirror-Error-Code"] == "AccessDenied", body
    for role in ("admin", "auditor"):
        status, headers, body = site.scrape(role)
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4"), body[:200]
    # A scraper asking for OpenMetrics gets it.
    status, headers, body = site.scrape(accept="application/openmetrics-text; version=1.0.0")
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_a_warm_download_counts_bytes_served_from_the_store(site: Site, tmp_path: Path) -> None:
    stable = site.commits[0]
    hf_hub_download(REPO, "model.safetensors", revision=stable, endpoint=site.m.url, cache_dir=tmp_path / "cold")
    deadline = time.monotonic() + 30
    while site.stats()["logical_bytes"] < len(WEIGHTS) and time.monotonic() < deadline:
        time.sleep(0.2)  # the fill is ingested in the background
    before = site.samples()
    path = hf_hub_download(REPO, "model.safetensors", revision=stable, endpoint=site.m.url, cache_dir=tmp_path / "warm")
    assert Path(path).read_bytes() == WEIGHTS
    after = site.samples()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("mirror_file_sent_bytes_total", source="store") == len(WEIGHTS)
    assert grew("mirror_file_requests_total", source="store") == 1
    assert grew("mirror_file_requests_total", source="fill") == 0
    assert grew("mirror_store_read_bytes_total") >= len(WEIGHTS)
    assert grew("mirror_store_read_seconds_count") >= 2  # 3 MiB in chunks of 1 MiB on average
    assert grew("mirror_integrity_checks_total", check="chunk_blake3") == grew("mirror_store_read_seconds_count")
    assert value(after, "mirror_integrity_failures_total", check="chunk_blake3") == 0
    assert value(after, "mirror_cache_hit_ratio") > 0
    assert value(after, "mirror_fills_limit") == 64 and value(after, "mirror_fills_in_flight") == 0
    assert value(after, "mirror_store_high_watermark_bytes") > value(after, "mirror_store_low_watermark_bytes") > 0


def test_requests_are_counted_by_route_group_and_status(site: Site) -> None:
    before = site.samples()
    assert raw(f"{site.m.url}/{REPO}/resolve/{site.commits[0]}/no-such-file.json")[0] == 404
    assert raw(f"{site.m.url}/api/models/{REPO}/revision/{site.commits[0]}")[0] == 200
    assert raw(f"{site.m.url}/favicon.ico")[0] == 404
    assert raw(f"{site.m.url}/_admin/v1/repos")[0] == 401
    after = site.samples()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("mirror_http_requests_total", group="files", code="404") == 1
    assert grew("mirror_http_requests_total", group="hub", code="200") == 1
    assert grew("mirror_http_requests_total", group="unrouted", code="404") == 1
    assert grew("mirror_http_requests_total", group="admin", code="401") == 1
    assert grew("mirror_http_requests_total", group="metrics", code="200") == 1  # the scrape before
    assert grew("mirror_http_first_byte_seconds_count", group="files") == 1
    assert grew("mirror_http_request_duration_seconds_count", group="hub") == 1


def _download(url: str) -> bytes | None:
    """The body of a complete 200 answer, or None (an error status, an aborted stream)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.read() if r.status == 200 else None
    except (OSError, http.client.HTTPException):  # URLError, a reset, IncompleteRead
        return None


def test_a_corrupt_upstream_file_counts_a_hash_failure(site: Site) -> None:
    hub: FakeHub = site.hub  # type: ignore[attr-defined]
    url = f"{site.m.url}/{REPO}/resolve/{site.commits[0]}/broken.bin"
    before = site.samples()
    hub.corrupt("broken.bin", "flip", times=1)
    assert _download(url) is None  # the mirror aborts the stream: the wrong bytes never complete
    mid = site.samples()
    assert value(mid, "mirror_integrity_failures_total", check="file_hash") - \
        value(before, "mirror_integrity_failures_total", check="file_hash") == 1
    assert value(mid, "mirror_integrity_checks_total", check="file_hash") - \
        value(before, "mirror_integrity_checks_total", check="file_hash") == 1
    # Upstream serves it right again: fetched anew, checked, not a failure.
    assert raw(url)[2] == BROKEN
    after = site.samples()
    assert value(after, "mirror_integrity_checks_total", check="file_hash") - \
        value(mid, "mirror_integrity_checks_total", check="file_hash") == 1
    assert value(after, "mirror_integrity_failures_total", check="file_hash") == \
        value(mid, "mirror_integrity_failures_total", check="file_hash")


def test_a_canary_weight_and_its_changes_are_exported(site: Site) -> None:
    # The daemon writes audit records every 2 s; the figures are read again every few seconds.
    s = site.until(lambda s: total(s, "mirror_audit_events_total", action="token.create", outcome="ok") == 3)
    assert value(s, "mirror_alias_canary_weight", repo=REPO, alias="prod") == 10
    assert value(s, "mirror_alias_canary", repo=REPO, alias="prod") == 1
    assert value(s, "mirror_alias_canary_holding", repo=REPO, alias="prod") == 0
    assert value(s, "mirror_alias_changes_total", repo=REPO, alias="prod", action="set") == 1
    assert value(s, "mirror_alias_changes_total", repo=REPO, alias="prod", action="canary-start") == 1
    # The alerted outcome exists before it first happens (a series born at 1 has no increase).
    assert (("mirror_alias_changes_total", (("action", "canary-rollback"), ("alias", "prod"), ("repo", REPO))) in s)
    assert value(s, "mirror_peer_up", peer=DEAD_PEER) == 0
    assert total(s, "mirror_audit_events_total", action="token.create", outcome="ok") == 3


def _metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bmirror_[a-z0-9_]*[a-z0-9]\b", text))


def test_every_metric_of_the_alerts_and_the_dashboard_is_exported(site: Site) -> None:
    s = site.samples()
    exported = {name for name, _labels in s}
    status, _h, body = site.scrape()
    families = {fam.name for fam in text_string_to_metric_families(body.decode())}
    used = (_metric_names((ROOT / "deploy/prometheus/alerts.yml").read_text())
            | _metric_names((ROOT / "deploy/grafana/model-mirror.json").read_text()))
    assert len(used) > 20
    missing = sorted(n for n in used if n not in exported and n not in families)
    assert not missing, f"used by the alert rules or the dashboard, not exported: {missing}"


def test_store_counters_survive_a_restart_process_counters_start_again(site: Site) -> None:
    before = site.samples()
    stats = site.stats()
    assert total(before, "mirror_http_requests_total", group="files") > 0
    site.m.restart()
    after = site.samples()  # the first scrape of a process reads the catalog
    # The store as the catalog describes it: the figures of `mirror stats --json`.
    assert value(after, "mirror_store_logical_bytes") == stats["logical_bytes"] >= len(WEIGHTS)
    assert value(after, "mirror_store_stored_bytes") == stats["stored_bytes"] > 0
    assert value(after, "mirror_store_chunks") == stats["chunks"] and value(after, "mirror_store_files") == stats["files"]
    assert value(after, "mirror_store_unique_raw_bytes") == stats["unique_raw_bytes"]
    assert value(after, "mirror_fetched_bytes_total", origin="upstream") == stats["upstream_bytes_fetched"] > 0
    assert value(after, "mirror_served_bytes_total") == stats["bytes_served"] > 0
    assert value(after, "mirror_alias_changes_total", repo=REPO, alias="prod", action="canary-start") == 1
    assert total(after, "mirror_audit_events_total", action="token.create") == 3
    assert value(after, "mirror_alias_canary_weight", repo=REPO, alias="prod") == 10
    # Process counters describe this process: nothing served since the restart.
    assert total(after, "mirror_http_requests_total", group="files") == 0
    assert value(after, "mirror_file_sent_bytes_total", source="store") == 0
    assert value(after, "mirror_integrity_failures_total", check="file_hash") == 0


async def test_metrics_off_means_no_route(tmp_path: Path, aiohttp_client: Any) -> None:
    """`[server] metrics = false`: no /metrics route (404 for everyone), nothing observed."""
    from mirror.app import build_app
    from mirror.http.metrics import METRICS

    for on in (True, False):
        config = Config(server=ServerConfig(metrics=on), store=StoreConfig(data_dir=str(tmp_path / f"d{on}")),
                        upstream=UpstreamConfig(url="http://127.0.0.1:9"))
        client = await aiohttp_client(build_app(config))
        r = await client.get("/metrics")
        assert r.status == (401 if on else 404), await r.text()
        assert (METRICS in client.app) is on
        await client.close()
