"""The canary controller: advances running canaries while their gates hold, promotes them
at the end, and rolls them back when a gate fails `failure_limit` analyses in a row.

An analysis (every `plan.every` seconds per canary, at the daemon's tick) reads each
gate's metric for the canary's commit over the last `every` seconds (metrics.py
`aggregate`: the mean of reported values, or a built-in `mirror_*` figure):

- a gate with a value that breaks it: a failed analysis (failures + 1; at the limit the
  canary is rolled back at once, with the gate, its value and sample count as reason);
- a gate with no value: the declared policy: `hold` keeps the weight and says why
  (`holding`, one history row per episode), `rollback` counts a failed analysis;
- all gates hold: failures reset; the weight grows by `step` up to `max`; an analysis
  that passes at `max` promotes (a canary without `step` stays where it was put until
  someone promotes or aborts it).

A metric report (`on_report`) triggers an analysis of the gates it has data for, at once:
a report that breaks a gate counts a failure right away, so with the default
`failure_limit = 1` the next request already resolves to the stable commit.

A node that follows an authority (`[channels] authority`) runs no controller: the
authority decides its canaries, on the metrics reported to the authority, and the
followers copy the outcome (channels/follow.py).

Each outcome is one `ChannelCatalog.change_alias` transaction that re-reads the alias and
acts only if the same canary (same salt) is still running: the daemon and a CLI process
reporting metrics can both decide, and a canary is rolled back or promoted once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any, Protocol

from mirror.catalog import Catalog
from mirror.catalog.channels import AliasRow, Change
from mirror.channels.aliases import Channels
from mirror.channels.plan import CanaryPlan, Gate
from mirror.clock import Clock
from mirror.model import RepoKey

log = logging.getLogger("mirror.channels")

ACTOR = "canary-controller"


class MetricSource(Protocol):
    async def aggregate(self, repo: int, commit: str, name: str, since: float, until: float) -> tuple[float, int] | None: ...


@dataclass(frozen=True, slots=True)
class Reading:
    gate: Gate
    value: float | None
    n: int

    @property
    def missing(self) -> bool:
        return self.value is None

    @property
    def ok(self) -> bool:
        return self.value is not None and self.gate.holds(self.value)

    def to_json(self) -> dict[str, Any]:
        return {"gate": str(self.gate), "value": self.value, "n": self.n, "ok": self.ok}

    def __str__(self) -> str:
        if self.value is None:
            return f"{self.gate}: no values"
        return f"{self.gate}: {'holds' if self.ok else 'FAILED'} with {self.value:g} (n={self.n})"


class CanaryController:
    def __init__(self, catalog: Catalog, channels: Channels, metrics: MetricSource, clock: Clock, tick: float) -> None:
        self.catalog = catalog
        self.channels = channels
        self.metrics = metrics
        self.clock = clock
        self.interval = tick

    async def forever(self) -> None:
        while True:
            try:
                await self.channels.table.poll()
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("canary controller round failed; next round in %.0fs", self.interval)
            await asyncio.sleep(self.interval)

    async def tick(self) -> list[Change]:
        """Analyse every canary whose next look is due (none on a follower)."""
        if self.channels.follows:
            return []
        now = self.clock.now()
        out = []
        for row in await self.catalog.channels.canaries():
            if row.next_at is None or row.next_at <= now:
                change = await self._analyse(row, scheduled=True)
                if change is not None:
                    out.append(change)
        return out

    async def on_report(self, repo: int, commit: str) -> list[Change]:
        """A metric of `commit` was reported: analyse the canaries it is the new side of.
        Not on a follower: its authority decides (on the reports made to the authority)."""
        if self.channels.follows:
            return []
        out = []
        for row in await self.catalog.channels.canaries():
            if row.repo == repo and row.canary == commit:
                change = await self._analyse(row, scheduled=False)
                if change is not None:
                    out.append(change)
        return out

    async def after_report(self, repo: int, commit: str) -> None:
        """`on_report` for a report that is already recorded: a failure is logged, not
        raised (the reporter must not send the values twice)."""
        try:
            await self.on_report(repo, commit)
        except Exception:
            log.exception("the canary check after a metrics report failed")

    async def _analyse(self, row: AliasRow, *, scheduled: bool) -> Change | None:
        assert row.canary is not None and row.plan is not None
        plan = CanaryPlan.from_json(row.plan)
        now = self.clock.now()
        readings = [await self._read(row, g, now - plan.every, now) for g in plan.gates]
        failed = [r for r in readings if not r.missing and not r.ok]
        missing = [r for r in readings if r.missing]
        if not scheduled and not failed:
            return None  # a report only ever counts against a canary, never for it
        key = await self._key(row.repo)
        salt = row.salt

        def decide(cur: AliasRow | None) -> Change | None:
            if cur is None or cur.canary != row.canary or cur.salt != salt:
                return None  # rolled back, promoted or restarted meanwhile
            return self._outcome(key, cur, plan, readings, failed, missing, now, scheduled)

        change = await self.channels.apply(row.repo, row.name, decide)
        if change is not None and change.history:
            log.log(logging.WARNING if change.action == "canary-rollback" else logging.INFO,
                    "%s %s: %s (%s)", key, row.name, change.action, change.reason)
        return change

    def _outcome(self, key: RepoKey, cur: AliasRow, plan: CanaryPlan, readings: list[Reading], failed: list[Reading],
                 missing: list[Reading], now: float, scheduled: bool) -> Change:
        detail = {"gates": [r.to_json() for r in readings], "weight": cur.weight, "scheduled": scheduled}
        nxt = now + plan.every if scheduled else cur.next_at
        if failed or (missing and plan.on_missing == "rollback"):
            failures = cur.failures + 1
            why = "; ".join(str(r) for r in failed) or "; ".join(f"{r} in the last {plan.every:g}s" for r in missing)
            if failures >= plan.failure_limit:
                reason = f"gate failed {failures} time(s) in a row (limit {plan.failure_limit}): {why}"
                return self.channels.make_change(key, cur, cur.without_canary(), "canary-rollback", ACTOR, reason,
                                             {**detail, "canary": cur.canary, "failures": failures})
            new = replace(cur, failures=failures, next_at=nxt, holding="")
            change = self.channels.make_change(key, cur, new, "canary-gate-failed", ACTOR,
                                           f"failure {failures} of {plan.failure_limit}: {why}", detail)
            return replace(change, announce=None)
        if missing:  # on_missing = hold
            holding = "holding: " + "; ".join(str(r) for r in missing) + f" in the last {plan.every:g}s"
            new = replace(cur, next_at=nxt, holding=holding)
            change = self.channels.make_change(key, cur, new, "canary-hold", ACTOR, holding, detail)
            return replace(change, announce=None, history=not cur.holding)  # one history row per episode
        if plan.step and cur.weight >= plan.max:
            reason = f"gates held at {cur.weight:g}%: " + ("; ".join(str(r) for r in readings) or "no gates")
            return self.channels.make_change(key, cur, cur.without_canary(commit=cur.canary, release=cur.canary_release),
                                         "canary-promote", ACTOR, reason, {**detail, "canary": cur.canary})
        weight = plan.next_weight(cur.weight)
        new = replace(cur, weight=weight, failures=0, holding="", next_at=nxt)
        if weight != cur.weight:
            reason = f"{cur.weight:g}% -> {weight:g}%: " + ("; ".join(str(r) for r in readings) or "no gates")
            return self.channels.make_change(key, cur, new, "canary-step", ACTOR, reason, detail)
        change = self.channels.make_change(key, cur, new, "canary-check", ACTOR, "gates hold", detail)
        return replace(change, announce=None, history=False)

    async def _read(self, row: AliasRow, gate: Gate, since: float, until: float) -> Reading:
        assert row.canary is not None
        found = await self.metrics.aggregate(row.repo, row.canary, gate.metric, since, until)
        return Reading(gate, None, 0) if found is None else Reading(gate, found[0], found[1])

    async def _key(self, repo: int) -> RepoKey:
        return await self.catalog.repos.key_of(repo) or RepoKey("model", f"#{repo}")
