"""The monitoring files (issue 12 item 2): `deploy/prometheus/alerts.yml` passes
`promtool check rules` and its unit tests (`promtool test rules alerts.test.yml`: every
alert fires on a node past its threshold, after its `for:`, and stays quiet on one
below it), and `deploy/grafana/model-mirror.json` is a Grafana dashboard model whose
queries all go through its data-source variable and all parse as PromQL (checked by
promtool as recording rules, Grafana's variables replaced). That every metric these
files use is exported by a real daemon is tests/test_metrics.py.

promtool comes with Debian's `prometheus` package (.ci/run installs it); without it the
promtool checks skip and say so."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy/prometheus/alerts.yml"
RULE_TESTS = ROOT / "deploy/prometheus/alerts.test.yml"
DASHBOARD = ROOT / "deploy/grafana/model-mirror.json"
ALERTS = {"MirrorChecksumFailures", "MirrorStorageReadSlow", "MirrorFillsNearLimit", "MirrorUpstreamUnreachable",
          "MirrorDiskAboveHighWatermark", "MirrorPeerDown", "MirrorCanaryRolledBack"}
# Grafana's variables, as a query sent to Prometheus would have them.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "6h", "$instance": ".*"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`; .ci/run installs it)")
    return path


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_rules_pass_promtool_check() -> None:
    p = run(promtool(), "check", "rules", RULES.name, cwd=RULES.parent)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


def test_alerts_fire_past_their_thresholds_only() -> None:
    p = run(promtool(), "test", "rules", RULE_TESTS.name, cwd=RULES.parent)
    assert p.returncode == 0, p.stdout + p.stderr


def test_every_alert_is_there_and_unit_tested() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert set(alerts) == ALERTS
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"], name
    tests = yaml.safe_load(RULE_TESTS.read_text())
    firing = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert firing == ALERTS


def _panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])


def test_dashboard_is_a_grafana_model_over_its_datasource_variable() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in _panels(dash)]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    queries = 0
    for p in _panels(dash):
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}" and "mirror_" in t["expr"], p["title"]
            queries += 1
    assert queries >= 25


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    tool = promtool()
    dash = json.loads(DASHBOARD.read_text())
    rules = []
    for p in _panels(dash):
        for i, t in enumerate(p.get("targets", [])):
            expr = t["expr"]
            for var, val in GRAFANA_VARS.items():
                expr = expr.replace(var, val)
            assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
            rules.append({"record": f"dashboard:panel{p['id']}:{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = run(tool, "check", "rules", path.name, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
