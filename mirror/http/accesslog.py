"""The access line: one per request (http/middleware.py), written straight to the
daemon log's stream instead of through `logging`'s record machinery.

Why: through `logging` (a LogRecord, the escaping filter of logsafe.py, the formatter's
strftime, the handler) one line cost about 40 us of the event loop, a tenth of its time
on warm small files (py-spy under scripts/bench_observability.py). Written here it costs
a few microseconds, and reads the same.

The line is exactly what a `logging` record of logger `mirror.access` at INFO would
print with the daemon's handler, in both formats of `[server] log_format`:

  text  2026-11-29 21:14:15,123 INFO mirror.access: 127.0.0.1 "GET /org/m/resolve/main/a.json"
        200 4096 0.4ms id=5f0c21d9a0000001 group=files.read source=store cache=hit
  json  {"time": "2026-11-29T21:14:15.123Z", "level": "INFO", "logger": "mirror.access",
         "message": <the text after "mirror.access: ">, "remote": ..., "method": ...,
         "path": ..., "status": ..., "bytes": ..., "duration_ms": ..., "request_id": ...,
         "group": ..., "source": ..., "cache": ...}

It is safe without the escaping filter: every field that comes from the request is
escaped where the line is built (middleware.py), the request id is one the daemon
checked or made, and the rest are the daemon's own words.

The lines finished in one turn of the event loop are written together, under the
handler's lock, by a callback at the end of that turn (`call_soon`): one write system
call for them, which was most of a line's cost in the daemon (py-spy). A line is thus
at most one turn of the loop later than its response's last bytes, as prompt as before
for anyone reading the log: tests read the log right after a request, and the lines of
one test must not land in the next one's window. (Holding lines a few milliseconds
under load, to share more writes, did exactly that, and was taken out.)
`flush()` runs at shutdown too (app.py serve).

The direct path is taken only while the root logger has exactly the handler the daemon
configured (one `StreamHandler` with the text layout of logsafe.TEXT_FORMAT or the JSON
formatter) and `mirror.access` logs at INFO. Anything else (a test's capture handler, an
embedding program's own handlers, `mirror.access` silenced) goes through `logging` as
before, with the same fields on the record (`record.access`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from mirror.jsonlog import JsonFormatter
from mirror.logsafe import TEXT_FORMAT

NAME = "mirror.access"
# Lines held at most before a write, should one turn of the loop finish that many requests.
_MAX_PENDING = 256
_TEMPLATE = '%s "%s %s" %d %d %.1fms id=%s group=%s source=%s cache=%s'

log = logging.getLogger(NAME)


class AccessLog:
    """Writes access lines; build it after logging is configured (the daemon's serve)."""

    def __init__(self, root: logging.Logger | None = None) -> None:
        self._root = root or logging.getLogger()
        self._handler: logging.StreamHandler[Any] | None = None
        self._json = False
        handlers = self._root.handlers
        if len(handlers) == 1 and type(handlers[0]) is logging.StreamHandler:
            fmt = handlers[0].formatter
            if isinstance(fmt, JsonFormatter):
                self._handler, self._json = handlers[0], True
            elif (fmt is not None and getattr(fmt, "_fmt", None) == TEXT_FORMAT and fmt.datefmt is None
                  and type(fmt).formatTime is logging.Formatter.formatTime):
                self._handler = handlers[0]
        self._pending: list[str] = []
        self._second = -1
        self._second_text = ""

    @property
    def direct(self) -> bool:
        """Whether lines bypass `logging` right now (see the module doc)."""
        h = self._handler
        return (h is not None and self._root.handlers == [h] and h.level <= logging.INFO
                and log.isEnabledFor(logging.INFO))

    def write(self, fields: dict[str, Any]) -> None:
        """One access line. `fields`: remote, method, path, status, bytes, duration_ms,
        request_id, group, source, cache, in that order, the request's ones escaped."""
        if not self.direct:
            log.info(_TEMPLATE, *fields.values(), extra={"access": fields})
            return
        message = _TEMPLATE % tuple(fields.values())
        if self._json:
            out = {"time": self._stamp(), "level": "INFO", "logger": NAME, "message": message, **fields}
            line = json.dumps(out, ensure_ascii=True, default=str)
        else:
            line = f"{self._stamp()} INFO {NAME}: {message}"
        self._pending.append(line)
        if len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop: nothing would flush later
                self.flush()
        elif len(self._pending) >= _MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        """Write the lines of this turn of the event loop, in one write and flush."""
        if not self._pending or self._handler is None:
            return
        text = "\n".join(self._pending) + "\n"
        self._pending.clear()
        h = self._handler
        with h.lock:  # type: ignore[union-attr]
            h.stream.write(text)
            h.stream.flush()

    def _stamp(self) -> str:
        """The time as the daemon's formatter writes it, the seconds part formatted once a
        second: text, logging.Formatter's default `asctime` (local time, `,mmm`); JSON,
        jsonlog.JsonFormatter's `time` (UTC, ISO 8601, `.mmmZ`)."""
        now = time.time()
        second = int(now)
        ms = int((now - second) * 1000)
        if second != self._second:
            self._second = second
            self._second_text = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) if self._json
                                 else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second)))
        return f"{self._second_text}.{ms:03d}Z" if self._json else f"{self._second_text},{ms:03d}"
