"""Catalog facts of releases and channels (tables of migration 9, schema_channels.py):
releases, aliases, the alias history and the webhook outbox.

Every alias change is one transaction that reads the alias row, lets the caller's pure
function decide (channels/aliases.py), writes the new row, appends the history row and
queues the webhook announcement: a crash leaves the old state or the new one with its
history and announcement, never half. Two processes changing one alias (the daemon's
canary controller and a CLI command) serialise on SQLite's write lock, and each decides
on the row as it is inside its transaction.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from mirror.catalog.db import Database
from mirror.errors import Conflict

_RELEASE_COLS = "repo, name, version, commit_sha, author, created_at, params, datasets, meta, note"
_ALIAS_COLS = ("repo, name, commit_sha, release, canary_sha, canary_release, weight, plan, salt, started_at, next_at, "
               "failures, holding, updated_at")
_EVENT_COLS = "id, repo, name, at, actor, action, from_sha, to_sha, canary_sha, weight, reason, detail"


@dataclass(frozen=True, slots=True)
class Release:
    repo: int
    name: str
    version: str
    commit: str
    author: str
    created_at: float
    params: dict[str, Any] = field(default_factory=dict)
    datasets: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True, slots=True)
class AliasRow:
    repo: int
    name: str
    commit: str  # the stable target
    release: str = ""
    canary: str | None = None  # the canary target
    canary_release: str = ""
    weight: float = 0.0  # percent of clients on the canary
    plan: dict[str, Any] | None = None
    salt: str = ""
    started_at: float | None = None
    next_at: float | None = None
    failures: int = 0
    holding: str = ""
    updated_at: float = 0.0

    def without_canary(self, **changes: Any) -> "AliasRow":
        return replace(self, canary=None, canary_release="", weight=0.0, plan=None, salt="", started_at=None,
                       next_at=None, failures=0, holding="", **changes)


@dataclass(frozen=True, slots=True)
class AliasEvent:
    id: int
    repo: int
    name: str
    at: float
    actor: str
    action: str
    from_sha: str | None
    to_sha: str | None
    canary: str | None
    weight: float
    reason: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Change:
    """What an alias change writes: the new row (None deletes the alias), the history
    row's fields, and the announcement (None: nothing to announce)."""

    row: AliasRow | None
    action: str
    actor: str
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    announce: dict[str, Any] | None = None
    history: bool = True  # False: a bookkeeping write (the controller's next look), no history row


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    at: float
    event: str
    body: str
    attempts: int
    next_at: float
    last_error: str
    delivered_at: float | None
    failed_at: float | None


def _release(r: sqlite3.Row) -> Release:
    return Release(r["repo"], r["name"], r["version"], r["commit_sha"], r["author"], r["created_at"],
                   json.loads(r["params"]), tuple(json.loads(r["datasets"])), json.loads(r["meta"]), r["note"])


def _alias(r: sqlite3.Row) -> AliasRow:
    return AliasRow(r["repo"], r["name"], r["commit_sha"], r["release"], r["canary_sha"], r["canary_release"],
                    r["weight"], json.loads(r["plan"]) if r["plan"] else None, r["salt"], r["started_at"],
                    r["next_at"], r["failures"], r["holding"], r["updated_at"])


def _event(r: sqlite3.Row) -> AliasEvent:
    return AliasEvent(r["id"], r["repo"], r["name"], r["at"], r["actor"], r["action"], r["from_sha"], r["to_sha"],
                      r["canary_sha"], r["weight"], r["reason"], json.loads(r["detail"]))


def _outbox(r: sqlite3.Row) -> OutboxItem:
    return OutboxItem(r["id"], r["at"], r["event"], r["body"], r["attempts"], r["next_at"], r["last_error"],
                      r["delivered_at"], r["failed_at"])


class ChannelCatalog:
    def __init__(self, db: Database, now: Callable[[], float]) -> None:
        self.db = db
        self._now = now

    # --- releases ---------------------------------------------------------------------

    async def create_release(self, rel: Release) -> None:
        try:
            async with self.db.transaction() as c:
                await c.execute(
                    f"INSERT INTO releases({_RELEASE_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (rel.repo, rel.name, rel.version, rel.commit, rel.author, rel.created_at,
                     json.dumps(rel.params, sort_keys=True), json.dumps(list(rel.datasets)),
                     json.dumps(rel.meta, sort_keys=True), rel.note),
                )
                await c.execute("INSERT INTO changelog(at, kind, key) VALUES (?, 'release', ?)",
                                (self._now(), f"{rel.repo}:{rel.name}"))
        except sqlite3.IntegrityError:
            raise Conflict(f"release {rel.name} exists; releases are immutable (create a new version)") from None

    async def release(self, repo: int, name: str) -> Release | None:
        row = await self.db.fetchone(f"SELECT {_RELEASE_COLS} FROM releases WHERE repo = ? AND name = ?", (repo, name))
        return _release(row) if row is not None else None

    async def releases(self, repo: int | None = None) -> list[Release]:
        if repo is None:
            rows = await self.db.fetchall(f"SELECT {_RELEASE_COLS} FROM releases ORDER BY repo, created_at, name")
        else:
            rows = await self.db.fetchall(f"SELECT {_RELEASE_COLS} FROM releases WHERE repo = ? ORDER BY created_at, name",
                                          (repo,))
        return [_release(r) for r in rows]

    async def delete_release(self, repo: int, name: str) -> bool:
        try:
            async with self.db.transaction() as c:
                cur = await c.execute("DELETE FROM releases WHERE repo = ? AND name = ?", (repo, name))
                return cur.rowcount > 0
        except sqlite3.IntegrityError:
            raise Conflict(f"release {name} is named by an alias; move the alias first") from None

    # --- aliases ----------------------------------------------------------------------

    async def alias(self, repo: int, name: str) -> AliasRow | None:
        row = await self.db.fetchone(f"SELECT {_ALIAS_COLS} FROM aliases WHERE repo = ? AND name = ?", (repo, name))
        return _alias(row) if row is not None else None

    async def aliases(self, repo: int | None = None) -> list[AliasRow]:
        if repo is None:
            rows = await self.db.fetchall(f"SELECT {_ALIAS_COLS} FROM aliases ORDER BY repo, name")
        else:
            rows = await self.db.fetchall(f"SELECT {_ALIAS_COLS} FROM aliases WHERE repo = ? ORDER BY name", (repo,))
        return [_alias(r) for r in rows]

    async def canaries(self) -> list[AliasRow]:
        rows = await self.db.fetchall(f"SELECT {_ALIAS_COLS} FROM aliases WHERE canary_sha IS NOT NULL ORDER BY repo, name")
        return [_alias(r) for r in rows]

    async def change_alias(self, repo: int, name: str, decide: Callable[[AliasRow | None], Change | None]) -> Change | None:
        """Read the alias, let `decide` (pure, may raise) say what changes, and write it
        with its history row and announcement, in one transaction. None: no change."""
        async with self.db.transaction() as c:
            cur = await c.execute(f"SELECT {_ALIAS_COLS} FROM aliases WHERE repo = ? AND name = ?", (repo, name))
            found = await cur.fetchone()
            await cur.close()
            before = _alias(found) if found is not None else None
            change = decide(before)
            if change is None:
                return None
            row = change.row
            now = self._now()
            if row is None:
                await c.execute("DELETE FROM aliases WHERE repo = ? AND name = ?", (repo, name))
            else:
                await c.execute(
                    f"INSERT OR REPLACE INTO aliases({_ALIAS_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (row.repo, row.name, row.commit, row.release, row.canary, row.canary_release, row.weight,
                     json.dumps(row.plan, sort_keys=True) if row.plan is not None else None, row.salt, row.started_at,
                     row.next_at, row.failures, row.holding, now),
                )
            if not change.history:
                return change
            await c.execute(
                "INSERT INTO alias_events(repo, name, at, actor, action, from_sha, to_sha, canary_sha, weight, reason, "
                "detail) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (repo, name, now, change.actor, change.action, before.commit if before else None,
                 row.commit if row else None, row.canary if row else None, row.weight if row else 0.0,
                 change.reason, json.dumps(change.detail, sort_keys=True)),
            )
            await c.execute("INSERT INTO changelog(at, kind, key) VALUES (?, 'alias', ?)", (now, f"{repo}:{name}"))
            if change.announce is not None:
                await c.execute(
                    "INSERT INTO webhook_outbox(at, event, body, next_at) VALUES (?,?,?,?)",
                    (now, change.action, json.dumps(change.announce, sort_keys=True), now),
                )
            return change

    # --- history ----------------------------------------------------------------------

    async def history(self, repo: int, name: str, limit: int = 1000) -> list[AliasEvent]:
        """Newest first."""
        rows = await self.db.fetchall(
            f"SELECT {_EVENT_COLS} FROM alias_events WHERE repo = ? AND name = ? ORDER BY id DESC LIMIT ?",
            (repo, name, limit),
        )
        return [_event(r) for r in rows]

    async def event_at(self, repo: int, name: str, at: float) -> AliasEvent | None:
        """The last change at or before `at` (what the alias served then)."""
        row = await self.db.fetchone(
            f"SELECT {_EVENT_COLS} FROM alias_events WHERE repo = ? AND name = ? AND at <= ? ORDER BY at DESC, id DESC "
            "LIMIT 1",
            (repo, name, at),
        )
        return _event(row) if row is not None else None

    async def generation(self) -> tuple[int, int]:
        """Changes so far (the newest history row, releases plus their deletions): a
        process that caches aliases and releases reloads when this moves."""
        row = await self.db.fetchone(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM alias_events) AS ev, "
            "(SELECT COALESCE(MAX(serial), 0) FROM changelog WHERE kind = 'release') AS rel, "
            "(SELECT COUNT(*) FROM releases) AS n"
        )
        assert row is not None
        return int(row["ev"]), int(row["rel"]) * 1_000_003 + int(row["n"])

    async def pinned(self) -> set[tuple[int, str]]:
        """(repo, commit) of every release and every alias target, both canary sides."""
        rows = await self.db.fetchall(
            "SELECT repo, commit_sha FROM releases UNION SELECT repo, commit_sha FROM aliases "
            "UNION SELECT repo, canary_sha FROM aliases WHERE canary_sha IS NOT NULL"
        )
        return {(r["repo"], r["commit_sha"]) for r in rows}

    # --- the webhook outbox -------------------------------------------------------------

    async def enqueue(self, event: str, body: str) -> int:
        """Queue an announcement that is no alias change (`mirror webhook test`); its id."""
        now = self._now()
        async with self.db.transaction() as c:
            cur = await c.execute("INSERT INTO webhook_outbox(at, event, body, next_at) VALUES (?,?,?,?)",
                                  (now, event, body, now))
            assert cur.lastrowid is not None
            return cur.lastrowid

    async def due(self, now: float, limit: int = 20) -> list[OutboxItem]:
        rows = await self.db.fetchall(
            "SELECT * FROM webhook_outbox WHERE delivered_at IS NULL AND failed_at IS NULL AND next_at <= ? "
            "ORDER BY id LIMIT ?",
            (now, limit),
        )
        return [_outbox(r) for r in rows]

    async def outbox(self, limit: int = 100) -> list[OutboxItem]:
        rows = await self.db.fetchall("SELECT * FROM webhook_outbox ORDER BY id DESC LIMIT ?", (limit,))
        return [_outbox(r) for r in rows]

    async def delivered(self, item_id: int, attempts: int) -> None:
        await self.db.execute("UPDATE webhook_outbox SET delivered_at = ?, attempts = ?, last_error = '' WHERE id = ?",
                              (self._now(), attempts, item_id))

    async def retry(self, item_id: int, attempts: int, next_at: float, error: str) -> None:
        await self.db.execute("UPDATE webhook_outbox SET attempts = ?, next_at = ?, last_error = ? WHERE id = ?",
                              (attempts, next_at, error[:500], item_id))

    async def give_up(self, item_id: int, attempts: int, error: str) -> None:
        await self.db.execute("UPDATE webhook_outbox SET attempts = ?, failed_at = ?, last_error = ? WHERE id = ?",
                              (attempts, self._now(), error[:500], item_id))
