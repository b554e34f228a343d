"""The JSON log format (`[server] log_format = "json"`): one JSON object per line for
every log record, for collectors (Loki, Elasticsearch, CloudWatch) that parse fields
rather than text.

Each object has `time` (UTC, ISO 8601 with milliseconds), `level`, `logger` and
`message` (the rendered text line, the same as in the text format); an access record
(http/middleware.py) adds its fields as keys: `request_id`, `remote`, `method`, `path`,
`status`, `bytes`, `duration_ms`, `group`, `source`, `cache`. A record with a traceback
adds `exc` (the indented traceback text of mirror/logsafe.py). `json.dumps` escapes every
control character, so a value can never break its line; the escaping filter of
logsafe.py still runs first, so the message text is the same in both formats, and no
token reaches either (the access fields hold no header but the checked request id).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

# Keys an access record may not overwrite.
_BASE = ("time", "level", "logger", "message")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
        out: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "access", None)
        if isinstance(fields, dict):
            out.update((k, v) for k, v in fields.items() if k not in _BASE)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, ensure_ascii=True, default=str)


def install(root: logging.Logger | None = None) -> None:
    """Format every handler of the root logger (configured by the CLI) as JSON lines."""
    root = root or logging.getLogger()
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
