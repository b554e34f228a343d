"""What this node answers to its peers (the peer API's domain side; the HTTP edge,
signatures included, is http/peer_api.py).

Only content-addressed objects and facts a peer needs to find them: whether a file
identity is stored or being filled, its signed manifest, chunk frames as stored, the
bytes of a running fill (so one node fetches a file upstream for the site), the
changelog and revision records for `mirror sync --from`, a ref record for a peer
whose upstream is down, and pages of this node's releases and aliases for the nodes
that follow it (`[channels] authority`). Gated and private content is served to peers like any other:
they are trusted nodes, and each applies the access check to its own clients
(threat-model P6c: clients cannot reach this API at all).
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Protocol

from mirror.caller import Caller
from mirror.catalog.changes import ChangeCatalog
from mirror.catalog.channel_copy import ChannelCopy
from mirror.catalog.repos import RepoCatalog
from mirror.channels.page import page_json
from mirror.errors import BadRequest, ChunkMissing, CorruptChunk, EntryNotFound, MirrorError, RevisionNotFound
from mirror.manifest import IDENTITY_RE, Manifest
from mirror.model import FileEntry, RepoKey
from mirror.resolve.fetcher import Fetcher
from mirror.resolve.files import Files, FillSource, Source, StoreSource
from mirror.resolve.fill import FillTarget
from mirror.resolve.direct import DirectSource
from mirror.store.chunkstore import ChunkStore
from mirror.peers import wire

_HEX40 = wire.COMMIT_RE
_HEX64 = wire.CHUNK_RE


class Conflict(MirrorError):
    status = 409
    error_code = "PeerFollowing"


class Following(Protocol):
    def is_following(self, identity: str) -> bool: ...

    def is_asking(self, identity: str) -> bool: ...


class PeerService:
    def __init__(self, files: Files, fetcher: Fetcher, store: ChunkStore, repos: RepoCatalog, changes: ChangeCatalog,
                 following: Following, public_key: str, channel_copy: ChannelCopy, follows: str = "") -> None:
        self.files = files
        self.channel_copy = channel_copy
        self.follows = follows  # this node's own `[channels] authority` ("" when it decides itself)
        self.fetcher = fetcher
        self.store = store
        self.repos = repos
        self.changes = changes
        self.following = following
        self.public_key = public_key
        self.url = ""

    async def hello(self, now: float) -> dict[str, Any]:
        return {"protocol": wire.VERSION, "public_key": self.public_key, "url": self.url,
                "serial": await self.changes.latest(), "time": int(now)}

    async def have(self, body: Any) -> dict[str, Any]:
        identities = body.get("identities", []) if isinstance(body, dict) else None
        chunks = body.get("chunks", []) if isinstance(body, dict) else None
        if not isinstance(identities, list) or not isinstance(chunks, list) or len(identities) + len(chunks) > wire.MAX_HAVE:
            raise BadRequest(f"have: at most {wire.MAX_HAVE} identities and chunks, as lists")
        out: dict[str, Any] = {}
        for identity in identities:
            if not isinstance(identity, str) or not IDENTITY_RE.fullmatch(identity):
                raise BadRequest("have: malformed identity")
            if await self.files.stored_manifest(identity) is not None:
                out[identity] = {"state": "stored"}
                continue
            # A fill still fed by the peers is not reported: following it would follow a
            # follower (or a node that is about to follow us).
            fill = self.fetcher.running(identity)
            if fill is not None and not self.following.is_asking(identity):
                out[identity] = {"state": "filling", "written": fill.written}
        ids = [c for c in chunks if isinstance(c, str) and _HEX64.fullmatch(c)]
        if len(ids) != len(chunks):
            raise BadRequest("have: malformed chunk id")
        loop = asyncio.get_running_loop()
        held = await loop.run_in_executor(None, lambda: [c for c in ids if self.store.has(c)])
        return {"identities": out, "chunks": held}

    async def manifest(self, identity: str) -> Manifest:
        if not IDENTITY_RE.fullmatch(identity):
            raise BadRequest("malformed identity")
        man = await self.files.stored_manifest(identity)
        if man is None:
            raise EntryNotFound(f"{identity} is not stored here")
        return man

    def chunk_ids(self, body: Any) -> list[str]:
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not 0 < len(ids) <= wire.MAX_BATCH or not all(isinstance(c, str) and _HEX64.fullmatch(c) for c in ids):
            raise BadRequest(f"chunks: 1..{wire.MAX_BATCH} chunk ids")
        return ids

    async def frames(self, ids: list[str]) -> AsyncIterator[tuple[str, bytes | None]]:
        """Stored frames, read ahead one batch at a time off the loop."""
        loop = asyncio.get_running_loop()

        def read(cid: str) -> bytes | None:
            try:
                return self.store.read_frame(cid)
            except (ChunkMissing, CorruptChunk):
                return None

        for cid in ids:
            yield cid, await loop.run_in_executor(None, read, cid)

    async def fill(self, body: Any, peer_key: str) -> tuple[Source, int, int]:
        """A source of the file a peer asks this node to fetch for the site, and the
        range [start, size) to send: the stored copy, or this node's fill of it."""
        target, start = _target(body)
        man = await self.files.stored_manifest(target.identity)
        if man is not None:
            return StoreSource(man, self.files.reader, self.files.forget), start, target.size
        if self.following.is_following(target.identity):
            raise Conflict("this node is following a peer for that file itself; fetch it upstream")
        fill = self.fetcher.start(target, Caller(peer=peer_key))
        await fill.wait_started(8.0)
        if fill.error is not None and not fill.written:
            raise fill.error
        return FillSource(fill, lambda: DirectSource([], target, Caller(peer=peer_key))), start, target.size

    async def changes_since(self, since: int, limit: int) -> dict[str, Any]:
        serial, changes, more = await self.changes.since(since, max(1, min(limit, 5000)))
        return {"serial": serial, "changes": changes, "more": more}

    async def channels(self, after: int, release_after: int) -> dict[str, Any]:
        """A page of this node's releases, aliases and alias history (wire.py)."""
        if after < 0 or release_after < 0:
            raise BadRequest("channels: after and releases are counts")
        return page_json(await self.channel_copy.export(after, release_after), self.follows)

    async def revision(self, repo_type: str, repo_id: str, commit: str) -> dict[str, Any]:
        key = _key(repo_type, repo_id)
        if not _HEX40.fullmatch(commit):
            raise BadRequest("revision: commit must be 40 hex")
        row = await self.repos.get_repo(key)
        listing = await self.repos.get_listing(row.id, commit) if row else None
        if row is None or listing is None:
            raise RevisionNotFound(f"{key}@{commit[:12]} is not listed here")
        info = await self.repos.commit_info(row.id, commit)
        return {
            "repo": {"repo_type": key.repo_type, "repo_id": key.repo_id, "private": row.private, "gated": row.gated},
            "commit": commit,
            "info": info,
            "files": [_entry(e) for e in listing.values()],
        }

    async def ref(self, repo_type: str, repo_id: str, revision: str) -> dict[str, Any]:
        key = _key(repo_type, repo_id)
        row = await self.repos.get_repo(key)
        ref = await self.repos.get_ref(row.id, revision) if row else None
        if row is None or ref is None:
            raise RevisionNotFound(f"{key}@{revision} is not known here")
        return {"repo_type": key.repo_type, "repo_id": key.repo_id, "revision": revision, "commit": ref[0], "checked_at": ref[1]}


def _key(repo_type: str, repo_id: str) -> RepoKey:
    try:
        return wire.repo_key(repo_type, repo_id)
    except ValueError:
        raise BadRequest("malformed repo") from None


def _entry(e: FileEntry) -> dict[str, Any]:
    return {"path": e.path, "kind": e.kind, "oid": e.oid, "size": e.size, "lfs_sha256": e.lfs_sha256, "lfs_pointer": e.lfs_pointer}


def entry_of(d: Any) -> FileEntry:
    """A listing entry from a peer's revision record, checked field by field."""
    if not isinstance(d, dict):
        raise ValueError("entry is not an object")
    path, kind, oid, size = d.get("path"), d.get("kind"), d.get("oid"), d.get("size")
    lfs, pointer = d.get("lfs_sha256"), d.get("lfs_pointer")
    if not isinstance(path, str) or not path or len(path) > 4096 or any(s in ("", ".", "..") for s in path.split("/")):
        raise ValueError("bad path")
    if any(ord(c) < 32 or c in "\\\x7f" for c in path):
        raise ValueError("bad path")
    if kind not in ("file", "directory") or not isinstance(oid, str) or not isinstance(size, int) or size < 0:
        raise ValueError("bad entry")
    if kind == "file" and not _HEX40.fullmatch(oid):
        raise ValueError("bad oid")
    if lfs is not None and (not isinstance(lfs, str) or not _HEX64.fullmatch(lfs)):
        raise ValueError("bad lfs sha256")
    if pointer is not None and not isinstance(pointer, int):
        raise ValueError("bad pointer size")
    return FileEntry(path, kind, oid, size, lfs, pointer)


def _target(body: Any) -> tuple[FillTarget, int]:
    if not isinstance(body, dict):
        raise BadRequest("fill: body must be an object")
    key = _key(str(body.get("repo_type")), str(body.get("repo_id")))
    commit, start = body.get("commit"), body.get("start", 0)
    if not isinstance(commit, str) or not _HEX40.fullmatch(commit):
        raise BadRequest("fill: commit must be 40 hex")
    try:
        entry = entry_of({**body, "kind": "file"})
    except ValueError as exc:
        raise BadRequest(f"fill: {exc}") from None
    if not isinstance(start, int) or not 0 <= start <= entry.size:
        raise BadRequest("fill: start out of range")
    return FillTarget(key, commit, entry), start


def target_body(target: FillTarget) -> dict[str, Any]:
    """What `PeerClient.follow` sends for a target (the inverse of `_target`)."""
    return {"repo_type": target.key.repo_type, "repo_id": target.key.repo_id, "commit": target.commit, **_entry(target.entry)}
