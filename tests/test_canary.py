"""The canary controller on an injected clock (issue 11 items 3-5): progressive steps and
promotion, a report that breaks a gate rolling back at once, the failure limit, the
missing-metrics policy, and built-in per-version figures as gates. In process: a real
node (SQLite, the alias table) on a FakeClock; the controller's `tick` is what the
daemon's loop calls every `[channels] tick`."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest

from mirror import config as config_mod
from mirror.caller import Caller
from mirror.channels.plan import CanaryPlan, Gate
from mirror.clock import FakeClock
from mirror.model import FileEntry, RepoKey
from mirror.node import Node, open_node

KEY = RepoKey("model", "org/m")
ADMIN = Caller(principal="release-manager", role="admin")
A, B = "a" * 40, "b" * 40
CLIENTS = [f"id:client-{i}" for i in range(1000)]


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[Node, FakeClock, int]]:
    clock = FakeClock(1_800_000_000.0)
    cfg = config_mod.load(env={}, overrides={"store": {"data_dir": str(tmp_path / "data")}})
    async with await open_node(cfg, clock=clock) as n:
        repo = await n.catalog.repos.repo_id(KEY)
        assert repo is not None
        for sha in (A, B):
            await n.catalog.repos.put_listing(repo, sha, [FileEntry("config.json", "file", "0" * 40, 2)])
        await n.channels.set(KEY, "prod", A, ADMIN, reason="stable", force=True)
        yield n, clock, repo


async def canary_share(n: Node, repo: int) -> tuple[float, set[str]]:
    picks = {c: (await n.channels.table.pick(repo, "prod", c)).commit for c in CLIENTS}
    on = {c for c, commit in picks.items() if commit == B}
    return len(on) / len(CLIENTS), on


def plan(**kw: object) -> CanaryPlan:
    base: dict[str, object] = {"start": 10.0, "step": 20.0, "every": 60.0, "max": 50.0,
                               "gates": (Gate.parse("accuracy >= 0.9"),), "failure_limit": 1, "on_missing": "hold"}
    base.update(kw)
    return CanaryPlan(**base)  # type: ignore[arg-type]


async def actions(n: Node) -> list[str]:
    return [e.action for e in reversed(await n.channels.history(KEY, "prod"))]


async def test_progressive_steps_then_promotion(node) -> None:
    n, clock, repo = node
    await n.channels.canary(KEY, "prod", B, plan(), ADMIN)
    share, on10 = await canary_share(n, repo)
    assert abs(share - 0.10) <= 0.03
    previous = on10
    for expected in (30.0, 50.0):
        clock.advance(30)
        await n.version_metrics.record(repo, B, "accuracy", 0.95, at=clock.now())
        clock.advance(30)
        assert [c.action for c in await n.canary.tick()] == ["canary-step"]
        row = await n.channels.get(KEY, "prod")
        assert row.weight == expected
        share, on = await canary_share(n, repo)
        assert abs(share - expected / 100) <= 0.03
        assert previous <= on  # raising the weight only moves clients from old to new
        previous = on
    clock.advance(30)
    assert await n.canary.tick() == []  # not due yet: one analysis per interval
    await n.version_metrics.record(repo, B, "accuracy", 0.97, at=clock.now())
    clock.advance(30)
    [change] = await n.canary.tick()
    assert change.action == "canary-promote" and "accuracy >= 0.9: holds with 0.97" in change.reason
    row = await n.channels.get(KEY, "prod")
    assert row.commit == B and row.canary is None
    assert (await canary_share(n, repo))[0] == 1.0
    assert await actions(n) == ["set", "canary-start", "canary-step", "canary-step", "canary-promote"]
    # The promotion is a forward change: a rollback goes back to A.
    await n.channels.rollback(KEY, "prod", ADMIN, reason="regression found later")
    assert (await n.channels.get(KEY, "prod")).commit == A


async def test_a_report_that_breaks_a_gate_rolls_back_at_once(node) -> None:
    n, clock, repo = node
    await n.channels.canary(KEY, "prod", B, plan(start=50.0), ADMIN)
    await n.version_metrics.record(repo, B, "accuracy", 0.95, at=clock.now())
    assert await n.canary.on_report(repo, B) == []  # a good report changes nothing
    clock.advance(1)
    await n.version_metrics.record(repo, B, "accuracy", 0.5, at=clock.now())
    [change] = await n.canary.on_report(repo, B)
    assert change.action == "canary-rollback"
    assert "accuracy >= 0.9: FAILED with 0.725 (n=2)" in change.reason  # the window's mean and count
    assert (await canary_share(n, repo))[0] == 0.0  # the next request resolves to A
    [event] = (await n.channels.history(KEY, "prod", 1))
    assert event.actor == "canary-controller" and event.canary is None and event.to_sha == A
    assert event.detail["gates"][0]["value"] == pytest.approx(0.725)


async def test_failure_limit_counts_failures_in_a_row(node) -> None:
    n, clock, repo = node
    await n.channels.canary(KEY, "prod", B, plan(step=0.0, failure_limit=3), ADMIN)
    for value in (0.5, 0.5):  # two failed analyses
        clock.advance(30)
        await n.version_metrics.record(repo, B, "accuracy", value, at=clock.now())
        clock.advance(30)
        assert [c.action for c in await n.canary.tick()] == ["canary-gate-failed"]
    assert (await n.channels.get(KEY, "prod")).failures == 2
    clock.advance(30)
    await n.version_metrics.record(repo, B, "accuracy", 0.99, at=clock.now())
    clock.advance(30)
    await n.canary.tick()  # a passing analysis resets the count
    assert (await n.channels.get(KEY, "prod")).failures == 0
    for _ in range(3):
        clock.advance(30)
        await n.version_metrics.record(repo, B, "accuracy", 0.1, at=clock.now())
        clock.advance(30)
        changes = await n.canary.tick()
    assert [c.action for c in changes] == ["canary-rollback"]
    assert "3 time(s) in a row (limit 3)" in changes[0].reason


async def test_missing_metrics_hold_is_declared_and_rollback_policy_rolls_back(node) -> None:
    n, clock, repo = node
    await n.channels.canary(KEY, "prod", B, plan(), ADMIN)
    for _ in range(3):
        clock.advance(60)
        await n.canary.tick()
    row = await n.channels.get(KEY, "prod")
    assert row.weight == 10.0 and row.holding.startswith("holding: accuracy >= 0.9: no values")
    assert (await actions(n)).count("canary-hold") == 1  # one history row per episode, not per tick
    clock.advance(30)
    await n.version_metrics.record(repo, B, "accuracy", 0.95, at=clock.now())
    clock.advance(30)
    await n.canary.tick()
    row = await n.channels.get(KEY, "prod")
    assert row.weight == 30.0 and row.holding == ""
    await n.channels.abort(KEY, "prod", ADMIN, reason="switch policy")
    await n.channels.canary(KEY, "prod", B, plan(on_missing="rollback", failure_limit=2), ADMIN)
    clock.advance(60)
    assert [c.action for c in await n.canary.tick()] == ["canary-gate-failed"]
    clock.advance(60)
    [change] = await n.canary.tick()
    assert change.action == "canary-rollback" and "no values" in change.reason


async def test_builtin_error_rate_gate_reads_what_the_mirror_served(node) -> None:
    n, clock, repo = node
    await n.channels.canary(KEY, "prod", B, plan(gates=(Gate.parse("mirror_error_rate <= 0.05"),)), ADMIN)
    for i in range(40):
        n.version_metrics.observe(repo, B, f"id:c{i}", 200, 100)
    clock.advance(60)
    assert [c.action for c in await n.canary.tick()] == ["canary-step"]
    for i in range(40):
        n.version_metrics.observe(repo, B, f"id:c{i}", 500 if i % 4 == 0 else 200, 100)
    clock.advance(60)
    [change] = await n.canary.tick()
    assert change.action == "canary-rollback" and "mirror_error_rate" in change.reason


async def test_a_second_process_sees_the_rollback_on_its_next_lookup(node, tmp_path: Path) -> None:
    n, clock, repo = node
    await n.channels.canary(KEY, "prod", B, plan(start=100.0, step=0.0), ADMIN)
    cfg = config_mod.load(env={}, overrides={"store": {"data_dir": str(tmp_path / "data")}})
    async with await open_node(cfg, clock=clock) as other:  # another process on the same data dir
        assert (await other.channels.table.pick(repo, "prod", "id:x")).commit == B
        await n.channels.rollback(KEY, "prod", ADMIN, reason="bad")
        assert (await other.channels.table.pick(repo, "prod", "id:x")).commit == A
