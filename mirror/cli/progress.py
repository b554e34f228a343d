"""A one-line progress bar on stderr: done/total, speed and ETA.

Drawn only when stderr is a terminal and the command was not asked to be quiet, and at
most five times a second; otherwise every call is a no-op, so cron mail stays clean.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from mirror.cli.common import human_bytes


class Progress:
    def __init__(self, label: str, *, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = not quiet and self.stream.isatty()
        self.label = label
        self._start = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.2 and done < total:
            return
        self._last = now
        elapsed = max(now - self._start, 1e-6)
        speed = done / elapsed
        share = done / total if total else 1.0
        eta = (total - done) / speed if speed > 0 else 0.0
        width = 28
        bar = "#" * int(share * width) + "-" * (width - int(share * width))
        line = (
            f"\r{self.label} [{bar}] {share * 100:5.1f}% {human_bytes(done)}/{human_bytes(total)} "
            f"{human_bytes(speed)}/s ETA {_clock(eta)}"
        )
        self.stream.write(line + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:d}:{s % 60:02d}"
