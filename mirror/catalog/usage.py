"""Read-only reports over repos and content, for `mirror ls` and `mirror show`.

A file row names its content by identity, computed in SQL exactly as
`FileEntry.identity` does: 'sha256:'||lfs_sha256 for LFS files, else 'sha1:'||oid.

- logical size of a repo: bytes of the distinct cached contents its listed commits name;
- stored size of a repo: on-disk bytes of the distinct chunks those contents use;
- shared bytes of a file: bytes of its chunks that some file of another revision
  (any repo) also uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from mirror.catalog.db import Database

_IDENT = "(CASE WHEN COALESCE({t}.lfs_sha256, '') != '' THEN 'sha256:' || {t}.lfs_sha256 ELSE 'sha1:' || {t}.oid END)"


@dataclass(frozen=True, slots=True)
class RepoUsage:
    logical_bytes: int
    stored_bytes: int
    last_access: float | None


@dataclass(frozen=True, slots=True)
class FileUsage:
    path: str
    size: int
    oid: str
    lfs_sha256: str | None
    identity: str
    cached: bool
    chunks: int
    shared_bytes: int


class UsageCatalog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def repos(self) -> dict[int, RepoUsage]:
        ident = _IDENT.format(t="f")
        ids = f"SELECT DISTINCT f.repo AS repo, {ident} AS identity FROM files f WHERE f.kind = 'file'"
        logical = await self.db.fetchall(
            f"WITH ids AS ({ids}) SELECT ids.repo AS repo, SUM(m.size) AS b "
            "FROM ids JOIN manifests m ON m.identity = ids.identity GROUP BY ids.repo"
        )
        stored = await self.db.fetchall(
            f"WITH ids AS ({ids}), ch AS (SELECT DISTINCT ids.repo AS repo, mc.chunk_id AS chunk_id "
            "FROM ids JOIN manifest_chunks mc ON mc.identity = ids.identity) "
            "SELECT ch.repo AS repo, SUM(c.stored_len) AS b FROM ch JOIN chunks c ON c.id = ch.chunk_id GROUP BY ch.repo"
        )
        access = await self.db.fetchall("SELECT repo, MAX(last_access) AS t FROM access GROUP BY repo")
        lb = {r["repo"]: r["b"] for r in logical}
        sb = {r["repo"]: r["b"] for r in stored}
        at = {r["repo"]: r["t"] for r in access}
        return {rid: RepoUsage(lb.get(rid, 0), sb.get(rid, 0), at.get(rid)) for rid in set(lb) | set(sb) | set(at)}

    async def revision(self, repo: int, commit: str) -> list[FileUsage]:
        mine_ident = _IDENT.format(t="files")
        other_ident = _IDENT.format(t="o")
        rows = await self.db.fetchall(
            f"WITH mine AS (SELECT path, size, oid, lfs_sha256, {mine_ident} AS identity FROM files "
            "              WHERE repo = ? AND commit_sha = ? AND kind = 'file'), "
            f"other_ids AS (SELECT DISTINCT {other_ident} AS identity FROM files o "
            "              WHERE o.kind = 'file' AND NOT (o.repo = ? AND o.commit_sha = ?)), "
            "other_chunks AS (SELECT DISTINCT mc.chunk_id FROM manifest_chunks mc JOIN other_ids ON other_ids.identity = mc.identity) "
            "SELECT mine.*, m.chunk_count AS chunk_count, "
            "  (SELECT COALESCE(SUM(mc.length), 0) FROM manifest_chunks mc "
            "   WHERE mc.identity = mine.identity AND mc.chunk_id IN (SELECT chunk_id FROM other_chunks)) AS shared "
            "FROM mine LEFT JOIN manifests m ON m.identity = mine.identity ORDER BY mine.path",
            (repo, commit, repo, commit),
        )
        return [
            FileUsage(r["path"], r["size"], r["oid"], r["lfs_sha256"], r["identity"], r["chunk_count"] is not None,
                      r["chunk_count"] or 0, r["shared"])
            for r in rows
        ]
