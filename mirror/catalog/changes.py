"""The changelog as peers read it, and replication progress.

    changelog(serial, at, kind, key)         written by the other catalog parts
    replication(source, serial, updated_at)  what `mirror sync --from` applied

`since(serial)` answers a peer's "what changed after serial N" with repo keys resolved
(the changelog names repos by their local row id). Serial 0 asks for everything: it is
answered from the tables (every ref and every listed commit) rather than the log, so a
data directory older than the 'listing' log entries replicates whole.
"""

from __future__ import annotations

from typing import Any, Callable

from mirror.catalog.db import Database

Change = dict[str, Any]


class ChangeCatalog:
    def __init__(self, db: Database, now: Callable[[], float]) -> None:
        self.db = db
        self._now = now

    async def latest(self) -> int:
        row = await self.db.fetchone("SELECT COALESCE(MAX(serial), 0) AS s FROM changelog")
        return int(row["s"]) if row else 0

    async def since(self, serial: int, limit: int) -> tuple[int, list[Change], bool]:
        """(latest serial covered, changes after `serial`, whether more follow)."""
        if serial <= 0:
            return await self._snapshot()
        rows = await self.db.fetchall(
            "SELECT serial, kind, key FROM changelog WHERE serial > ? AND kind IN ('ref', 'listing', 'manifest', 'manifest-deleted') "
            "ORDER BY serial LIMIT ?",
            (serial, limit + 1),
        )
        more = len(rows) > limit
        rows = rows[:limit]
        repos = await self._repo_keys()
        out: list[Change] = []
        for r in rows:
            kind, key = r["kind"], r["key"]
            change: Change = {"serial": r["serial"], "kind": kind}
            if kind == "ref":
                repo, rest = key.split(":", 1)
                name, sha = rest.rsplit(":", 1)
                if int(repo) not in repos:
                    continue
                change.update(repos[int(repo)], ref=name, commit=sha)
            elif kind == "listing":
                repo, sha = key.split(":", 1)
                if int(repo) not in repos:
                    continue
                change.update(repos[int(repo)], commit=sha)
            else:
                change["identity"] = key
            out.append(change)
        last = rows[-1]["serial"] if rows else max(serial, 0)
        if not more:
            last = max(last, await self.latest())
        return last, out, more

    async def _snapshot(self) -> tuple[int, list[Change], bool]:
        latest = await self.latest()
        repos = await self._repo_keys()
        out: list[Change] = []
        for r in await self.db.fetchall("SELECT repo, sha FROM commits WHERE listed_at IS NOT NULL ORDER BY created_at"):
            if r["repo"] in repos:
                out.append({"serial": latest, "kind": "listing", **repos[r["repo"]], "commit": r["sha"]})
        for r in await self.db.fetchall("SELECT repo, name, commit_sha FROM refs ORDER BY repo, name"):
            if r["repo"] in repos:
                out.append({"serial": latest, "kind": "ref", **repos[r["repo"]], "ref": r["name"], "commit": r["commit_sha"]})
        return latest, out, False

    async def _repo_keys(self) -> dict[int, dict[str, str]]:
        rows = await self.db.fetchall("SELECT id, repo_type, repo_id FROM repos")
        return {r["id"]: {"repo_type": r["repo_type"], "repo_id": r["repo_id"]} for r in rows}

    # --- replication progress --------------------------------------------------------

    async def applied(self, source: str) -> int:
        row = await self.db.fetchone("SELECT serial FROM replication WHERE source = ?", (source,))
        return int(row["serial"]) if row else 0

    async def set_applied(self, source: str, serial: int) -> None:
        async with self.db.transaction() as c:
            await c.execute(
                "INSERT INTO replication(source, serial, updated_at) VALUES (?,?,?) "
                "ON CONFLICT(source) DO UPDATE SET serial = excluded.serial, updated_at = excluded.updated_at",
                (source, serial, self._now()),
            )
