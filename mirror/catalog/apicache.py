"""Last known upstream answers of pass-through API calls (refs, commit lists).

    api_cache(key PK, repo, body, link_next, fetched_at)

Keys are the upstream path and query; bodies are JSON text with xet hints removed.
"""

from __future__ import annotations

from typing import Callable

from mirror.catalog.db import Database


class ApiCache:
    def __init__(self, db: Database, now: Callable[[], float]) -> None:
        self.db = db
        self._now = now

    async def put(self, key: str, repo: int | None, body: str, link_next: str | None) -> None:
        async with self.db.transaction() as c:
            await c.execute(
                "INSERT OR REPLACE INTO api_cache(key, repo, body, link_next, fetched_at) VALUES (?,?,?,?,?)",
                (key, repo, body, link_next, self._now()),
            )

    async def get(self, key: str) -> tuple[str, str | None, float] | None:
        row = await self.db.fetchone("SELECT body, link_next, fetched_at FROM api_cache WHERE key = ?", (key,))
        return (row["body"], row["link_next"], row["fetched_at"]) if row else None
