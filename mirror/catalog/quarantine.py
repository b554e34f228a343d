"""Catalog facts about scanned content: verdicts, quarantine and releases (table `scans`,
schema_quarantine.py).

A verdict belongs to a content identity, so a file quarantined under one repo is
quarantined under every repo and path that serves the same bytes, and a release
releases it everywhere. Recording a verdict again (a rescan) keeps an admin's release:
the bytes did not change, only the scanner may have.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from mirror.catalog.db import Database

# A listed file's content identity (model.py FileEntry.identity), in SQL.
_FILE_IDENTITY = ("CASE WHEN f.lfs_sha256 IS NOT NULL AND f.lfs_sha256 <> '' "
                  "THEN 'sha256:' || f.lfs_sha256 ELSE 'sha1:' || f.oid END")
_COLUMNS = ("identity, verdict, findings, scanner, scanned_at, repo, commit_sha, path, "
            "released_at, released_by, release_reason")


@dataclass(frozen=True, slots=True)
class Scan:
    identity: str
    verdict: str  # clean | unsafe | error
    findings: tuple[str, ...]
    scanner: str
    scanned_at: float
    repo: str = ""  # where it was first scanned, as people name it ("org/name", "datasets/org/name")
    commit: str = ""
    path: str = ""
    released_at: float | None = None
    released_by: str | None = None
    release_reason: str | None = None

    @property
    def quarantined(self) -> bool:
        return self.verdict != "clean" and self.released_at is None

    def to_json(self) -> dict[str, Any]:
        return {"identity": self.identity, "verdict": self.verdict, "findings": list(self.findings),
                "scanner": self.scanner, "scanned_at": self.scanned_at, "repo": self.repo, "commit": self.commit,
                "path": self.path, "quarantined": self.quarantined, "released_at": self.released_at,
                "released_by": self.released_by, "release_reason": self.release_reason}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A listed file of a scanned kind whose content is stored and has no verdict yet."""

    repo_type: str
    repo_id: str
    commit: str
    path: str
    oid: str
    size: int
    lfs_sha256: str | None


class ScanCatalog:
    def __init__(self, db: Database, now: Callable[[], float]) -> None:
        self.db = db
        self._now = now

    async def get(self, identity: str) -> Scan | None:
        row = await self.db.fetchone(f"SELECT {_COLUMNS} FROM scans WHERE identity = ?", (identity,))
        return _scan(row) if row is not None else None

    async def record(self, identity: str, verdict: str, findings: list[str] | tuple[str, ...], scanner: str, *,
                     repo: str = "", commit: str = "", path: str = "") -> bool:
        """Store a verdict; True when it is new or differs from the one stored (worth an
        audit record), False when the same verdict was already there."""
        findings_json = json.dumps(list(findings))
        async with self.db.transaction() as c:
            cur = await c.execute("SELECT verdict, findings FROM scans WHERE identity = ?", (identity,))
            old = await cur.fetchone()
            await c.execute(
                "INSERT INTO scans(identity, verdict, findings, scanner, scanned_at, repo, commit_sha, path) "
                "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(identity) DO UPDATE SET verdict = excluded.verdict, "
                "findings = excluded.findings, scanner = excluded.scanner, scanned_at = excluded.scanned_at",
                (identity, verdict, findings_json, scanner, self._now(), repo, commit, path),
            )
        return old is None or (old[0], old[1]) != (verdict, findings_json)

    async def release(self, identity: str, by: str, reason: str = "") -> bool:
        """Release a quarantined content; False when it is not quarantined."""
        async with self.db.transaction() as c:
            cur = await c.execute(
                "UPDATE scans SET released_at = ?, released_by = ?, release_reason = ? "
                "WHERE identity = ? AND verdict <> 'clean' AND released_at IS NULL",
                (self._now(), by, reason, identity),
            )
            return cur.rowcount > 0

    async def listing(self, *, everything: bool = False) -> list[Scan]:
        """Quarantined contents, newest first; `everything`: every verdict."""
        where = "" if everything else "WHERE verdict <> 'clean' AND released_at IS NULL"
        rows = await self.db.fetchall(f"SELECT {_COLUMNS} FROM scans {where} ORDER BY scanned_at DESC")
        return [_scan(r) for r in rows]

    async def find(self, prefix: str) -> list[Scan]:
        """Verdicts whose identity starts with `prefix` (at most two: enough to tell a
        unique prefix from an ambiguous one)."""
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM scans WHERE identity >= ? AND identity < ? ORDER BY identity LIMIT 2",
            (prefix, prefix + "\U0010ffff"),
        )
        return [_scan(r) for r in rows]

    async def unscanned(self, suffixes: tuple[str, ...], repo: tuple[str, str] | None = None, *,
                        rescan: bool = False) -> list[Candidate]:
        """Listed files ending in one of `suffixes` whose content is stored (a manifest)
        and has no verdict (`rescan`: no clean verdict): what `mirror quarantine scan`
        looks at."""
        like = " OR ".join("lower(f.path) LIKE ?" for _ in suffixes)
        params: list[Any] = [f"%{s}" for s in suffixes]
        where_repo = ""
        if repo is not None:
            where_repo = "AND r.repo_type = ? AND r.repo_id = ?"
            params += list(repo)
        only_clean = "AND s.verdict = 'clean'" if rescan else ""
        rows = await self.db.fetchall(
            "SELECT r.repo_type, r.repo_id, f.commit_sha, f.path, f.oid, f.size, f.lfs_sha256 "
            "FROM files f JOIN repos r ON r.id = f.repo "
            f"WHERE f.kind = 'file' AND ({like}) {where_repo} "
            f"AND EXISTS (SELECT 1 FROM manifests m WHERE m.identity = {_FILE_IDENTITY}) "
            f"AND NOT EXISTS (SELECT 1 FROM scans s WHERE s.identity = {_FILE_IDENTITY} {only_clean}) "
            "ORDER BY r.repo_type, r.repo_id, f.commit_sha, f.path",
            params,
        )
        return [Candidate(r["repo_type"], r["repo_id"], r["commit_sha"], r["path"], r["oid"], r["size"], r["lfs_sha256"])
                for r in rows]


def _scan(row: Any) -> Scan:
    try:
        findings = tuple(str(f) for f in json.loads(row["findings"]))
    except (ValueError, TypeError):
        findings = (str(row["findings"]),)
    return Scan(row["identity"], row["verdict"], findings, row["scanner"], row["scanned_at"], row["repo"],
                row["commit_sha"], row["path"], row["released_at"], row["released_by"], row["release_reason"])
