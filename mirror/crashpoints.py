"""Labelled crash points for durability tests (threat-model H3).

`MIRROR_CRASHPOINT=label:n` makes the n-th call of `hit(label)` kill the process with
SIGKILL, so tests can prove that a crash between any two steps leaves a consistent store.
Unset (production), `hit` is a dictionary miss and nothing else.
"""

from __future__ import annotations

import os
import signal
import threading

_lock = threading.Lock()
_target: tuple[str, int] | None = None
_counts: dict[str, int] = {}


def _parse() -> tuple[str, int] | None:
    spec = os.environ.get("MIRROR_CRASHPOINT", "")
    if not spec:
        return None
    label, _, n = spec.rpartition(":")
    if not label or not n.isdigit():
        return (spec, 1)
    return (label, int(n))


_target = _parse()


def hit(label: str) -> None:
    """Count one pass through `label`; die here if this is the configured pass."""
    if _target is None or _target[0] != label:
        return
    with _lock:
        _counts[label] = _counts.get(label, 0) + 1
        if _counts[label] == _target[1]:
            os.kill(os.getpid(), signal.SIGKILL)
