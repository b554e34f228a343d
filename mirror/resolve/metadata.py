"""Repo metadata: revision -> commit, repo info per commit, and the commit's file listing.

Rules (design.md §3):
- a 40-hex commit is immutable: its info and listing are cached forever;
- an alias or a release name (channels/) is this mirror's own: it names a commit with no
  upstream request (a canary alias names one of two, by the caller's sticky key), and it
  wins over an upstream branch or tag of the same name (creating one is refused unless
  forced);
- a branch, tag or short sha is re-checked upstream once its answer is older than
  `cache.ref_ttl`; within the TTL it is answered from the catalog;
- when upstream is unreachable or answers 5xx, the last known answer is used and the
  result is marked stale (`X-Mirror-Stale: 1` at the edge); with no answer of its own,
  a peer's fresh, signed record is taken (peers/records.py), stale too;
- every answer taken from the cache passes `Access.check_metadata` (a private repo's
  metadata is restricted; a gated repo's is public, as on the Hub: only its file bytes
  are gated, by `Access.check` in resolve/files.py);
- a repo gets a catalog row only once upstream answered for it, so requests for repo
  ids that do not exist leave nothing behind;
- with `[policy] min_upstream_age`, a repo none of whose commits this mirror has taken
  yet is taken only at a commit at least that old (upstream's `lastModified` of the
  revision): a brand-new upload is refused (403 `CommitTooNew`) until it has aged, and
  nothing is recorded, so a retry is judged the same way. Repos already taken accept
  new commits as before.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from mirror.caller import Caller
from mirror.catalog.repos import RepoCatalog
from mirror.clock import Clock
from mirror.config import CacheConfig
from mirror.errors import CommitTooNew, LocalOnly, StorageError, UpstreamError
from mirror.model import FileEntry, RepoKey
from mirror.resolve.access import Access
from mirror.singleflight import SingleFlight
from mirror.upstream import urls
from mirror.upstream.client import HubClient

log = logging.getLogger("mirror.resolve")

FULL_SHA = re.compile(r"[0-9a-f]{40}", re.ASCII)
# The key under which the default branch (repo info without a revision) is cached.
DEFAULT_REF = ""
_MAX_TREE_PAGES = 10_000


class Fallback(Protocol):
    """Where answers come from when upstream is down and this node has none (peers)."""

    async def resolve(self, key: RepoKey, revision: str) -> tuple[int, str, dict[str, Any]] | None: ...

    async def listing(self, key: RepoKey, commit: str) -> bool: ...


class LocalNames(Protocol):
    """Revision names this mirror owns (channels/table.py): aliases and releases."""

    async def pick(self, repo: int, name: str, client_key: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class Resolved:
    key: RepoKey
    repo: int
    commit: str
    stale: bool = False
    via: str = ""  # "alias prod; canary", "release v1.2.0": a local name was resolved


class Metadata:
    def __init__(self, hub: HubClient, repos: RepoCatalog, clock: Clock, config: CacheConfig, access: Access,
                 fallback: Fallback | None = None, min_age: float = 0.0, local: LocalNames | None = None) -> None:
        """`min_age`: seconds an upstream commit must have aged before a repo never
        seen before is taken (0: any). `local`: aliases and releases, looked up before
        upstream's branches and tags, never asked upstream."""
        self.hub = hub
        self.local = local
        self.min_age = min_age
        self.fallback = fallback
        self.repos = repos
        self.clock = clock
        self.config = config
        self.access = access
        # Identical concurrent upstream look-ups share one task.
        self._flights: SingleFlight[Any, Any] = SingleFlight()

    # --- revision -> commit, with repo info -----------------------------------------------

    async def resolve(
        self, key: RepoKey, revision: str | None, caller: Caller, *, fresh: bool = False
    ) -> tuple[Resolved, dict[str, Any]]:
        """Return the commit a revision names now, and the repo info at that commit.
        `fresh` re-asks upstream for a branch or tag whatever the TTL (sync wants the
        current commit); the stale fallback still applies when upstream is down."""
        rev = revision or DEFAULT_REF
        repo = await self.repos.repo_id(key, create=False)
        if repo is None:  # never confirmed by upstream: nothing cached to fall back on
            try:
                repo, info = await self._fetch_info(key, rev, caller)
            except UpstreamError:
                found = await self._from_fallback(key, rev, caller)
                if found is None:
                    raise
                return found
            return Resolved(key, repo, str(info["sha"])), info
        if FULL_SHA.fullmatch(rev):
            return await self._at_commit(key, repo, rev, caller)
        if self.local is not None and rev != DEFAULT_REF:
            pick = await self.local.pick(repo, rev, caller.client_key)
            if pick is not None:
                return await self._at_commit(key, repo, pick.commit, caller, via=pick.describe())
        ref = await self.repos.get_ref(repo, rev)
        if ref is not None and not fresh and self.clock.now() - ref[1] < self.config.ref_ttl:
            info = await self.repos.commit_info(repo, ref[0])
            if info is not None:
                await self.access.check_metadata(key, repo, ref[0], caller)
                return Resolved(key, repo, ref[0]), info
        try:
            _repo, info = await self._fetch_info(key, rev, caller)
        except UpstreamError:
            # Unreachable or 5xx: serve the last known answer, marked stale. The default
            # branch was most likely last seen by name.
            if ref is None and rev == DEFAULT_REF:
                ref = await self.repos.get_ref(repo, "main")
            info = await self.repos.commit_info(repo, ref[0]) if ref is not None else None
            if ref is None or info is None:
                found = await self._from_fallback(key, rev, caller)
                if found is None:
                    raise
                return found
            await self.access.check_metadata(key, repo, ref[0], caller)
            log.warning("upstream unavailable; serving stale %s@%s -> %s", key, rev or "<default>", ref[0][:12])
            return Resolved(key, repo, ref[0], stale=True), info
        return Resolved(key, repo, str(info["sha"])), info

    async def own_name(self, key: RepoKey, rev: str, caller: Caller) -> str | None:
        """The commit an alias or release name picks for this caller (None: not one)."""
        if self.local is None or FULL_SHA.fullmatch(rev):
            return None
        repo = await self.repos.repo_id(key, create=False)
        pick = await self.local.pick(repo, rev, caller.client_key) if repo is not None else None
        return str(pick.commit) if pick is not None else None

    async def _at_commit(self, key: RepoKey, repo: int, sha: str, caller: Caller, via: str = "") -> tuple[Resolved, dict[str, Any]]:
        """A commit's info: cached forever once complete, else asked upstream."""
        info = await self.repos.commit_info(repo, sha)
        if info is not None and not _partial(info):
            await self.access.check_metadata(key, repo, sha, caller)
            return Resolved(key, repo, sha, via=via), info
        try:
            _repo, fetched = await self._fetch_info(key, sha, caller)
        except UpstreamError:
            if info is None:
                found = await self._from_fallback(key, sha, caller)
                if found is None:
                    raise
                return found
            # Only a partial import of this commit (admin/hfcache.py) is known: serve
            # what it holds while upstream cannot give the whole commit.
            await self.access.check_metadata(key, repo, sha, caller)
            return Resolved(key, repo, sha, stale=True, via=via), info
        return Resolved(key, repo, sha, via=via), fetched

    async def _from_fallback(self, key: RepoKey, rev: str, caller: Caller) -> tuple[Resolved, dict[str, Any]] | None:
        if self.fallback is None:
            return None
        found = await self.fallback.resolve(key, rev)
        if found is None:
            return None
        repo, commit, info = found
        await self.access.check_metadata(key, repo, commit, caller)
        return Resolved(key, repo, commit, stale=True), info

    async def _fetch_info(self, key: RepoKey, rev: str, caller: Caller) -> tuple[int, dict[str, Any]]:
        """Repo info at `rev` from upstream, recorded with the repo's visibility (the
        repo's row is created here, once upstream has confirmed the repo)."""

        async def fetch() -> tuple[int, dict[str, Any]]:
            if caller.offline:
                raise LocalOnly(f"{key} is local-only: this mirror does not ask upstream for it")
            reply = await self.hub.get_json(urls.info(key, rev or None), caller.hub_token, {"blobs": "true"})
            info = reply.data
            if not isinstance(info, dict) or not isinstance(info.get("sha"), str) or not FULL_SHA.fullmatch(info["sha"]):
                raise UpstreamError("upstream repo info has no commit sha")
            info = strip_xet(info)
            if self.min_age and not await self._seen(key):
                self._check_age(key, info)
            private = bool(info.get("private"))
            gated = info.get("gated") or ""
            try:
                repo = await self.repos.set_repo_info(key, private=private, gated=str(gated) if gated else "", info=None)
                await self.repos.set_commit_info(repo, info["sha"], info)
                if not FULL_SHA.fullmatch(rev):
                    await self.repos.set_ref(repo, rev, info["sha"])
            except StorageError as exc:
                # A full disk: the answer is good, it just cannot be remembered (a repo
                # never seen before cannot be served without its row).
                known = await self.repos.repo_id(key, create=False)
                if known is None:
                    raise
                repo = known
                log.warning("not caching repo info of %s: %s", key, exc.message)
            if private:
                # Upstream just showed this private repo to this token (and, unless it
                # is also gated, its files come with it).
                self.access.remember_metadata(key, caller)
                if not gated:
                    self.access.remember(key, caller)
            return repo, info

        return await self._flights.share(("info", key, rev, caller.fingerprint), fetch)  # type: ignore[no-any-return]

    async def _seen(self, key: RepoKey) -> bool:
        """Whether this mirror already took a commit of the repo. A row alone does not
        count: a pass-through call (refs, commits) records a repo's visibility without
        taking any of its commits."""
        repo = await self.repos.repo_id(key, create=False)
        return repo is not None and bool(await self.repos.find_commit(repo, ""))  # any sha: at most 2 rows

    def _check_age(self, key: RepoKey, info: dict[str, Any]) -> None:
        """Refuse a commit younger than `min_age` (or of unknown age) for a new repo."""
        policy = f"[policy] min_upstream_age = {_human(self.min_age)} refuses commits younger than that for repos not seen before"
        try:
            when = datetime.fromisoformat(str(info.get("lastModified"))).timestamp()
        except ValueError:
            raise CommitTooNew(f"{key}@{info['sha'][:12]}: upstream gave no commit date; {policy}") from None
        age = self.clock.now() - when
        if age < self.min_age:
            raise CommitTooNew(f"{key}@{info['sha'][:12]} was committed upstream {_human(max(age, 0))} ago; {policy}")

    # --- listing ------------------------------------------------------------------------------

    async def listing(self, res: Resolved, caller: Caller) -> dict[str, FileEntry]:
        """The complete recursive file listing of a commit (cached forever)."""
        cached = await self.repos.get_listing(res.repo, res.commit)
        if cached is not None:
            return cached

        async def fetch() -> dict[str, FileEntry]:
            try:
                entries = await self._fetch_tree(res.key, res.commit, caller)
            except UpstreamError:
                if self.fallback is None or not await self.fallback.listing(res.key, res.commit):
                    raise
                listed = await self.repos.get_listing(res.repo, res.commit)
                if listed is None:
                    raise
                return listed
            try:
                await self.repos.put_listing(res.repo, res.commit, entries)
            except StorageError as exc:
                log.warning("not caching the listing of %s@%s: %s", res.key, res.commit[:12], exc.message)
            return {e.path: e for e in entries}

        return await self._flights.share(("tree", res.key, res.commit, caller.fingerprint), fetch)  # type: ignore[no-any-return]

    async def _fetch_tree(self, key: RepoKey, commit: str, caller: Caller) -> list[FileEntry]:
        if caller.offline:
            raise LocalOnly(f"{key} is local-only: this mirror does not ask upstream for it")
        reply = await self.hub.get_json(urls.tree(key, commit), caller.hub_token, {"recursive": "true", "expand": "false"})
        entries: list[FileEntry] = []
        pages = 0
        while True:
            if not isinstance(reply.data, list):
                raise UpstreamError("upstream tree listing is not a list")
            entries.extend(parse_entry(e) for e in reply.data)
            pages += 1
            if not reply.link_next or pages >= _MAX_TREE_PAGES:
                break
            reply = await self.hub.get_json_url(reply.link_next, caller.hub_token)
        return with_directories(entries)

    async def entry(self, res: Resolved, path: str, caller: Caller) -> FileEntry | None:
        return (await self.listing(res, caller)).get(path)


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:.0f}s"


def _partial(info: dict[str, Any]) -> bool:
    """True for the info of a commit imported from a partial huggingface_hub snapshot."""
    mark = info.get("mirrorImport")
    return isinstance(mark, dict) and mark.get("complete") is False


def with_directories(entries: list[FileEntry]) -> list[FileEntry]:
    """The listing sorted by path, with an entry for every directory. Upstream recursive
    listings include directories; any that are absent are synthesised once, here, so
    every later tree or paths-info answer is a plain look-up."""
    have = {e.path for e in entries}
    out = list(entries)
    for e in entries:
        parts = e.path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in have:
                have.add(d)
                out.append(FileEntry(d, "directory", "0" * 40, 0))
    return sorted(out, key=lambda e: e.path)


def parse_entry(raw: Any) -> FileEntry:
    if not isinstance(raw, dict) or not isinstance(raw.get("path"), str):
        raise UpstreamError("malformed tree entry from upstream")
    kind = raw.get("type")
    if kind == "directory":
        return FileEntry(raw["path"], "directory", str(raw.get("oid", "")), 0)
    if kind != "file":
        raise UpstreamError("malformed tree entry type from upstream")
    lfs = raw.get("lfs") if isinstance(raw.get("lfs"), dict) else None
    sha256 = str(lfs.get("oid") or lfs.get("sha256") or "") if lfs else ""
    if sha256 and not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise UpstreamError("malformed LFS oid from upstream")
    oid = str(raw.get("oid", ""))
    if not re.fullmatch(r"[0-9a-f]{40}", oid):
        raise UpstreamError("malformed git oid from upstream")
    size = raw.get("size")
    if not isinstance(size, int) or size < 0:
        raise UpstreamError("malformed file size from upstream")
    pointer = lfs.get("pointerSize") if lfs else None
    return FileEntry(raw["path"], "file", oid, size, sha256 or None, int(pointer) if isinstance(pointer, int) else None)


def strip_xet(obj: Any) -> Any:
    """Remove every `xetHash` key (and other xet hints) from a JSON value."""
    if isinstance(obj, dict):
        return {k: strip_xet(v) for k, v in obj.items() if k not in ("xetHash", "xet_hash", "xetAuth")}
    if isinstance(obj, list):
        return [strip_xet(v) for v in obj]
    return obj
