"""Progress of long CLI work on stderr, as a `(done, total)` callback the services call.

On a terminal: a `tqdm` bar (done/total, rate, ETA), redrawn at most five times a second
and left on screen, finished, when the work ends. tqdm rather than rich: one small pure
Python package with no dependencies of its own (rich brings pygments and markdown-it),
already installed wherever huggingface_hub is, and the bar users of `hf download` know;
the CLI needs one bar at a time, which is all tqdm is for.

Off a terminal (a pipe, a log file, cron) and with `--json` or `--quiet`: nothing, so
stderr stays the data dir notice and errors, and stdout stays machine-readable. One
exception, asked for by commands that move data over the network for minutes (`pull`,
`sync`: `log_lines=True`): off a terminal they write whole lines instead of a bar, one
when the transfer starts, then one whenever another tenth is done (at most one every
`LINE_GAP` seconds) or `LINE_EVERY` seconds have passed, and one at the end, so a long
`mirror pull` under systemd or a CI log is never silent for minutes (issue 14 #13) and
the log never fills with redraws; `--quiet` turns those off too.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from mirror.cli.common import human_bytes

# Seconds: the least gap between two lines off a terminal, and the longest silence.
LINE_GAP = 2.0
LINE_EVERY = 30.0
# Seconds between two redraws of the bar.
REDRAW = 0.2


class Progress:
    """A `(done, total)` callback; `unit` is "B" (bytes, shown in KiB/MiB/GiB) or the name
    of what is counted ("chunk"). Callable from a worker thread. `close()` ends the bar."""

    def __init__(self, label: str, *, unit: str = "B", quiet: bool = False, log_lines: bool = False,
                 stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.label = label
        self.unit = unit
        self.tty = not quiet and self.stream.isatty()
        self.lines = not quiet and not self.tty and log_lines
        self._bar: Any = None  # a tqdm bar, made at the first call
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last = 0.0
        self._count = 0  # lines written off a terminal
        self._tenth = -1  # the tenth of the total reached by the last line
        self._finished = False

    def __call__(self, done: int, total: int) -> None:
        if self.tty:
            with self._lock:
                self._draw(done, total)
        elif self.lines:
            with self._lock:
                self._line(time.monotonic(), done, total)

    def _draw(self, done: int, total: int) -> None:
        bar = self._bar
        if bar is None:
            from tqdm import tqdm  # here: a command off a terminal never pays for the import

            bar = self._bar = tqdm(total=total, desc=self.label, unit=self.unit, unit_scale=True,
                                   unit_divisor=1024 if self.unit == "B" else 1000, file=self.stream,
                                   mininterval=REDRAW, leave=True, dynamic_ncols=True)
        if bar.total != total:
            bar.total = total
        if done >= bar.n:
            bar.update(done - bar.n)  # redraws when REDRAW has passed
        else:  # a file that restarts (a failed resume) moves back
            bar.n = done
            bar.refresh()

    def _line(self, now: float, done: int, total: int) -> None:
        if self._finished or total <= 0:  # nothing to move: no line
            return
        share = min(1.0, done / total)
        tenth = int(share * 10)
        if done >= total:
            self._finished = True  # the last line, whenever the end comes
        elif self._count:
            gap = now - self._last
            if gap < LINE_GAP or (tenth <= self._tenth and gap < LINE_EVERY):
                return
        self._last, self._tenth = now, tenth
        self._count += 1
        speed = done / max(now - self._start, 1e-6)
        eta = _clock((total - done) / speed) if speed > 0 else "-"
        amount = f"{human_bytes(done)}/{human_bytes(total)} {human_bytes(speed)}/s" if self.unit == "B" \
            else f"{done}/{total} {self.unit}s {speed:.1f}/s"
        self.stream.write(f"{self.label}: {share * 100:5.1f}% {amount} ETA {eta}\n")
        self.stream.flush()

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:d}:{s % 60:02d}"
