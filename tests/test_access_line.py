"""The access line written straight to the log stream (mirror/http/accesslog.py) is the
line `logging` writes for the same record, in both log formats, with the daemon's own
formatter and escaping filter; and the writer steps aside (back to `logging`) when the
root logger's handlers are not the daemon's. The daemon tests (test_ops_logs.py,
test_hardening_logs.py) read these lines from real daemons; this pins the equivalence
the fast path claims, with the real logging classes on an isolated root logger.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from typing import Iterator

import pytest

from mirror.cli import _LogFormatter
from mirror.http.accesslog import AccessLog
from mirror.jsonlog import JsonFormatter
from mirror.logsafe import TEXT_FORMAT, EscapingFilter

FIELDS = {"remote": "127.0.0.1", "method": "GET", "path": "/org/m/resolve/main/a b\\x0a.json", "status": 206,
          "bytes": 4096, "duration_ms": 0.4, "request_id": "5f0c21d9a0000001", "group": "files.read",
          "source": "store", "cache": "hit"}
_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


@pytest.fixture
def access_logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("mirror.access")
    saved = log.level, log.propagate, log.handlers[:]
    log.setLevel(logging.INFO)
    try:
        yield log
    finally:
        log.setLevel(saved[0])
        log.propagate, log.handlers[:] = saved[1], saved[2]


def _root(name: str, formatter: logging.Formatter) -> tuple[logging.Logger, logging.StreamHandler[io.StringIO], io.StringIO]:
    root = logging.getLogger(name)
    root.propagate = False
    root.handlers[:] = []
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(EscapingFilter())
    root.addHandler(handler)
    return root, handler, out


def _through_logging(access_logger: logging.Logger, handler: logging.Handler) -> None:
    """What the line was before the direct writer: a record of `mirror.access`."""
    access_logger.propagate, access_logger.handlers[:] = False, [handler]
    try:
        access_logger.info('%s "%s %s" %d %d %.1fms id=%s group=%s source=%s cache=%s', *FIELDS.values(),
                           extra={"access": FIELDS})
    finally:
        access_logger.propagate, access_logger.handlers[:] = True, []


def test_text_line_is_the_logging_line(access_logger: logging.Logger) -> None:
    root, handler, out = _root("test-access-text", _LogFormatter(TEXT_FORMAT, brief=True))
    writer = AccessLog(root)
    assert writer.direct
    writer.write(FIELDS)
    _through_logging(access_logger, handler)
    direct, via_logging = out.getvalue().splitlines()
    assert _TIME.match(direct) and _TIME.match(via_logging), (direct, via_logging)
    assert _TIME.sub("", direct) == _TIME.sub("", via_logging)
    assert direct[:16] == via_logging[:16]  # the same minute: both local time, the same layout
    assert ' INFO mirror.access: 127.0.0.1 "GET /org/m/resolve/main/a b\\x0a.json" 206 4096 0.4ms ' in direct


def test_json_line_is_the_logging_line(access_logger: logging.Logger) -> None:
    root, handler, out = _root("test-access-json", JsonFormatter())
    writer = AccessLog(root)
    assert writer.direct
    writer.write(FIELDS)
    _through_logging(access_logger, handler)
    direct, via_logging = (json.loads(line) for line in out.getvalue().splitlines())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", direct["time"]), direct["time"]
    assert direct["time"][:16] == via_logging["time"][:16]
    del direct["time"], via_logging["time"]
    assert direct == via_logging
    assert list(direct) == list(via_logging)  # the same key order too
    assert direct["request_id"] == "5f0c21d9a0000001" and direct["status"] == 206


def test_other_handlers_get_records(access_logger: logging.Logger) -> None:
    """A handler the daemon did not configure (a capture, an embedding program's) gets a
    real record, with the fields on it, and the daemon's stream gets nothing twice."""
    root, handler, out = _root("test-access-fallback", _LogFormatter(TEXT_FORMAT, brief=True))
    writer = AccessLog(root)
    captured: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    extra = Capture()
    root.addHandler(extra)
    try:
        assert not writer.direct
        access_logger.propagate = False
        access_logger.handlers[:] = [extra]
        writer.write(FIELDS)
    finally:
        root.removeHandler(extra)
    assert out.getvalue() == ""
    assert len(captured) == 1 and captured[0].access == FIELDS  # type: ignore[attr-defined]
    assert "206 4096 0.4ms id=5f0c21d9a0000001" in captured[0].getMessage()


def test_silenced_access_logger_writes_nothing(access_logger: logging.Logger) -> None:
    root, _handler, out = _root("test-access-silenced", _LogFormatter(TEXT_FORMAT, brief=True))
    writer = AccessLog(root)
    access_logger.setLevel(logging.WARNING)
    writer.write(FIELDS)
    assert not writer.direct and out.getvalue() == ""


def test_a_foreign_layout_is_not_imitated() -> None:
    root, _handler, _out = _root("test-access-layout", logging.Formatter("%(levelname)s %(message)s"))
    assert not AccessLog(root).direct


def test_lines_of_one_turn_are_written_together(access_logger: logging.Logger) -> None:
    """In the daemon's loop, the lines finished in one turn go out in one write at the
    end of that turn, never later; shutdown's flush() loses none."""
    root, handler, out = _root("test-access-turn", _LogFormatter(TEXT_FORMAT, brief=True))
    writes: list[str] = []
    stream_write = out.write

    def counting_write(text: str) -> int:
        writes.append(text)
        return stream_write(text)

    out.write = counting_write  # type: ignore[method-assign]
    writer = AccessLog(root)

    async def turns() -> None:
        for _ in range(3):
            writer.write(FIELDS)
        assert out.getvalue() == ""  # still this turn
        await asyncio.sleep(0)
        assert len(out.getvalue().splitlines()) == 3 and len(writes) == 1
        writer.write(FIELDS)  # the next turn's line is written at the end of that turn
        await asyncio.sleep(0)
        assert len(out.getvalue().splitlines()) == 4 and len(writes) == 2
        writer.write(FIELDS)

    asyncio.run(turns())  # its end may or may not run the last callback: flush() leaves nothing held
    writer.flush()
    assert len(out.getvalue().splitlines()) == 5 and len(writes) == 3
    assert all(' INFO mirror.access: 127.0.0.1 "GET ' in line for line in out.getvalue().splitlines())
