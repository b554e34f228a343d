"""Catalog facts about repositories: repos, refs, listed commits and their files.

    repos(id PK, repo_type, repo_id, private, gated, info_json, info_at)
    refs(repo, name, commit_sha, checked_at)
    commits(repo, sha, info_json, listed_at, created_at)
    files(repo, commit_sha, path, kind, oid, size, lfs_sha256, lfs_pointer)

A repo's row is made when upstream has answered for it (repo info, a pass-through call),
by an import, or by a configured sync: never for an id only a client named, so requests
for junk ids leave nothing behind (the resolver asks `repo_id(key, create=False)`).

A commit's listing is immutable once written, so it is cached in memory without expiry
(bounded LRU); refs are mutable and the resolver decides their freshness by `checked_at`.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from mirror.catalog.db import Database
from mirror.model import FileEntry, RepoKey

_LISTING_CACHE = 64
_INFO_CACHE = 256
_ROW_TTL = 5.0


@dataclass(frozen=True, slots=True)
class RepoRow:
    id: int
    key: RepoKey
    private: bool
    gated: str
    info: dict[str, Any] | None
    # When upstream's private/gated flags were last recorded (wall clock); None for a
    # row made by an import or a sync plan, whose flags mean nothing yet.
    info_at: float | None = None

    @property
    def known(self) -> bool:
        return self.info_at is not None


class RepoCatalog:
    def __init__(self, db: Database, now: Callable[[], float], monotonic: Callable[[], float]) -> None:
        self.db = db
        self._now = now
        self._monotonic = monotonic
        self._repo_ids: dict[RepoKey, int] = {}
        self._listings: OrderedDict[tuple[int, str], dict[str, FileEntry]] = OrderedDict()
        self._infos: OrderedDict[tuple[int, str], dict[str, Any]] = OrderedDict()
        self._rows: dict[RepoKey, tuple[RepoRow, float]] = {}
        self._refs: dict[tuple[int, str], tuple[str, float, float]] = {}

    # --- repos ----------------------------------------------------------------------

    async def repo_id(self, key: RepoKey, *, create: bool = True) -> int | None:
        rid = self._repo_ids.get(key)
        if rid is not None:
            return rid
        row = await self.db.fetchone("SELECT id FROM repos WHERE repo_type = ? AND repo_id = ?", (key.repo_type, key.repo_id))
        if row is None:
            if not create:
                return None
            async with self.db.transaction() as c:
                await c.execute("INSERT OR IGNORE INTO repos(repo_type, repo_id) VALUES (?, ?)", (key.repo_type, key.repo_id))
            row = await self.db.fetchone("SELECT id FROM repos WHERE repo_type = ? AND repo_id = ?", (key.repo_type, key.repo_id))
            assert row is not None
        self._repo_ids[key] = row["id"]
        return int(row["id"])

    async def get_repo(self, key: RepoKey) -> RepoRow | None:
        """The repo's row; answered from memory for `_ROW_TTL` seconds (every file
        request asks for the visibility flags), so another process's change shows up
        within that time."""
        hit = self._rows.get(key)
        if hit is not None and self._monotonic() - hit[1] < _ROW_TTL:
            return hit[0]
        row = await self.db.fetchone("SELECT * FROM repos WHERE repo_type = ? AND repo_id = ?", (key.repo_type, key.repo_id))
        result = _repo_row(row) if row else None
        if result is not None:
            self._rows[key] = (result, self._monotonic())
        return result

    async def set_repo_info(self, key: RepoKey, *, private: bool, gated: str, info: dict[str, Any] | None) -> int:
        rid = await self.repo_id(key)
        async with self.db.transaction() as c:
            await c.execute(
                "UPDATE repos SET private = ?, gated = ?, info_json = COALESCE(?, info_json), info_at = ? WHERE id = ?",
                (int(private), gated, json.dumps(info) if info is not None else None, self._now(), rid),
            )
        self._rows.pop(key, None)
        assert rid is not None
        return rid

    async def key_of(self, repo: int) -> RepoKey | None:
        row = await self.db.fetchone("SELECT repo_type, repo_id FROM repos WHERE id = ?", (repo,))
        return RepoKey(row["repo_type"], row["repo_id"]) if row is not None else None

    async def list_repos(self) -> list[RepoRow]:
        rows = await self.db.fetchall("SELECT * FROM repos ORDER BY repo_type, repo_id")
        return [_repo_row(r) for r in rows]

    # --- refs -----------------------------------------------------------------------

    async def get_ref(self, repo: int, name: str) -> tuple[str, float] | None:
        """(commit, checked_at); answered from memory for `_ROW_TTL` seconds, so a ref
        another process moved (`mirror sync`, `pull`) shows up within that time."""
        hit = self._refs.get((repo, name))
        if hit is not None and self._monotonic() - hit[2] < _ROW_TTL:
            return hit[0], hit[1]
        row = await self.db.fetchone("SELECT commit_sha, checked_at FROM refs WHERE repo = ? AND name = ?", (repo, name))
        if row is None:
            self._refs.pop((repo, name), None)
            return None
        self._refs[(repo, name)] = (row["commit_sha"], row["checked_at"], self._monotonic())
        return row["commit_sha"], row["checked_at"]

    async def set_ref(self, repo: int, name: str, sha: str, *, checked_at: float | None = None) -> None:
        """Point ref `name` at `sha`. `checked_at` (default now) is when upstream last
        said so; an import of old local data passes the time it learned the ref."""
        now = self._now() if checked_at is None else checked_at
        async with self.db.transaction() as c:
            cur = await c.execute("SELECT commit_sha FROM refs WHERE repo = ? AND name = ?", (repo, name))
            old = await cur.fetchone()
            await c.execute(
                "INSERT INTO refs(repo, name, commit_sha, checked_at) VALUES (?,?,?,?) "
                "ON CONFLICT(repo, name) DO UPDATE SET commit_sha = excluded.commit_sha, checked_at = excluded.checked_at",
                (repo, name, sha, now),
            )
            if old is None or old[0] != sha:
                await c.execute("INSERT INTO changelog(at, kind, key) VALUES (?, 'ref', ?)", (self._now(), f"{repo}:{name}:{sha}"))
        self._refs[(repo, name)] = (sha, now, self._monotonic())

    async def refs_of(self, repo: int) -> dict[str, str]:
        rows = await self.db.fetchall("SELECT name, commit_sha FROM refs WHERE repo = ? ORDER BY name", (repo,))
        return {r["name"]: r["commit_sha"] for r in rows}

    # --- commits and listings ---------------------------------------------------------

    async def put_listing(self, repo: int, sha: str, entries: Iterable[FileEntry], info: dict[str, Any] | None = None) -> None:
        items = list(entries)
        now = self._now()
        async with self.db.transaction() as c:
            await c.execute(
                "INSERT INTO commits(repo, sha, info_json, listed_at, created_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT(repo, sha) DO UPDATE SET listed_at = excluded.listed_at, "
                "info_json = COALESCE(excluded.info_json, commits.info_json)",
                (repo, sha, json.dumps(info) if info is not None else None, now, now),
            )
            await c.execute("DELETE FROM files WHERE repo = ? AND commit_sha = ?", (repo, sha))
            await c.executemany(
                "INSERT INTO files(repo, commit_sha, path, kind, oid, size, lfs_sha256, lfs_pointer) VALUES (?,?,?,?,?,?,?,?)",
                [(repo, sha, e.path, e.kind, e.oid, e.size, e.lfs_sha256, e.lfs_pointer) for e in items],
            )
            await c.execute("INSERT INTO changelog(at, kind, key) VALUES (?, 'listing', ?)", (now, f"{repo}:{sha}"))
        self._remember(repo, sha, {e.path: e for e in items})

    async def set_commit_info(self, repo: int, sha: str, info: dict[str, Any]) -> None:
        """Store repo info at a commit. Info from upstream replacing an `import-hf-cache`
        info marked incomplete also drops that import's listing (it names only the files
        the cache held), so that the next request lists the commit upstream."""
        now = self._now()
        dropped = False
        async with self.db.transaction() as c:
            cur = await c.execute("SELECT info_json FROM commits WHERE repo = ? AND sha = ?", (repo, sha))
            old = await cur.fetchone()
            if old is not None and is_partial_import(old[0]) and not is_partial_import(json.dumps(info)):
                await c.execute("DELETE FROM files WHERE repo = ? AND commit_sha = ?", (repo, sha))
                await c.execute("UPDATE commits SET listed_at = NULL WHERE repo = ? AND sha = ?", (repo, sha))
                dropped = True
            await c.execute(
                "INSERT INTO commits(repo, sha, info_json, listed_at, created_at) VALUES (?,?,?,NULL,?) "
                "ON CONFLICT(repo, sha) DO UPDATE SET info_json = excluded.info_json",
                (repo, sha, json.dumps(info), now),
            )
        if dropped:
            self._listings.pop((repo, sha), None)
        self._remember_info(repo, sha, info)

    async def commit_info(self, repo: int, sha: str) -> dict[str, Any] | None:
        """Repo info at a commit (immutable, so cached in memory without expiry)."""
        hit = self._infos.get((repo, sha))
        if hit is not None:
            self._infos.move_to_end((repo, sha))
            return hit
        row = await self.db.fetchone("SELECT info_json FROM commits WHERE repo = ? AND sha = ?", (repo, sha))
        if row is None or row["info_json"] is None:
            return None
        info: dict[str, Any] = json.loads(row["info_json"])
        self._remember_info(repo, sha, info)
        return info

    def _remember_info(self, repo: int, sha: str, info: dict[str, Any]) -> None:
        self._infos[(repo, sha)] = info
        self._infos.move_to_end((repo, sha))
        while len(self._infos) > _INFO_CACHE:
            self._infos.popitem(last=False)

    async def get_listing(self, repo: int, sha: str) -> dict[str, FileEntry] | None:
        key = (repo, sha)
        hit = self._listings.get(key)
        if hit is not None:
            self._listings.move_to_end(key)
            return hit
        row = await self.db.fetchone("SELECT listed_at FROM commits WHERE repo = ? AND sha = ?", (repo, sha))
        if row is None or row["listed_at"] is None:
            return None
        rows = await self.db.fetchall(
            "SELECT path, kind, oid, size, lfs_sha256, lfs_pointer FROM files WHERE repo = ? AND commit_sha = ? ORDER BY path",
            (repo, sha),
        )
        listing = {
            r["path"]: FileEntry(r["path"], r["kind"], r["oid"], r["size"], r["lfs_sha256"], r["lfs_pointer"]) for r in rows
        }
        self._remember(repo, sha, listing)
        return listing

    def _remember(self, repo: int, sha: str, listing: dict[str, FileEntry]) -> None:
        self._listings[(repo, sha)] = listing
        self._listings.move_to_end((repo, sha))
        while len(self._listings) > _LISTING_CACHE:
            self._listings.popitem(last=False)

    def forget_listing(self, repo: int, sha: str) -> None:
        """Drop a cached listing (the lifecycle evicted the revision)."""
        self._listings.pop((repo, sha), None)

    async def find_commit(self, repo: int, prefix: str) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT sha FROM commits WHERE repo = ? AND sha >= ? AND sha < ? LIMIT 2", (repo, prefix, prefix + "g")
        )
        return [r["sha"] for r in rows]

    async def commits_of(self, repo: int) -> list[str]:
        rows = await self.db.fetchall("SELECT sha FROM commits WHERE repo = ? ORDER BY created_at", (repo,))
        return [r["sha"] for r in rows]

    async def files_with(self, identity: str, limit: int = 1000) -> list[tuple[RepoKey, FileEntry]]:
        """Listed files whose content is `identity` (`sha256:` or `sha1:`), with their
        repos: which revisions hold this content?"""
        kind, _, digest = identity.partition(":")
        if kind == "sha256":
            where = "f.lfs_sha256 = ?"
        else:
            where = "f.oid = ? AND (f.lfs_sha256 IS NULL OR f.lfs_sha256 = '')"
        rows = await self.db.fetchall(
            "SELECT r.repo_type, r.repo_id, f.path, f.kind, f.oid, f.size, f.lfs_sha256, f.lfs_pointer "
            f"FROM files f JOIN repos r ON r.id = f.repo WHERE {where} AND f.kind = 'file' LIMIT ?",
            (digest, limit),
        )
        return [(RepoKey(r["repo_type"], r["repo_id"]),
                 FileEntry(r["path"], r["kind"], r["oid"], r["size"], r["lfs_sha256"], r["lfs_pointer"])) for r in rows]


# The key `import-hf-cache` adds to the repo info it writes for a commit; `complete` is
# false when the cache held only some of the commit's files (admin/hfcache.py).
IMPORT_MARK = "mirrorImport"


def is_partial_import(info_json: str | None) -> bool:
    if not info_json or IMPORT_MARK not in info_json:
        return False
    try:
        mark = json.loads(info_json).get(IMPORT_MARK)
    except (ValueError, AttributeError):
        return False
    return isinstance(mark, dict) and mark.get("complete") is False


def _repo_row(row: Any) -> RepoRow:
    info = json.loads(row["info_json"]) if row["info_json"] else None
    return RepoRow(
        row["id"], RepoKey(row["repo_type"], row["repo_id"]), bool(row["private"]), row["gated"], info, row["info_at"]
    )
