"""Request handlers of the fake Hub: the API routes, resolve, resolve-cache and the CDN.

Each handler parses `match_info`, asks `HubState` (which raises `HubError`) and renders JSON or
file bytes. Bodies stream in 1 MiB pieces so the `cut_after`, `bandwidth` and `corrupt` faults
apply per piece; bytes are counted as they are handed to the transport.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from .faults import FaultSwitches
from .state import MiB, Blob, Commit, HubError, HubState, hub_date

SECURITY = {"status": "safe", "avScan": {"virusFound": False, "virusNames": None},
            "pickleImportScan": {"highestSafetyLevel": "innocuous", "imports": []}}
HTML = b"<!DOCTYPE html><html><head><title>Hugging Face</title></head><body>Oops</body></html>"


def _token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    return auth[7:].strip() or None if auth.lower().startswith("bearer ") else None


def _repo_args(request: web.Request) -> tuple[str, str]:
    mi = request.match_info
    t = mi.get("t") or mi.get("rt")
    repo_id = f"{mi['ns']}/{mi['name']}" if "ns" in mi else mi["name"]
    return (t[:-1] if t else "model"), repo_id


def _split_rev(rev: str, path: str) -> tuple[str, str]:
    """Accept unencoded `refs/pr/N` and `refs/convert/x`, which arrive split across segments."""
    m = re.fullmatch(r"(pr/\d+|convert/[^/]+)(?:/(.*))?", path) if rev == "refs" else None
    return ("refs/" + m[1], m[2] or "") if m else (rev, path)


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """`bytes=a-b`, `bytes=a-`, `bytes=-n` -> [start, end); None to ignore; HubError 416."""
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", value.strip())
    if not m or m[1] == m[2] == "":
        return None
    if m[1] == "":
        start, end = max(0, size - int(m[2])), size
        if int(m[2]) == 0:
            start = size
    else:
        start, end = int(m[1]), (min(int(m[2]) + 1, size) if m[2] else size)
        if m[2] and int(m[2]) < start:
            return None
    if start >= size:
        raise HubError(416, None, "Requested Range Not Satisfiable", {"Content-Range": f"bytes */{size}"})
    return start, end


class Handlers(HubState, FaultSwitches):
    """The route handlers plus the switches that shape their answers; FakeHub adds the servers."""

    def __init__(self, *, lfs_threshold: int = 10 * MiB):
        HubState.__init__(self, lfs_threshold=lfs_threshold)
        FaultSwitches.__init__(self)
        self.url = self.cdn_url = ""
        self.xet = False
        self.small_file_resolve_cache = False
        self.tree_page_size, self.tree_expand_page_size, self.commits_page_size = 1000, 50, 50
        self.cdn_signature = "SIGXYZ"
        # Applied last to every resolve answer (302, 307, 200, HEAD): a value replaces the header,
        # None removes it. For bad-metadata tests: a wrong X-Linked-Size, no X-Repo-Commit, ...
        self.resolve_header_overrides: dict[str, str | None] = {}

    def _next_link(self, request: web.Request, key: str, value: int) -> dict[str, str]:
        query = [(k, v) for k, v in request.query.items() if k != key] + [(key, str(value))]
        return {"Link": f'<{self.url}{request.rel_url.raw_path}?{urlencode(query)}>; rel="next"'}

    def _lookup(self, request: web.Request, rev: str | None, content: bool = False) -> Commit:
        repo_type, repo_id = _repo_args(request)
        commit = self.lookup(repo_type, repo_id, _token(request), rev, content=content)[1]
        assert commit is not None
        return commit

    def _entry_json(self, commit: Commit, path: str, expand: bool) -> dict[str, Any]:
        e = commit.files.get(path)
        if e is None:
            d: dict[str, Any] = {"type": "directory", "oid": commit.dirs[path], "size": 0, "path": path}
        else:
            d = {"type": "file", "oid": e.oid, "size": e.blob.size, "path": path}
            if e.lfs:
                d["lfs"] = {"oid": e.blob.sha256, "size": e.blob.size, "pointerSize": e.pointer_size}
                if self.xet:
                    d["xetHash"] = e.xet_hash
        if expand:
            last = commit.last_commit_for(path)
            d["lastCommit"] = {"id": last.sha, "title": last.title, "date": hub_date(last.date)}
            if e is not None:
                d["securityFileStatus"] = SECURITY
        return d

    # -- API handlers ----------------------------------------------------------------------

    async def _h_harnesses(self, request: web.Request) -> web.Response:
        return web.json_response({"standardEnvVars": [], "harnesses": {}})

    async def _h_whoami(self, request: web.Request) -> web.Response:
        token = _token(request)
        user = self.tokens.get(token) if token else None
        if user is None:
            raise HubError(401, None, "Invalid credentials in Authorization header")
        return web.json_response({"type": "user", "id": "0" * 24, "name": user, "fullname": user, "orgs": [],
                                  "auth": {"type": "access_token",
                                           "accessToken": {"displayName": "fake", "role": "read"}}})

    async def _h_info(self, request: web.Request) -> web.Response:
        repo_type, repo_id = _repo_args(request)
        with self.lock:
            repo, commit = self.lookup(repo_type, repo_id, _token(request), request.match_info.get("rev", "main"))
            assert commit is not None
            blobs = request.query.get("blobs") == "true"
            siblings = []
            for path, e in sorted(commit.files.items()):
                s: dict[str, Any] = {"rfilename": path}
                if blobs:
                    s |= {"size": e.blob.size, "blobId": e.oid}
                    if e.lfs:
                        s["lfs"] = {"size": e.blob.size, "sha256": e.blob.sha256, "pointerSize": e.pointer_size}
                siblings.append(s)
            body = {"_id": commit.sha[:24], "id": repo_id, "author": repo_id.partition("/")[0] or None,
                    "sha": commit.sha, "lastModified": hub_date(commit.date), "createdAt": hub_date(repo.created_at),
                    "private": repo.private, "gated": repo.gated, "disabled": False, "downloads": 0, "likes": 0,
                    "tags": repo.tags, "pipeline_tag": repo.pipeline_tag, "library_name": repo.library_name,
                    "cardData": repo.card_data, "siblings": siblings,
                    "usedStorage": sum(e.blob.size for e in commit.files.values())}
            if repo_type == "model":
                body["modelId"] = repo_id
        return web.json_response(body)

    async def _h_tree(self, request: web.Request) -> web.Response:
        rev, path = _split_rev(request.match_info["rev"], request.match_info.get("path", ""))
        path, q = path.strip("/"), request.query
        recursive, expand = q.get("recursive") == "true", q.get("expand") == "true"
        with self.lock:
            commit = self._lookup(request, rev)
            if path in commit.files:
                names = [path]
            elif path in commit.dirs:
                prefix = path + "/" if path else ""
                names = sorted(p for p in (*commit.dirs, *commit.files) if p.startswith(prefix) and p != path
                               and (recursive or "/" not in p[len(prefix):]))
            else:
                raise HubError(404, "EntryNotFound", f"{path} does not exist on {rev}", {"X-Repo-Commit": commit.sha})
            size = int(q.get("limit") or (self.tree_expand_page_size if expand else self.tree_page_size))
            start = int(q.get("cursor") or 0)
            body = [self._entry_json(commit, p, expand) for p in names[start:start + size]]
        more = start + size < len(names)
        return web.json_response(body, headers=self._next_link(request, "cursor", start + size) if more else {})

    async def _h_paths_info(self, request: web.Request) -> web.Response:
        form = await request.post()
        paths, expand = [str(p).strip("/") for p in form.getall("paths", [])], form.get("expand") == "true"
        with self.lock:
            commit = self._lookup(request, request.match_info["rev"])
            body = [self._entry_json(commit, p, expand) for p in dict.fromkeys(paths)
                    if p in commit.files or (p and p in commit.dirs)]
        return web.json_response(body)

    async def _h_refs(self, request: web.Request) -> web.Response:
        repo_type, repo_id = _repo_args(request)
        with self.lock:
            refs = sorted(self.lookup(repo_type, repo_id, _token(request))[0].refs.items())

        def pick(prefix: str, strip: bool = True) -> list[dict[str, str]]:
            return [{"name": r[len(prefix):] if strip else r, "ref": r, "targetCommit": s}
                    for r, s in refs if r.startswith(prefix)]

        body = {"branches": pick("refs/heads/"), "converts": [], "tags": pick("refs/tags/")}
        if request.query.get("include_prs") in ("1", "true"):
            body["pullRequests"] = pick("refs/pr/", strip=False)
        return web.json_response(body)

    async def _h_commits(self, request: web.Request) -> web.Response:
        with self.lock:
            history = list(self._lookup(request, request.match_info["rev"]).history())
        size, page = int(request.query.get("limit") or self.commits_page_size), int(request.query.get("p") or 0)
        body = [{"id": c.sha, "title": c.title, "message": c.message, "authors": [{"user": c.author, "avatar": ""}],
                 "date": hub_date(c.date)} for c in history[page * size:(page + 1) * size]]
        more = (page + 1) * size < len(history)
        return web.json_response(body, headers=self._next_link(request, "p", page + 1) if more else {})

    async def _h_xet_token(self, request: web.Request) -> web.Response:
        self._lookup(request, request.match_info["rev"], content=True)
        if not self.xet:
            raise HubError(400, None, "Xet storage is not enabled on this fake hub")
        exp = str(int(time.time()) + 3600)
        headers = {"X-Xet-Cas-Url": f"{self.cdn_url}/xet-cas", "X-Xet-Access-Token": "xet_SENTINELTOKEN",
                   "X-Xet-Token-Expiration": exp}
        return web.json_response({"casUrl": headers["X-Xet-Cas-Url"], "accessToken": headers["X-Xet-Access-Token"],
                                  "exp": int(exp)}, headers=headers)

    # -- file handlers ---------------------------------------------------------------------

    async def _h_resolve(self, request: web.Request) -> web.StreamResponse:
        """`/{repo}/resolve/{rev}/{path}` and its same-origin `/api/resolve-cache/...` target."""
        mi = request.match_info
        cached = "sha" in mi
        rev, path = (mi["sha"], mi["path"]) if cached else _split_rev(mi["rev"], mi["path"])
        repo_type, repo_id = _repo_args(request)
        with self.lock:
            commit = self._lookup(request, rev, content=True)
            entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {rev}", {"X-Repo-Commit": commit.sha})
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{entry.etag}"'}
        if entry.lfs:
            sha = entry.blob.sha256
            headers |= {"X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(entry.blob.size),
                        "Location": f"{self.cdn_url}/{sha}?X-Amz-Signature={self.cdn_signature}"
                                    f"&Expires={int(time.time()) + 3600}"}
            if self.xet:
                token_url = f"{self.url}/api/{repo_type}s/{repo_id}/xet-read-token/{commit.sha}"
                headers |= {"X-Xet-Hash": entry.xet_hash, "X-Xet-Refresh-Route": token_url,
                            "Link": f'<{token_url}>; rel="xet-auth", '
                                    f'<{self.cdn_url}/xet-cas/reconstruction/{entry.xet_hash}>; '
                                    'rel="xet-reconstruction-info"'}
            return web.Response(status=302, headers=self._overridden(headers))
        if self.small_file_resolve_cache and not cached:
            location = f"/api/resolve-cache/{repo_type}s/{repo_id}/{commit.sha}/{quote(path)}"
            return web.Response(status=307, headers=self._overridden(headers | {"Location": location}))
        return await self._serve(request, entry.blob, self._overridden(headers), (path, entry.oid), oid=entry.oid)

    def _overridden(self, headers: dict[str, str]) -> dict[str, str]:
        for key, value in self.resolve_header_overrides.items():
            headers = {k: v for k, v in headers.items() if k.lower() != key.lower()}
            if value is not None:
                headers[key] = value
        return headers

    async def _h_cdn(self, request: web.Request) -> web.StreamResponse:
        sha, q = request.match_info["sha"], request.query
        if q.get("X-Amz-Signature") != self.cdn_signature or int(q.get("Expires") or 0) < time.time():
            raise HubError(403, None, "SignatureDoesNotMatch")
        blob = self.blob_by_sha256(sha)
        if blob is None:
            raise HubError(404, None, "NoSuchKey")
        return await self._serve(request, blob, {"ETag": f'"{sha}"'}, tuple(blob.paths))

    async def _serve(self, request: web.Request, blob: Blob, headers: dict[str, str],
                     keys: tuple[str, ...], oid: str | None = None) -> web.StreamResponse:
        """File bytes with Range, HEAD, and the body faults (corrupt, cut, bandwidth).

        `keys` name the file for `corrupt()`; bytes are counted under sha256 and the git `oid`.
        """
        mode = self._take_corrupt((*keys, blob.sha256)) if request.method == "GET" else None
        if mode == "html":
            return web.Response(body=HTML, content_type="text/html")
        size, status, (start, end) = blob.size, 200, (0, blob.size)
        headers |= {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if "Range" in request.headers and not self.ignore_range:
            parsed = _parse_range(request.headers["Range"], size)
            if parsed is not None:
                (start, end), status = parsed, 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        if request.method == "HEAD":
            return web.Response(status=status, headers=headers | {"Content-Length": str(end - start)})
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = end - start
        await resp.prepare(request)
        cut, ids = self._take_cut(end - start), (blob.sha256, oid) if oid else (blob.sha256,)
        step = MiB if not self.bandwidth else max(1024, min(MiB, int(self.bandwidth / 10)))
        pos, began = start, time.monotonic()
        try:
            while pos < end:
                n = min(step, end - pos) if cut is None else min(step, end - pos, start + cut - pos)
                if n <= 0:
                    await self._abort(request)
                    return resp
                data = blob.read(pos, n)
                if mode == "flip":
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                if self.bandwidth:  # pace so that bytes so far / time so far stays under the cap
                    await asyncio.sleep(max(0.0, began + (pos + n - start) / self.bandwidth - time.monotonic()))
                self._count_bytes(ids, n)  # at hand-over, so totals are final once the client has them
                await resp.write(data)
                pos += n
            await resp.write_eof()
        except ConnectionError:
            pass  # the client went away
        return resp

    async def _abort(self, request: web.Request) -> None:
        """Close the connection mid-body once the bytes already written have left."""
        transport = request.transport
        if transport is None:
            return
        deadline = time.monotonic() + 5
        while transport.get_write_buffer_size() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        transport.abort()
