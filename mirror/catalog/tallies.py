"""Tallies: aggregate counts over catalog tables, for monitoring (`GET /metrics`).

Read-only and stateless. The append-only tables (`audit_log`, `alias_events`) are
counted incrementally: each call counts only the rows after the last key the caller saw
(an index range on the primary key), so a scrape costs rows added since the last one,
not the whole history. The small tables (`aliases`, `scans`) are counted whole.

    audit_counts(after_seq)  -> {(action, outcome): n}, last seq     (audit_log)
    alias_event_counts(after_id) -> {(repo, alias, action): n}, last id  (alias_events)
    aliases()                -> the state of every alias and its canary   (aliases)
    scan_counts()            -> {(verdict, released): n}                 (scans)

Repos are named as users write them (`org/name`, `datasets/org/name`).
"""

from __future__ import annotations

from dataclasses import dataclass

from mirror.catalog.db import Database

# A repo's name as users write it, from a `repos r` row (model.py RepoKey.__str__).
_REPO_NAME = "CASE r.repo_type WHEN 'model' THEN r.repo_id ELSE r.repo_type || 's/' || r.repo_id END"


@dataclass(frozen=True, slots=True)
class AliasState:
    repo: str
    alias: str
    canary: bool  # a canary runs
    weight: float  # percent of clients on the canary (0 without one)
    failures: int  # failed gate analyses in a row
    holding: bool  # held for missing metrics


class TallyCatalog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def audit_counts(self, after: int = 0) -> tuple[dict[tuple[str, str], int], int]:
        """Audit records with seq > `after`, counted by (action, outcome); and the last
        seq counted (`after` when there is none)."""
        rows = await self.db.fetchall(
            "SELECT action, outcome, COUNT(*) AS n, MAX(seq) AS last FROM audit_log WHERE seq > ? "
            "GROUP BY action, outcome", (after,))
        return {(r["action"], r["outcome"]): int(r["n"]) for r in rows}, max([after, *(int(r["last"]) for r in rows)])

    async def alias_event_counts(self, after: int = 0) -> tuple[dict[tuple[str, str, str], int], int]:
        """Alias changes with id > `after`, counted by (repo, alias, action); and the
        last id counted."""
        rows = await self.db.fetchall(
            f"SELECT {_REPO_NAME} AS repo, e.name AS alias, e.action AS action, COUNT(*) AS n, MAX(e.id) AS last "
            "FROM alias_events e JOIN repos r ON r.id = e.repo WHERE e.id > ? GROUP BY e.repo, e.name, e.action",
            (after,))
        return ({(r["repo"], r["alias"], r["action"]): int(r["n"]) for r in rows},
                max([after, *(int(r["last"]) for r in rows)]))

    async def aliases(self) -> list[AliasState]:
        rows = await self.db.fetchall(
            f"SELECT {_REPO_NAME} AS repo, a.name AS alias, a.canary_sha IS NOT NULL AS canary, a.weight AS weight, "
            "a.failures AS failures, a.holding <> '' AS holding FROM aliases a JOIN repos r ON r.id = a.repo "
            "ORDER BY repo, alias")
        return [AliasState(r["repo"], r["alias"], bool(r["canary"]), float(r["weight"]), int(r["failures"]),
                           bool(r["holding"])) for r in rows]

    async def scan_counts(self) -> dict[tuple[str, bool], int]:
        """Scanned contents by (verdict, released by an admin)."""
        rows = await self.db.fetchall(
            "SELECT verdict, released_at IS NOT NULL AS released, COUNT(*) AS n FROM scans GROUP BY verdict, released")
        return {(r["verdict"], bool(r["released"])): int(r["n"]) for r in rows}
