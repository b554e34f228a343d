"""Catalog facts for the lifecycle: revisions and their age, pins, what references what,
archive locations, and the audit trail (tables of migrations 3 and 4).

    pins(repo, commit_sha, label, created_at)              (migration 3, read only here)
    releases, aliases                                       (migration 9, read only here:
                                                            their commits count as pinned)
    packs(id, name, size, created_at)
    archived(chunk_id, pack, offset, stored_len)
    revision_state(repo, commit_sha, state, hits_at, changed_at)
    audit(id, at, action, detail)

A revision is a listed commit (`commits.listed_at` set). Its files reference manifests by
identity ('sha256:' || lfs_sha256, else 'sha1:' || oid); manifests reference chunks. Each
multi-row change here is one transaction, so a crash leaves either the old or the new
state (design.md §4, threat-model C7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from mirror.catalog.db import Database

_IDENTITY_SQL = "CASE WHEN lfs_sha256 IS NOT NULL AND lfs_sha256 != '' THEN 'sha256:' || lfs_sha256 ELSE 'sha1:' || oid END"


@dataclass(frozen=True, slots=True)
class Revision:
    repo: int
    sha: str
    listed_at: float
    last_access: float | None
    hits: int
    pinned: bool
    archived: bool
    hits_at_archive: int

    @property
    def last_used(self) -> float:
        """Last access, or when it was listed if never read."""
        return self.last_access if self.last_access is not None else self.listed_at


@dataclass(frozen=True, slots=True)
class ArchivedLoc:
    pack: int
    offset: int
    stored_len: int


class LifecycleCatalog:
    def __init__(self, db: Database, now: Callable[[], float]) -> None:
        self.db = db
        self._now = now

    # --- revisions and the reference graph -------------------------------------------------

    async def revisions(self) -> list[Revision]:
        rows = await self.db.fetchall(
            "SELECT c.repo, c.sha, c.listed_at, a.last_access, COALESCE(a.hits, 0) AS hits, "
            "(p.commit_sha IS NOT NULL OR EXISTS(SELECT 1 FROM releases r WHERE r.repo = c.repo AND r.commit_sha = c.sha) "
            "OR EXISTS(SELECT 1 FROM aliases l WHERE l.repo = c.repo AND (l.commit_sha = c.sha OR l.canary_sha = c.sha))) "
            "AS pinned, s.state IS NOT NULL AS archived, COALESCE(s.hits_at, 0) AS hits_at "
            "FROM commits c "
            "LEFT JOIN access a ON a.repo = c.repo AND a.commit_sha = c.sha "
            "LEFT JOIN pins p ON p.repo = c.repo AND p.commit_sha = c.sha "
            "LEFT JOIN revision_state s ON s.repo = c.repo AND s.commit_sha = c.sha "
            "WHERE c.listed_at IS NOT NULL ORDER BY c.repo, c.sha"
        )
        return [
            Revision(r["repo"], r["sha"], r["listed_at"], r["last_access"], r["hits"], bool(r["pinned"]), bool(r["archived"]), r["hits_at"])
            for r in rows
        ]

    async def is_archived(self, repo: int, sha: str) -> bool:
        row = await self.db.fetchone("SELECT 1 FROM revision_state WHERE repo = ? AND commit_sha = ?", (repo, sha))
        return row is not None

    async def ref_history(self) -> dict[tuple[int, str], list[str]]:
        """For each (repo, ref name): the distinct commits it pointed at, newest first
        (the current target, then earlier ones from the changelog)."""
        out: dict[tuple[int, str], list[str]] = {}
        for r in await self.db.fetchall("SELECT repo, name, commit_sha FROM refs"):
            out[(r["repo"], r["name"])] = [r["commit_sha"]]
        for r in await self.db.fetchall("SELECT key FROM changelog WHERE kind = 'ref' ORDER BY serial DESC"):
            repo_s, _, rest = r["key"].partition(":")
            name, _, sha = rest.rpartition(":")
            if not repo_s.isdigit() or not name:
                continue
            seq = out.setdefault((int(repo_s), name), [])
            if sha not in seq:
                seq.append(sha)
        return out

    async def revision_manifests(self) -> dict[tuple[int, str], set[str]]:
        rows = await self.db.fetchall(
            f"SELECT f.repo, f.commit_sha, {_IDENTITY_SQL} AS identity FROM files f "
            "JOIN commits c ON c.repo = f.repo AND c.sha = f.commit_sha "
            "WHERE f.kind = 'file' AND c.listed_at IS NOT NULL"
        )
        out: dict[tuple[int, str], set[str]] = {}
        for r in rows:
            out.setdefault((r["repo"], r["commit_sha"]), set()).add(r["identity"])
        return out

    async def manifest_chunks(self) -> dict[str, list[str]]:
        """identity -> its chunk ids in file order, for every stored manifest."""
        out: dict[str, list[str]] = {r["identity"]: [] for r in await self.db.fetchall("SELECT identity FROM manifests")}
        for r in await self.db.fetchall("SELECT identity, chunk_id FROM manifest_chunks ORDER BY identity, seq"):
            out.setdefault(r["identity"], []).append(r["chunk_id"])
        return out

    async def manifest_created(self) -> dict[str, float]:
        return {r["identity"]: r["created_at"] for r in await self.db.fetchall("SELECT identity, created_at FROM manifests")}

    async def chunk_rows(self) -> dict[str, tuple[int, int, float]]:
        """chunk id -> (raw_len, stored_len, created_at)."""
        rows = await self.db.fetchall("SELECT id, raw_len, stored_len, created_at FROM chunks")
        return {r["id"]: (r["raw_len"], r["stored_len"], r["created_at"]) for r in rows}

    # --- archive locations ---------------------------------------------------------------------

    async def archived(self) -> dict[str, ArchivedLoc]:
        rows = await self.db.fetchall("SELECT chunk_id, pack, offset, stored_len FROM archived")
        return {r["chunk_id"]: ArchivedLoc(r["pack"], r["offset"], r["stored_len"]) for r in rows}

    async def packs(self) -> dict[int, tuple[str, int]]:
        """pack id -> (file name, size)."""
        return {r["id"]: (r["name"], r["size"]) for r in await self.db.fetchall("SELECT id, name, size FROM packs")}

    async def record_pack(
        self, name: str, size: int, entries: Iterable[tuple[str, int, int]], *, replaces: Iterable[int] = (),
        revisions: Iterable[tuple[int, str, int]] = (), action: str = "", detail: str = "",
    ) -> int:
        """The archive flip, in one transaction: record a verified pack, point the given
        chunks (id, offset, stored_len) at it, drop the packs it `replaces` (a repack),
        mark `revisions` (repo, sha, hits now) archived, and audit."""
        now = self._now()
        async with self.db.transaction() as c:
            cur = await c.execute("INSERT INTO packs(name, size, created_at) VALUES (?,?,?)", (name, size, now))
            pack_id = int(cur.lastrowid or 0)
            rows = [(cid, pack_id, off, length) for cid, off, length in entries]
            await c.executemany(
                "INSERT INTO archived(chunk_id, pack, offset, stored_len) VALUES (?,?,?,?) ON CONFLICT(chunk_id) DO UPDATE SET "
                "pack = excluded.pack, offset = excluded.offset, stored_len = excluded.stored_len",
                rows,
            )
            await c.executemany("UPDATE chunks SET stored_len = ? WHERE id = ?", [(r[3], r[0]) for r in rows])
            for old in replaces:
                await c.execute("DELETE FROM packs WHERE id = ?", (old,))
            await c.executemany(
                "INSERT INTO revision_state(repo, commit_sha, state, hits_at, changed_at) VALUES (?,?,'archived',?,?) "
                "ON CONFLICT(repo, commit_sha) DO UPDATE SET hits_at = excluded.hits_at, changed_at = excluded.changed_at",
                [(repo, sha, hits, now) for repo, sha, hits in revisions],
            )
            if action:
                await c.execute("INSERT INTO audit(at, action, detail) VALUES (?,?,?)", (now, action, detail))
        return pack_id

    async def mark_archived(self, revisions: Iterable[tuple[int, str, int]]) -> None:
        now = self._now()
        async with self.db.transaction() as c:
            await c.executemany(
                "INSERT INTO revision_state(repo, commit_sha, state, hits_at, changed_at) VALUES (?,?,'archived',?,?) "
                "ON CONFLICT(repo, commit_sha) DO UPDATE SET hits_at = excluded.hits_at, changed_at = excluded.changed_at",
                [(repo, sha, hits, now) for repo, sha, hits in revisions],
            )

    async def unarchive(self, hot: Iterable[tuple[str, int, int]], repo: int, sha: str, detail: str) -> None:
        """The thaw flip: chunks (id, stored_len, codec) now have verified hot files."""
        rows = list(hot)
        now = self._now()
        async with self.db.transaction() as c:
            await c.executemany("DELETE FROM archived WHERE chunk_id = ?", [(r[0],) for r in rows])
            await c.executemany("UPDATE chunks SET stored_len = ?, codec = ? WHERE id = ?", [(r[1], r[2], r[0]) for r in rows])
            await c.execute("DELETE FROM revision_state WHERE repo = ? AND commit_sha = ?", (repo, sha))
            await c.execute("INSERT INTO audit(at, action, detail) VALUES (?, 'thaw', ?)", (now, detail))

    async def drop_pack(self, pack_id: int) -> None:
        """Forget a pack none of whose chunks is recorded any more."""
        async with self.db.transaction() as c:
            await c.execute("DELETE FROM archived WHERE pack = ?", (pack_id,))
            await c.execute("DELETE FROM packs WHERE id = ?", (pack_id,))

    # --- eviction and collection ---------------------------------------------------------------

    async def evict_revision(self, repo: int, sha: str, detail: str) -> None:
        """Forget a revision: its listing always; the commit row too unless a ref still
        names it (then only `listed_at` is cleared, so the next read lists it again)."""
        now = self._now()
        async with self.db.transaction() as c:
            await c.execute("DELETE FROM files WHERE repo = ? AND commit_sha = ?", (repo, sha))
            cur = await c.execute("SELECT 1 FROM refs WHERE repo = ? AND commit_sha = ? LIMIT 1", (repo, sha))
            if await cur.fetchone():
                await c.execute("UPDATE commits SET listed_at = NULL WHERE repo = ? AND sha = ?", (repo, sha))
            else:
                await c.execute("DELETE FROM commits WHERE repo = ? AND sha = ?", (repo, sha))
            await c.execute("DELETE FROM access WHERE repo = ? AND commit_sha = ?", (repo, sha))
            await c.execute("DELETE FROM revision_state WHERE repo = ? AND commit_sha = ?", (repo, sha))
            await c.execute("INSERT INTO audit(at, action, detail) VALUES (?, 'evict', ?)", (now, detail))

    async def delete_manifests(self, identities: Iterable[str]) -> None:
        ids = list(identities)
        if not ids:
            return
        now = self._now()
        async with self.db.transaction() as c:
            await c.executemany("DELETE FROM manifests WHERE identity = ?", [(i,) for i in ids])
            await c.executemany("INSERT INTO changelog(at, kind, key) VALUES (?, 'manifest-deleted', ?)", [(now, i) for i in ids])

    async def delete_chunks(self, ids: Iterable[str]) -> None:
        """Forget chunks: their rows and their archive locations."""
        rows = [(i,) for i in ids]
        async with self.db.transaction() as c:
            await c.executemany("DELETE FROM archived WHERE chunk_id = ?", rows)
            await c.executemany("DELETE FROM chunks WHERE id = ?", rows)

    async def stored_bytes(self) -> int:
        """Bytes the store occupies: hot chunk frames plus whole archive packs."""
        hot = await self.db.fetchone(
            "SELECT COALESCE(SUM(stored_len), 0) AS b FROM chunks WHERE id NOT IN (SELECT chunk_id FROM archived)"
        )
        packs = await self.db.fetchone("SELECT COALESCE(SUM(size), 0) AS b FROM packs")
        assert hot is not None and packs is not None
        return int(hot["b"]) + int(packs["b"])

    # --- audit -----------------------------------------------------------------------------------

    async def audit(self, action: str, detail: str) -> None:
        async with self.db.transaction() as c:
            await c.execute("INSERT INTO audit(at, action, detail) VALUES (?,?,?)", (self._now(), action, detail))

    async def audit_log(self, action: str | None = None) -> list[tuple[float, str, str]]:
        sql = "SELECT at, action, detail FROM audit" + (" WHERE action = ?" if action else "") + " ORDER BY id"
        rows = await self.db.fetchall(sql, (action,) if action else ())
        return [(r["at"], r["action"], r["detail"]) for r in rows]
