"""Hub API handlers (hf-protocol.md §1): repo info, tree, paths-info, refs, commits,
whoami, agent-harnesses and the refused xet token route. Each parses, calls the
Resolver once, renders."""

from __future__ import annotations

import base64
import logging
import re
from typing import Any

from aiohttp import web

from mirror.errors import BadRequest, EntryNotFound, XetNotSupported
from mirror.http import parse
from mirror.http.caller import caller_of
from mirror.http.context import METADATA, PASSTHROUGH, mirror_base, resolved_headers, stale_headers
from mirror.model import FileEntry
from mirror.upstream import urls

log = logging.getLogger("mirror.http")

PAGE = 1000
PAGE_EXPAND = 50


async def agent_harnesses(request: web.Request) -> web.Response:
    return web.json_response({"standardEnvVars": [], "harnesses": {}})


async def xet_read_token(request: web.Request) -> web.Response:
    """Refused, with the way out. The mirror never advertises Xet (it strips every Xet
    hint), so a client only gets here when its own cache holds a tree listing written
    while it talked to huggingface.co (`trees/<commit>.json` with `xet_hash` entries):
    huggingface_hub then skips the HEAD, asks for a Xet token and has no HTTP fallback.
    Serving Xet would mean speaking the CAS protocol; telling the user which cache
    entry to drop (or to turn Xet off) is what works with every client version."""
    key = parse.repo_key(request)
    rev = parse.revision(request.match_info["rev"])
    folder = f"{key.repo_type}s--{key.repo_id.replace('/', '--')}"
    listing = f"{folder}/trees/{rev}.json" if re.fullmatch(r"[0-9a-f]{40}", rev) else f"{folder}/trees/"
    log.warning("refused a Xet token for %s: the client's cache holds a Xet tree listing (%s)", key, listing)
    raise XetNotSupported(
        f"this mirror serves files over HTTP only, not Xet. Your Hugging Face cache holds a Xet file listing for "
        f"{key} ({listing}, written while talking to huggingface.co), so the client asked for a Xet token. "
        f"Set HF_HUB_DISABLE_XET=1, or delete {folder}/trees/ in your cache (.cache/huggingface/trees/ "
        f"in a local_dir download), and retry."
    )


async def whoami(request: web.Request) -> web.Response:
    data, _link, _stale = await request.app[PASSTHROUGH].get(None, "/api/whoami-v2", [], caller_of(request))
    return web.json_response(data)


async def repo_info(request: web.Request) -> web.Response:
    key = parse.repo_key(request)
    rev = request.match_info.get("rev")
    if rev is not None:
        rev = parse.revision(rev)
    res, info = await request.app[METADATA].resolve(key, rev, caller_of(request))
    return web.json_response(info, headers=resolved_headers(res))


def _select(listing: dict[str, FileEntry], path: str, recursive: bool) -> list[FileEntry]:
    if path:
        entry = listing.get(path)
        if entry is None:
            raise EntryNotFound(f"{path} does not exist")
        if entry.kind == "file":
            return [entry]
    prefix = f"{path}/" if path else ""
    out = []
    for p, e in listing.items():
        if not p.startswith(prefix) or p == path:
            continue
        if recursive or "/" not in p[len(prefix):]:
            out.append(e)
    return out


async def tree(request: web.Request) -> web.Response:
    key = parse.repo_key(request)
    rev = parse.revision(request.match_info["rev"])
    raw_path = request.match_info.get("path", "")
    path = parse.file_path(raw_path.strip("/")) if raw_path.strip("/") else ""
    recursive = request.query.get("recursive", "false").lower() == "true"
    expand = request.query.get("expand", "false").lower() == "true"
    caller = caller_of(request)
    metadata = request.app[METADATA]
    res, _info = await metadata.resolve(key, rev, caller)
    if expand and not res.stale:
        # lastCommit/securityFileStatus exist only upstream: pass the page through.
        query = [(k, v) for k, v in request.query.items() if k in ("recursive", "expand", "cursor", "limit")]
        data, link, stale = await request.app[PASSTHROUGH].get(key, urls.tree(key, res.commit, path), query, caller)
        headers = {**resolved_headers(res), **stale_headers(stale)}
        if link:
            # Upstream paths and the mirror's share one shape: only the origin changes.
            headers["Link"] = f'<{mirror_base(request)}{link}>; rel="next"'
        return web.json_response(data, headers=headers)
    listing = await metadata.listing(res, caller)
    try:
        entries = _select(listing, path, recursive)
    except EntryNotFound as exc:
        raise EntryNotFound(f"{exc.message} in {key} at {res.commit[:12]}", **{"X-Repo-Commit": res.commit}) from None
    page = PAGE_EXPAND if expand else PAGE
    limit_q = request.query.get("limit", "")
    if limit_q.isascii() and limit_q.isdigit() and 0 < int(limit_q) < page:
        page = int(limit_q)
    start = _decode_cursor(request.query.get("cursor"))
    chunk = entries[start:start + page]
    headers = resolved_headers(res)
    if start + page < len(entries):
        q = request.rel_url.query.copy()
        q["cursor"] = _encode_cursor(start + page)
        headers["Link"] = f'<{mirror_base(request)}{request.rel_url.with_query(q)}>; rel="next"'
    return web.json_response([e.to_hub() for e in chunk], headers=headers)


def _encode_cursor(n: int) -> str:
    return base64.urlsafe_b64encode(f"mm:{n}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("Invalid cursor") from None
    m = re.fullmatch(r"mm:(\d{1,9})", text, re.ASCII)
    if not m:
        raise BadRequest("Invalid cursor")
    return int(m.group(1))


async def paths_info(request: web.Request) -> web.Response:
    key = parse.repo_key(request)
    rev = parse.revision(request.match_info["rev"])
    if request.content_length is not None and request.content_length > 1 << 20:
        raise BadRequest("paths-info body too large")
    form = await request.post()
    wanted = [parse.file_path(str(p).strip("/")) for p in form.getall("paths", []) if str(p).strip("/")]
    if len(wanted) > 10_000:
        raise BadRequest("too many paths")
    caller = caller_of(request)
    metadata = request.app[METADATA]
    res, _info = await metadata.resolve(key, rev, caller)
    entries = await metadata.listing(res, caller)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for p in wanted:
        e = entries.get(p)
        if e is not None and p not in seen:
            seen.add(p)
            out.append(e.to_hub())
    return web.json_response(out, headers=resolved_headers(res))


async def refs(request: web.Request) -> web.Response:
    key = parse.repo_key(request)
    query = [(k, v) for k, v in request.query.items() if k == "include_prs"]
    data, _link, stale = await request.app[PASSTHROUGH].get(key, urls.api(key, "refs"), query, caller_of(request))
    return web.json_response(data, headers=stale_headers(stale))


async def commits(request: web.Request) -> web.Response:
    key = parse.repo_key(request)
    rev = parse.revision(request.match_info["rev"])
    caller = caller_of(request)
    # Upstream does not know this mirror's aliases and releases: ask for their commit.
    rev = await request.app[METADATA].own_name(key, rev, caller) or rev
    query = [(k, v) for k, v in request.query.items() if k in ("p", "limit", "expand", "cursor")]
    path = urls.api(key, "commits", urls.quote_rev(rev))
    data, link, stale = await request.app[PASSTHROUGH].get(key, path, query, caller)
    headers = stale_headers(stale)
    if link:
        headers["Link"] = f'<{mirror_base(request)}{link}>; rel="next"'
    return web.json_response(data, headers=headers)
