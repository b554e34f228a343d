"""Pinned revisions: commits an operator asked to keep, whatever the lifecycle policy.

    pins(repo, commit_sha, label, created_at)    PRIMARY KEY(repo, commit_sha)

Pinning twice is idempotent (the label is updated); unpinning what is not pinned is a
no-op that reports False.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mirror.catalog.db import Database


@dataclass(frozen=True, slots=True)
class Pin:
    repo: int
    commit: str
    label: str
    created_at: float


class PinCatalog:
    def __init__(self, db: Database, now: Callable[[], float]) -> None:
        self.db = db
        self._now = now

    async def pin(self, repo: int, commit: str, label: str = "") -> None:
        async with self.db.transaction() as c:
            await c.execute(
                "INSERT INTO pins(repo, commit_sha, label, created_at) VALUES (?,?,?,?) "
                "ON CONFLICT(repo, commit_sha) DO UPDATE SET label = excluded.label",
                (repo, commit, label, self._now()),
            )
            await c.execute("INSERT INTO changelog(at, kind, key) VALUES (?, 'pin', ?)", (self._now(), f"{repo}:{commit}"))

    async def unpin(self, repo: int, commit: str) -> bool:
        async with self.db.transaction() as c:
            cur = await c.execute("DELETE FROM pins WHERE repo = ? AND commit_sha = ?", (repo, commit))
            removed = cur.rowcount > 0
            if removed:
                await c.execute("INSERT INTO changelog(at, kind, key) VALUES (?, 'unpin', ?)", (self._now(), f"{repo}:{commit}"))
        return removed

    async def pins_of(self, repo: int) -> list[Pin]:
        rows = await self.db.fetchall(
            "SELECT repo, commit_sha, label, created_at FROM pins WHERE repo = ? ORDER BY created_at", (repo,)
        )
        return [Pin(r["repo"], r["commit_sha"], r["label"], r["created_at"]) for r in rows]

    async def all(self) -> list[Pin]:
        rows = await self.db.fetchall("SELECT repo, commit_sha, label, created_at FROM pins ORDER BY repo, created_at")
        return [Pin(r["repo"], r["commit_sha"], r["label"], r["created_at"]) for r in rows]
