"""Progress of a long transfer on stderr: done/total, speed and ETA.

On a terminal, a one-line bar redrawn at most five times a second. Elsewhere (a log
file, a pipe, the journal), whole lines instead: one when the transfer starts, then one
whenever another tenth is done (at most one every `LINE_GAP` seconds) or `LINE_EVERY`
seconds have passed, and one at the end, so a long `mirror pull` is never silent and a
log never fills with redraws. `quiet` turns everything off, so cron mail stays clean.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from mirror.cli.common import human_bytes

# Seconds: the least gap between two lines off a terminal, and the longest silence.
LINE_GAP = 2.0
LINE_EVERY = 30.0


class Progress:
    def __init__(self, label: str, *, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = not quiet
        self.tty = self.enabled and self.stream.isatty()
        self.label = label
        self._start = time.monotonic()
        self._last = 0.0
        self._drawn = False
        self._lines = 0  # lines written off a terminal
        self._tenth = -1  # the tenth of the total reached by the last line
        self._finished = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            self._draw(now, done, total)
        else:
            self._line(now, done, total)

    def _draw(self, now: float, done: int, total: int) -> None:
        if now - self._last < 0.2 and done < total:
            return
        self._last = now
        share, speed, eta = self._figures(now, done, total)
        width = 28
        bar = "#" * int(share * width) + "-" * (width - int(share * width))
        line = (
            f"\r{self.label} [{bar}] {share * 100:5.1f}% {human_bytes(done)}/{human_bytes(total)} "
            f"{human_bytes(speed)}/s ETA {eta}"
        )
        self.stream.write(line + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def _line(self, now: float, done: int, total: int) -> None:
        if self._finished or total <= 0:  # nothing to move: no line
            return
        share, speed, eta = self._figures(now, done, total)
        tenth = int(share * 10)
        if done >= total:
            self._finished = True  # the last line, whenever the end comes
        elif self._lines:
            gap = now - self._last
            if gap < LINE_GAP or (tenth <= self._tenth and gap < LINE_EVERY):
                return
        self._last, self._tenth = now, tenth
        self._lines += 1
        self.stream.write(
            f"{self.label}: {share * 100:5.1f}% {human_bytes(done)}/{human_bytes(total)} "
            f"{human_bytes(speed)}/s ETA {eta}\n"
        )
        self.stream.flush()

    def _figures(self, now: float, done: int, total: int) -> tuple[float, float, str]:
        """(share done, bytes per second, ETA text: '-' until a byte has moved)."""
        elapsed = max(now - self._start, 1e-6)
        speed = done / elapsed
        share = min(1.0, done / total) if total else 1.0
        eta = _clock(max(0.0, (total - done) / speed)) if speed > 0 else "-"
        return share, speed, eta

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:d}:{s % 60:02d}"
