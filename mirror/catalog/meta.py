"""Small catalog tables: counters (bytes fetched, served...), trusted keys, access times.

    counters(name PK, value)
    trusted_keys(public_key PK, label, added_at)
    revoked_keys(public_key PK, revoked_at)
    access(repo, commit_sha, last_access, hits)

Access is recorded in memory and flushed in one transaction (`flush_access`), so serving
a file never writes to SQLite on the request path.
"""

from __future__ import annotations

from typing import Callable

from mirror.catalog.db import Database


class MetaCatalog:
    def __init__(self, db: Database, now: Callable[[], float]) -> None:
        self.db = db
        self._now = now
        self._pending_counters: dict[str, int] = {}
        self._pending_access: dict[tuple[int, str], tuple[float, int]] = {}

    # --- counters ------------------------------------------------------------------------

    def bump(self, name: str, amount: int = 1) -> None:
        self._pending_counters[name] = self._pending_counters.get(name, 0) + amount

    async def counters(self) -> dict[str, int]:
        rows = await self.db.fetchall("SELECT name, value FROM counters")
        out = {r["name"]: r["value"] for r in rows}
        for k, v in self._pending_counters.items():
            out[k] = out.get(k, 0) + v
        return out

    # --- access --------------------------------------------------------------------------

    def touch(self, repo: int, commit_sha: str) -> None:
        key = (repo, commit_sha)
        _, hits = self._pending_access.get(key, (0.0, 0))
        self._pending_access[key] = (self._now(), hits + 1)

    async def flush(self) -> None:
        counters, self._pending_counters = self._pending_counters, {}
        access, self._pending_access = self._pending_access, {}
        if not counters and not access:
            return
        try:
            await self._write(counters, access)
        except BaseException:
            # Keep what could not be written (a full disk): the next flush retries it.
            for k, v in counters.items():
                self._pending_counters[k] = self._pending_counters.get(k, 0) + v
            for key, (t, h) in access.items():
                old = self._pending_access.get(key)
                self._pending_access[key] = (max(t, old[0]), h + old[1]) if old else (t, h)
            raise

    async def _write(self, counters: dict[str, int], access: dict[tuple[int, str], tuple[float, int]]) -> None:
        async with self.db.transaction() as c:
            await c.executemany(
                "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                list(counters.items()),
            )
            await c.executemany(
                "INSERT INTO access(repo, commit_sha, last_access, hits) VALUES (?,?,?,?) "
                "ON CONFLICT(repo, commit_sha) DO UPDATE SET last_access = MAX(last_access, excluded.last_access), "
                "hits = hits + excluded.hits",
                [(r, s, t, h) for (r, s), (t, h) in access.items()],
            )

    async def access_of(self, repo: int) -> dict[str, tuple[float, int]]:
        rows = await self.db.fetchall("SELECT commit_sha, last_access, hits FROM access WHERE repo = ?", (repo,))
        return {r["commit_sha"]: (r["last_access"], r["hits"]) for r in rows}

    # --- trusted keys ----------------------------------------------------------------------

    async def trusted(self) -> dict[str, str]:
        """Trusted keys and their labels (never a revoked one)."""
        rows = await self.db.fetchall(
            "SELECT public_key, label FROM trusted_keys WHERE public_key NOT IN (SELECT public_key FROM revoked_keys) "
            "ORDER BY added_at"
        )
        return {r["public_key"]: r["label"] for r in rows}

    async def trust(self, public_key: str, label: str = "") -> None:
        """Trust a key (an explicit trust lifts an earlier revocation)."""
        async with self.db.transaction() as c:
            await c.execute("DELETE FROM revoked_keys WHERE public_key = ?", (public_key,))
            await c.execute(
                "INSERT OR REPLACE INTO trusted_keys(public_key, label, added_at) VALUES (?,?,?)", (public_key, label, self._now())
            )

    async def revoke(self, public_key: str) -> bool:
        """Refuse a key from now on (as a peer and as a signer), whatever trusts it.
        Returns False when it was revoked already."""
        async with self.db.transaction() as c:
            cur = await c.execute(
                "INSERT INTO revoked_keys(public_key, revoked_at) VALUES (?, ?) ON CONFLICT(public_key) DO NOTHING",
                (public_key, self._now()),
            )
            fresh = cur.rowcount > 0
            await c.execute("DELETE FROM trusted_keys WHERE public_key = ?", (public_key,))
        return fresh

    async def revoked(self) -> dict[str, float]:
        rows = await self.db.fetchall("SELECT public_key, revoked_at FROM revoked_keys ORDER BY revoked_at")
        return {r["public_key"]: r["revoked_at"] for r in rows}
