"""Per-version metrics (issue 11 item 4): reported values and what the mirror served,
per (repo, commit); the windows a canary gate reads; Welch's comparison of two versions.

In process on a FakeClock over the real catalog, then one real daemon in front of the
fake Hub: reports over HTTP (good and bad bodies), traffic counted for a real
huggingface_hub download, and `mirror metrics show|compare|record` as subprocesses.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator

from tests.hubenv import raw  # isort: skip

import pytest
from huggingface_hub import hf_hub_download

from mirror.channels.metrics import client_hash, compare_values
from mirror.channels.stats import welch
from mirror.clock import FakeClock
from mirror.errors import BadRequest, StorageError
from mirror.model import RepoKey
from mirror.node import Node, open_node
from tests.clihelp import clean_env
from tests.conftest import make_config
from tests.daemon import MirrorDaemon
from tests.fakehub import FakeHub
from tests.test_auth import token

A, B = "a" * 40, "b" * 40
T0 = 1_700_000_080.0  # 40 s into a minute
# Wikipedia's "Welch's t-test" examples: (a, b, t, df, p) as printed there (rounded).
EX1 = ([27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4],
       [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4], -2.46, 24.99, 0.021)
EX2 = ([17.2, 20.9, 22.6, 18.1, 21.7, 21.4, 23.5, 24.2, 14.7, 21.8],
       [21.5, 22.8, 21.0, 23.0, 21.6, 23.6, 22.5, 20.7, 23.4, 21.8, 20.7, 21.7, 21.5, 22.5, 23.6, 21.5, 22.5, 23.5, 21.5,
        21.8], -1.57, 9.9, 0.149)


def hand_welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """t and the Welch-Satterthwaite df from their formulas."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return t, df


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    n = await open_node(make_config(tmp_path / "data"), clock=FakeClock(T0))
    try:
        yield n
    finally:
        await n.close()


async def _repo(node: Node) -> int:
    repo = await node.catalog.repos.repo_id(RepoKey("model", "org/m"))
    assert repo is not None
    return repo


# --- in process ------------------------------------------------------------------------------


async def test_reported_values_in_a_window(node: Node) -> None:
    vm, clock, repo = node.version_metrics, node.clock, await _repo(node)
    assert isinstance(clock, FakeClock)
    for dt, value in ((-100, 0.5), (-60, 0.7), (-30, 0.9), (0, 1.0)):
        await vm.record(repo, A, "accuracy", value, at=T0 + dt, reporter="eval")
    await vm.record(repo, B, "accuracy", 0.1)
    # (since, until]: a value at `since` is out, one at `until` is in.
    assert await vm.aggregate(repo, A, "accuracy", T0 - 60, T0) == (pytest.approx((0.9 + 1.0) / 2), 2)
    assert await vm.aggregate(repo, A, "accuracy", T0 - 61, T0 - 30) == (pytest.approx(0.8), 2)
    assert await vm.aggregate(repo, A, "accuracy", T0 + 1, T0 + 100) is None  # no data: a gate's missing metric
    assert await vm.aggregate(repo, A, "loss", T0 - 1000, T0) is None
    s = await vm.summary(repo, A)
    acc = s["metrics"]["accuracy"]
    values = [0.5, 0.7, 0.9, 1.0]
    assert acc["n"] == 4 and acc["mean"] == pytest.approx(statistics.fmean(values))
    assert acc["stddev"] == pytest.approx(statistics.stdev(values))
    assert (acc["min"], acc["max"], acc["first_at"], acc["last_at"]) == (0.5, 1.0, T0 - 100, T0)
    # `last` is the newest by time, not by arrival.
    await vm.record(repo, A, "accuracy", 0.2, at=T0 - 500)
    assert (await vm.summary(repo, A))["metrics"]["accuracy"]["last"] == 1.0
    assert s["builtins"] == {"mirror_requests": 0, "mirror_errors": 0, "mirror_error_rate": None, "mirror_bytes": 0,
                             "mirror_clients": 0}


async def test_reports_are_checked(node: Node) -> None:
    vm, repo = node.version_metrics, await _repo(node)
    bad: list[tuple[str, Any, dict[str, Any], str]] = [
        ("", 1.0, {}, "must match"), ("1st", 1.0, {}, "must match"), ("a b", 1.0, {}, "must match"),
        ("x" * 65, 1.0, {}, "must match"), ("mirror_requests", 1.0, {}, "the mirror's own"),
        ("acc", math.nan, {}, "finite"), ("acc", math.inf, {}, "finite"), ("acc", True, {}, "finite"),
        ("acc", "0.9", {}, "finite"), ("acc", 1.0, {"at": T0 + 301}, "ahead"), ("acc", 1.0, {"at": -1.0}, "unix seconds"),
        ("acc", 1.0, {"client": "c" * 129}, "client"), ("acc", 1.0, {"client": "a\nb"}, "client"),
    ]
    for name, value, kw, needle in bad:
        with pytest.raises(BadRequest, match=needle):
            await vm.record(repo, A, name, value, **kw)
    await vm.record(repo, A, "latency_p99.ms:x-y", 3, at=T0 + 299, client="c" * 128)
    with pytest.raises(BadRequest, match="unknown built-in"):
        await vm.aggregate(repo, A, "mirror_nope", 0, T0)
    # Nothing of the refused reports was written.
    assert list((await vm.summary(repo, A))["metrics"]) == ["latency_p99.ms:x-y"]


async def test_served_traffic_counts_once_flushed_or_not(node: Node) -> None:
    vm, clock, repo = node.version_metrics, node.clock, await _repo(node)
    assert isinstance(clock, FakeClock)
    vm.observe(repo, A, "addr:10.1.2.3", 200, 1000)
    vm.observe(repo, A, "addr:10.1.2.3", 206, 500)
    vm.observe(repo, A, "id:job-7", 500, 0)
    vm.observe(repo, B, "id:job-7", 200, 7)
    window = (T0 - 30, T0)
    expect = {"mirror_requests": (3.0, 3), "mirror_errors": (1.0, 3), "mirror_error_rate": (pytest.approx(1 / 3), 3),
              "mirror_bytes": (1500.0, 3), "mirror_clients": (2.0, 2)}
    for name, want in expect.items():  # before any flush: from memory
        assert await vm.aggregate(repo, A, name, *window) == want, name
    await vm.flush()
    for name, want in expect.items():  # flushed: from the catalog, not twice
        assert await vm.aggregate(repo, A, name, *window) == want, name
    clock.advance(60)  # the next minute
    vm.observe(repo, A, "id:job-7", 200, 10)
    vm.observe(repo, A, "id:new", 200, 10)
    assert await vm.aggregate(repo, A, "mirror_requests", T0 - 30, T0 + 60) == (5.0, 5)  # 3 stored + 2 in memory
    assert await vm.aggregate(repo, A, "mirror_clients", T0 - 30, T0 + 60) == (3.0, 3)
    # A window that only touches the second minute.
    assert await vm.aggregate(repo, A, "mirror_requests", T0 + 30, T0 + 60) == (2.0, 2)
    assert await vm.aggregate(repo, A, "mirror_clients", T0 + 30, T0 + 60) == (2.0, 2)
    # A window ending before the first request's minute began: no data.
    assert await vm.aggregate(repo, A, "mirror_requests", T0 - 200, T0 - 41) is None
    assert await vm.aggregate(repo, A, "mirror_error_rate", T0 - 200, T0 - 41) is None
    await vm.flush()
    assert (await vm.summary(repo, A))["builtins"] == {"mirror_requests": 5.0, "mirror_errors": 1.0,
                                                       "mirror_error_rate": pytest.approx(0.2), "mirror_bytes": 1520.0,
                                                       "mirror_clients": 3.0}
    # Client keys are stored hashed: an address never reaches the catalog.
    rows = await node.catalog.db.fetchall("SELECT client, first_at, last_at FROM version_clients WHERE commit_sha = ?", (A,))
    stored = {r["client"]: (r["first_at"], r["last_at"]) for r in rows}
    assert stored[client_hash("id:job-7")] == (T0, T0 + 60)
    assert client_hash("addr:10.1.2.3") in stored and not any("10.1.2.3" in c for c in stored)


async def test_a_refused_flush_keeps_the_counts(node: Node) -> None:
    vm, repo = node.version_metrics, await _repo(node)
    db = node.catalog.db
    row = await db.fetchone("PRAGMA page_count")
    assert row is not None
    await db.execute(f"PRAGMA max_page_count = {row[0]}")  # a full disk, as SQLite reports one
    for i in range(400):
        vm.observe(repo, f"{i:040x}", f"id:c{i}", 200, 100)
    vm.observe(repo, A, "id:x", 503, 0)
    with pytest.raises(StorageError):
        await vm.flush()
    assert await vm.aggregate(repo, A, "mirror_errors", T0 - 10, T0) == (1.0, 1)  # still counted, in memory
    await db.execute("PRAGMA max_page_count = 1073741823")
    await vm.flush()
    assert await vm.aggregate(repo, A, "mirror_errors", T0 - 10, T0) == (1.0, 1)  # written once
    assert (await node.catalog.versions.traffic(repo, f"{7:040x}")).bytes == 100


def test_welch_against_the_textbook() -> None:
    for a, b, t_book, df_book, p_book in (EX1, EX2):
        got = welch(a, b)
        t, df = hand_welch(a, b)
        assert got.t == pytest.approx(t, rel=1e-9) and got.df == pytest.approx(df, rel=1e-9)
        assert round(t, 2) == t_book and abs(df - df_book) < 0.05
        assert got.p is not None and round(got.p, 3) == p_book
    assert welch([1.0, 1.0], [1.0, 1.0]).p is None
    assert welch([1.0, 1.0], [2.0, 2.0]).p == 0.0


def test_compare_verdicts() -> None:
    a, b = EX1[0], EX1[1]  # b's mean is higher, p = 0.021
    row = compare_values("accuracy", a, b)
    assert (row["better"], row["better_is"], row["verdict"]) == ("b", "higher", "B is better (higher is better)")
    assert row["a"] == {"n": 15, "mean": pytest.approx(statistics.fmean(a)), "stddev": pytest.approx(statistics.stdev(a))}
    for name in ("latency_ms", "p99_latency", "loss", "val_loss", "step_seconds", "error", "errors", "error_rate"):
        assert compare_values(name, a, b)["better"] == "a", name
    row = compare_values("accuracy", EX2[0], EX2[1])  # p = 0.149
    assert row["better"] is None and row["verdict"] == "no significant difference" and row["p"] > 0.05
    row = compare_values("accuracy", [0.9], b)
    assert (row["t"], row["p"], row["verdict"]) == (None, None, "not enough data") and "A" in row["reason"]
    assert compare_values("accuracy", [], []) ["a"] == {"n": 0, "mean": None, "stddev": None}


async def test_compare_two_versions(node: Node) -> None:
    vm, repo = node.version_metrics, await _repo(node)
    await vm.record_all([vm.report(repo, A, "accuracy", v) for v in EX1[0]]
                        + [vm.report(repo, B, "accuracy", v) for v in EX1[1]]
                        + [vm.report(repo, A, "only_here", 1.0), vm.report(repo, B, "f1", 0.5)])
    out = await vm.compare(repo, A, B)
    assert [m["metric"] for m in out["metrics"]] == ["accuracy"]
    assert (out["only_a"], out["only_b"]) == (["only_here"], ["f1"])
    assert out["metrics"][0]["t"] == pytest.approx(hand_welch(EX1[0], EX1[1])[0])
    one = await vm.compare(repo, A, B, "f1")
    assert one["metrics"][0]["verdict"] == "not enough data" and "only_a" not in one


# --- a real daemon ---------------------------------------------------------------------------


def _cli(m: MirrorDaemon, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mirror", *argv, "--config", str(m.config_path)],
                          capture_output=True, text=True, env=clean_env(**env), timeout=60)


def _post(m: MirrorDaemon, path: str, tok: str, body: Any) -> tuple[int, dict[str, str], Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"}
    status, h, out = raw(m.url + path, "POST", headers, data)
    return status, h, json.loads(out)


def _get(m: MirrorDaemon, path: str, tok: str) -> Any:
    status, _h, out = raw(m.url + path, headers={"Authorization": f"Bearer {tok}"})
    assert status == 200, out
    return json.loads(out)


def test_metrics_through_the_daemon_and_the_cli(hub: FakeHub, tmp_path: Path) -> None:
    cfg = b'{"model_type": "bert"}'
    main = hub.commit("org/m", {"config.json": cfg})
    hub.create_branch("org/m", "exp")
    exp = hub.commit("org/m", {"config.json": b'{"model_type": "exp"}'}, branch="exp")
    m = MirrorDaemon(tmp_path / "data", hub.url)
    admin, dev = token(m, "root", "admin"), token(m, "eval-job", "developer", "--grant", "org")
    auditor = token(m, "auditor", "auditor")
    with m:
        # Traffic: a real download (HEAD + GET) counted for its version; the CLI reads it once flushed.
        path = hf_hub_download("org/m", "config.json", endpoint=m.url, token=dev, cache_dir=tmp_path / "hf")
        assert Path(path).read_bytes() == cfg
        hf_hub_download("org/m", "config.json", revision="exp", endpoint=m.url, token=dev, cache_dir=tmp_path / "hf")
        # One report, by the admin, on the short path.
        status, _h, out = _post(m, "/_admin/metrics", admin, {"repo": "org/m", "revision": "main", "name": "accuracy",
                                                               "value": EX1[0][0], "client": "eval-3"})
        assert (status, out) == (201, {"recorded": 1, "commit": main, "commits": [main]})
        # A batch, by a developer (an eval job), over two versions.
        batch = [{"repo": "org/m", "revision": "main", "name": "accuracy", "value": v} for v in EX1[0][1:]]
        batch += [{"repo": "org/m", "revision": exp, "name": "accuracy", "value": v} for v in EX1[1]]
        status, _h, out = _post(m, "/_admin/v1/metrics", dev, {"metrics": batch})
        assert (status, out["recorded"], out["commits"]) == (201, len(batch), sorted([main, exp])), out
        # Bad bodies: 400 BadRequest saying what is wrong, and nothing recorded.
        one = {"repo": "org/m", "revision": "main", "name": "accuracy", "value": 1.0}
        for body, needle in [
            (b"{nope", "not valid JSON"),
            ({**one, "name": "mirror_requests"}, "the mirror's own"),
            ({**one, "value": "high"}, "finite"),
            (b'{"repo": "org/m", "revision": "main", "name": "a", "value": NaN}', "finite"),
            ({**one, "timestamp": time.time() + 3600}, "ahead"),
            ({k: v for k, v in one.items() if k != "revision"}, "'revision'"),
            ({k: v for k, v in one.items() if k != "value"}, "'value'"),
            ({"metrics": [one] * 1001}, "1 to 1000"),
            ({"metrics": [one, 5]}, "metrics[1]: a report must be a JSON object"),
            ({**one, "repo": "org/m@main"}, "'revision'"),
        ]:
            status, h, out = _post(m, "/_admin/metrics", admin, body)
            assert (status, h.get("X-Error-Code")) == (400, "BadRequest") and needle in out["error"], (body, out)
        status, h, out = _post(m, "/_admin/metrics", admin, {**one, "revision": "nope"})
        assert (status, h["X-Error-Code"]) == (404, "RevisionNotFound"), out
        status, h, out = _post(m, "/_admin/metrics", dev, {**one, "repo": "elsewhere/m"})
        assert status == 403 and "outside the grants" in out["error"]
        # Reads over HTTP.
        summary = _get(m, "/_admin/v1/metrics?repo=org/m&revision=main", dev)
        assert summary["commit"] == main and summary["metrics"]["accuracy"]["n"] == len(EX1[0])
        cmp = _get(m, "/_admin/v1/metrics/compare?repo=org/m&a=main&b=exp&metric=accuracy", admin)
        assert cmp["metrics"][0]["better"] == "b" and cmp["metrics"][0]["t"] == pytest.approx(hand_welch(*EX1[:2])[0])
        # The CLI, in another process, on the same data directory.
        deadline, shown = time.monotonic() + 20, {}
        while time.monotonic() < deadline:
            p = _cli(m, "metrics", "show", "org/m@main", "--json")
            assert p.returncode == 0, p.stderr
            shown = json.loads(p.stdout)
            if shown["builtins"]["mirror_bytes"]:
                break
            time.sleep(0.3)
        b = shown["builtins"]
        assert b["mirror_bytes"] == len(cfg) and b["mirror_errors"] == 0 and b["mirror_clients"] == 1
        assert b["mirror_requests"] >= 1 and shown["metrics"]["accuracy"]["n"] == len(EX1[0])
        p = _cli(m, "metrics", "compare", "org/m", "main", "exp", "--json")
        assert p.returncode == 0, p.stderr
        row = json.loads(p.stdout)["metrics"][0]
        assert row["metric"] == "accuracy" and row["t"] == pytest.approx(hand_welch(*EX1[:2])[0])
        assert row["p"] == pytest.approx(welch(*EX1[:2]).p)
        p = _cli(m, "metrics", "compare", "org/m", "main", "exp")
        assert p.returncode == 0 and "B is better" in p.stdout and "accuracy" in p.stdout, p.stdout
        p = _cli(m, "metrics", "record", "org/m@exp", "loss=0.3", "loss=0.2", "--client", "bench", "--json")
        assert p.returncode == 0 and json.loads(p.stdout) == {"repo": "org/m", "repo_type": "model", "revision": "exp",
                                                              "commit": exp, "recorded": 2}, p.stderr
        p = _cli(m, "metrics", "record", "org/m@exp", "loss=abc")
        assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("mirror: 'loss=abc'")
        assert _get(m, "/_admin/v1/metrics?repo=org/m&revision=exp", admin)["metrics"]["loss"]["n"] == 2
        # With MIRROR_TOKEN, the CLI asks the permission table as the HTTP API does: an
        # auditor reads metrics (releases.read) but does not report them.
        p = _cli(m, "metrics", "record", "org/m@exp", "loss=0.1", MIRROR_TOKEN=auditor)
        assert p.returncode == 3 and "may not metrics.report" in p.stderr, p.stderr
        p = _cli(m, "metrics", "show", "org/m@exp", MIRROR_TOKEN=auditor)
        assert p.returncode == 0 and "loss" in p.stdout and "served:" in p.stdout, p.stderr
        # Every report is in the audit log, under the caller's name.
        deadline, records = time.monotonic() + 10, []
        while time.monotonic() < deadline:
            records = [r for r in _get(m, "/_admin/v1/audit?limit=1000", admin) if r["action"] == "metrics.record"]
            if {r["actor"] for r in records} >= {"root", "eval-job"}:
                break
            time.sleep(0.3)
        assert {(r["actor"], r["target"]) for r in records} >= {("root", f"org/m@{main}"), ("eval-job", f"org/m@{exp}")}
        assert any(r["actor"].startswith("cli:") for r in records)
