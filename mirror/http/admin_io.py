"""What the admin handlers (http/admin_*.py) share: the node, the JSON body and its
fields, checked strictly (bad input is a 400 in the Hub's error format, never a 500),
and the audit record every state-changing call writes under the caller's name.

CLI-shaped refusals (`UsageError`, `ConfigError`: a bad name, role, duration, key)
become 400 here; a lifecycle lock held by another process becomes 409.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Iterator

from aiohttp import web

from mirror.errors import BadRequest, ConfigError, LockBusy, MirrorError, UsageError
from mirror.http.caller import caller_of
from mirror.http.context import NODE
from mirror.model import REPO_TYPES, RepoKey
from mirror.node import Node


class Busy(MirrorError):
    """Another process (a CLI command, the daemon's own round) holds the lock."""

    status = 409
    error_code = "Busy"


def node(request: web.Request) -> Node:
    return request.app[NODE]


def audit(request: web.Request, action: str, target: str, outcome: str = "ok", **detail: Any) -> str:
    """Record a change under the caller's audit name, and return that name."""
    actor = caller_of(request).actor
    node(request).audit.record(actor, action, target, outcome, **detail)
    return actor


@contextlib.contextmanager
def as_http() -> Iterator[None]:
    """Refusals worded for the CLI, answered as HTTP client errors."""
    try:
        yield
    except (UsageError, ConfigError) as exc:
        raise BadRequest(exc.message) from None
    except LockBusy as exc:
        raise Busy(exc.message) from None


async def body(request: web.Request) -> dict[str, Any]:
    """The JSON object sent (an empty body is `{}`)."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def text(data: dict[str, Any], name: str, *, default: str | None = None, limit: int = 300) -> str:
    value = data.get(name, default)
    if value is None:
        raise BadRequest(f"{name!r} is required")
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        raise BadRequest(f"{name!r} must be a string of at most {limit} printable characters")
    return value


def flag(data: dict[str, Any], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{name!r} must be true or false")
    return value


def strings(data: dict[str, Any], name: str) -> list[str]:
    value = data.get(name, [])
    if not isinstance(value, list) or len(value) > 100 or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{name!r} must be a list of strings")
    return value


def repo_spec(data: dict[str, Any]) -> tuple[RepoKey, str | None]:
    """`repo`, `revision` (optional) and `repo_type` (default model) of a body."""
    from mirror.admin.revisions import parse_spec

    repo, repo_type = text(data, "repo"), text(data, "repo_type", default="model")
    if repo_type not in REPO_TYPES:
        raise BadRequest(f"'repo_type' must be one of {', '.join(REPO_TYPES)}")
    rev = data.get("revision")
    if rev is not None:
        rev = text(data, "revision")
    if "@" in repo:
        raise BadRequest("'repo' is org/name; the revision goes in 'revision'")
    with as_http():
        key, _ = parse_spec(repo, repo_type)
    return key, rev or None


def json_ok(payload: Any) -> web.Response:
    return web.json_response(payload)
