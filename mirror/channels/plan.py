"""A canary's plan: how it advances and what stops it (stored as JSON in `aliases.plan`).

    step           percent added each interval while the gates hold (0: the weight stays
                   where it started until someone promotes or aborts)
    every          seconds between analyses (default 60)
    max            the weight at which the next passing analysis promotes (default 100)
    gates          metric ranges the canary side must meet, e.g. "accuracy >= 0.95",
                   "mirror_error_rate <= 0.01", "latency_p99_ms <= 500"
    failure_limit  failed analyses in a row that roll the canary back (default 1)
    on_missing     what an analysis does when a gate's metric has no value in its window:
                   "hold" (keep the weight, do not advance, say so) or "rollback" (count it
                   as a failed analysis); never silence

A gate reads one number per analysis: the mean of the values reported for the canary's
commit within the last `every` seconds (a built-in `mirror_*` figure over the same
window: channels/metrics.py).
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from mirror.errors import BadRequest

_GATE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.:-]{0,63})\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq, "!=": operator.ne,
}
MISSING_POLICIES = ("hold", "rollback")


@dataclass(frozen=True, slots=True)
class Gate:
    metric: str
    op: str
    threshold: float

    @classmethod
    def parse(cls, text: str) -> "Gate":
        m = _GATE.fullmatch(text)
        if m is None:
            raise BadRequest(f"gate {text!r} must look like 'accuracy >= 0.95' (metric, one of >= <= > < == !=, number)")
        threshold = float(m.group(3))
        if not math.isfinite(threshold):
            raise BadRequest(f"gate {text!r}: the threshold must be a finite number")
        return cls(m.group(1), m.group(2), threshold)

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


@dataclass(frozen=True, slots=True)
class CanaryPlan:
    start: float
    step: float = 0.0
    every: float = 60.0
    max: float = 100.0
    gates: tuple[Gate, ...] = field(default_factory=tuple)
    failure_limit: int = 1
    on_missing: str = "hold"

    def __post_init__(self) -> None:
        for name, value, low, high in (("--percent", self.start, 0, 100), ("--step", self.step, 0, 100),
                                       ("--max", self.max, 0, 100)):
            if not (math.isfinite(value) and low <= value <= high):
                raise BadRequest(f"{name} must be a number from {low} to {high}, got {value}")
        if self.start <= 0:
            raise BadRequest("--percent must be above 0 (a canary with no clients tests nothing)")
        if self.step and self.max < self.start:
            raise BadRequest(f"--max ({self.max:g}) is below --percent ({self.start:g})")
        if not (math.isfinite(self.every) and 1 <= self.every <= 7 * 86400):
            raise BadRequest("--every must be from 1s to 7d")
        if not 1 <= self.failure_limit <= 1000:
            raise BadRequest("--failure-limit must be from 1 to 1000")
        if self.on_missing not in MISSING_POLICIES:
            raise BadRequest(f"--on-missing-metrics must be hold or rollback, got {self.on_missing!r}")

    def next_weight(self, weight: float) -> float:
        return min(self.max, weight + self.step) if self.step else weight

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["gates"] = [str(g) for g in self.gates]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CanaryPlan":
        return cls(float(data["start"]), float(data.get("step", 0)), float(data.get("every", 60)),
                   float(data.get("max", 100)), tuple(Gate.parse(g) for g in data.get("gates", ())),
                   int(data.get("failure_limit", 1)), str(data.get("on_missing", "hold")))
