"""Strict parsing of request inputs (hf-protocol.md §0, threat-model T13/T16/B1-B3).

Repo ids, revisions and paths arrive already percent-decoded once by aiohttp's router
(`match_info`); anything that still looks encoded, any `.`/`..` segment, backslash, NUL
or control character is refused. Range parsing uses ASCII-only regexes: `int()` would
accept '1_0', '+5' or non-ASCII digits.
"""

from __future__ import annotations

import re

from aiohttp import web

from mirror.errors import BadRequest, RangeNotSatisfiable
from mirror.model import RepoKey

_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?", re.ASCII)
_REV = re.compile(r"[A-Za-z0-9._/-]{1,255}", re.ASCII)
_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}", re.ASCII)
_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", None: "model", "": "model"}


def repo_key(request: web.Request, type_segment: str | None = None) -> RepoKey:
    mi = request.match_info
    if type_segment is None:
        type_segment = mi.get("type") or mi.get("prefix")
    repo_type = _TYPES.get(type_segment)
    if repo_type is None:
        raise BadRequest(f"unknown repo type {type_segment!r}")
    ns, name = mi.get("ns"), mi.get("name", "")
    parts = [ns, name] if ns else [name]
    for part in parts:
        if not _PART.fullmatch(part) or "--" in part or ".." in part:
            raise BadRequest("Invalid repo id: use letters, digits, '-', '_' and '.', at most 96 characters per part")
    return RepoKey(repo_type, "/".join(parts))


def revision(text: str) -> str:
    if not _REV.fullmatch(text) or _ENCODED.search(text):
        raise BadRequest("Invalid revision")
    segments = text.split("/")
    if any(s in ("", ".", "..") for s in segments) or text.endswith(".lock"):
        raise BadRequest("Invalid revision")
    return text


def file_path(text: str) -> str:
    if not text or len(text) > 4096 or text.startswith("/"):
        raise BadRequest("Invalid file path")
    if any(ord(c) < 32 or c in "\\\x7f" for c in text):
        raise BadRequest("Invalid file path")
    lowered = text.lower()
    if any(code in lowered for code in ("%2e", "%2f", "%5c", "%00", "%25")):
        raise BadRequest("Invalid file path (double encoding)")
    if any(seg in ("", ".", "..") for seg in text.split("/")):
        raise BadRequest("Invalid file path")
    return text


def split_special_revision(rev: str, path: str) -> tuple[str, str]:
    """Accept unencoded `refs/pr/N/...` and `refs/convert/X/...` in resolve URLs."""
    if rev == "refs":
        m = re.match(r"(pr/[0-9]{1,9}|convert/[A-Za-z0-9._-]{1,64})/(.+)", path, re.ASCII)
        if m:
            return f"refs/{m.group(1)}", m.group(2)
    return rev, path


_RANGE = re.compile(r"bytes=(\d{0,30})-(\d{0,30})", re.ASCII)


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Parse a Range header for a file of `size` bytes -> (start, end_exclusive).

    None means "serve the whole file" (no header, another unit, a malformed or
    multi-range header: RFC 9110 lets a server ignore those). An unsatisfiable single
    range raises RangeNotSatisfiable (416 with `Content-Range: bytes */size`)."""
    if header is None:
        return None
    m = _RANGE.fullmatch(header.strip(" \t"))
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return None
    if first == "":
        n = int(last)
        if n == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - n), size
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(size)
    return start, end
