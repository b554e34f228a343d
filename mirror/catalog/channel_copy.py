"""Copying channels between nodes of a site: the authority's side reads a page of its
releases, aliases and alias history (`export`), a follower writes one in a single
transaction (`apply`) and remembers where it is (`channel_follow`, migration 10).

A page holds the alias history events after the follower's event id and the releases
created after its changelog serial, oldest first and within a byte budget; the last
page of a pull (`more` false) also holds the state at that point: every alias row and
the index of every release (repo, name, commit), read in the same transaction as the
events, so the follower's aliases and history agree. The follower then

- inserts releases it lacks; a release it holds under the same name at another commit
  is a conflict (releases are immutable): reported, never overwritten;
- appends the events as they are (the authority's time, actor, action, reason, detail);
- replaces its aliases by the authority's rows (same salt and weight: the sticky split
  sends a client to the same side on every node); an alias made here before this node
  followed, unknown to the authority, is deleted with a history row saying why;
- deletes releases the authority no longer has (unless an alias still names one);
- moves its cursors, all in one transaction: a crash leaves the copy before or after.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import aiosqlite

from mirror.catalog.channels import (
    _ALIAS_COLS, _EVENT_COLS, _RELEASE_COLS, AliasEvent, AliasRow, Release, _alias, _event, _release,
)
from mirror.catalog.db import Database
from mirror.model import RepoKey

# Rough JSON bytes of a row besides its free-text and JSON columns.
_ROW_BYTES = 400


@dataclass(frozen=True, slots=True)
class Export:
    """One page of the authority's channels. `event` and `release_serial` are the
    cursors the next page starts after."""

    event: int
    release_serial: int
    events: list[AliasEvent]
    releases: list[Release]
    more: bool
    aliases: list[AliasRow] | None  # the state, on the last page only
    index: list[tuple[int, str, str]] | None  # (repo, name, commit) of every release, last page only
    repos: dict[int, RepoKey]


@dataclass(frozen=True, slots=True)
class Import:
    """A page as the follower applies it: rows with this node's repo ids."""

    event: int
    release_serial: int
    events: list[AliasEvent]
    releases: list[Release]
    aliases: list[AliasRow] | None
    index: set[tuple[int, str, str]] | None


@dataclass
class Applied:
    events: int = 0
    releases_added: list[Release] = field(default_factory=list)
    releases_removed: list[tuple[int, str]] = field(default_factory=list)
    aliases_changed: int = 0
    conflicts: list[tuple[int, str, str, str]] = field(default_factory=list)  # repo, name, theirs, ours
    stale: bool = False  # the cursors moved meanwhile (another writer): nothing written

    @property
    def serving_changed(self) -> bool:
        return bool(self.releases_added or self.releases_removed or self.aliases_changed)


@dataclass(frozen=True, slots=True)
class FollowState:
    authority: str
    authority_key: str
    event: int
    release_serial: int
    applied_at: float | None
    error: str
    error_at: float | None


def _size(*texts: str | None) -> int:
    return _ROW_BYTES + sum(len(t) for t in texts if t)


class ChannelCopy:
    def __init__(self, db: Database, now: Callable[[], float]) -> None:
        self.db = db
        self._now = now

    # --- the authority's side ---------------------------------------------------------

    async def export(self, after: int, release_after: int, *, max_events: int = 500, budget: int = 512 << 10) -> Export:
        """The page after (`after`, `release_after`): events and new releases within
        `budget` bytes (at least one row when any is due), and the state when no more
        follow. Cursors beyond this catalog's newest (a rebuilt authority) come back
        lowered to them, so the asker sees it and starts over."""
        async with self.db.snapshot() as c:  # one state: the aliases match the events
            cur = await c.execute(
                f"SELECT {_EVENT_COLS} FROM alias_events WHERE id > ? ORDER BY id LIMIT ?", (after, max_events + 1))
            rows = list(await cur.fetchall())
            await cur.close()
            events: list[AliasEvent] = []
            spent = 0
            for r in rows[:max_events]:
                cost = _size(r["reason"], r["detail"])
                if events and spent + cost > budget:
                    break
                events.append(_event(r))
                spent += cost
            more = len(events) < len(rows)
            cur = await c.execute("SELECT COALESCE(MAX(id), 0), (SELECT COALESCE(MAX(serial), 0) FROM changelog) "
                                  "FROM alias_events")
            newest_event, newest_serial = await cur.fetchone()  # type: ignore[misc]
            await cur.close()
            event = events[-1].id if events else min(after, newest_event)
            releases: list[Release] = []
            release_serial = min(release_after, newest_serial)
            rel_more = False
            if spent < budget:
                cur = await c.execute(
                    f"SELECT c.serial AS serial, {', '.join('r.' + k.strip() for k in _RELEASE_COLS.split(','))} "
                    "FROM changelog c JOIN releases r ON r.repo = CAST(substr(c.key, 1, instr(c.key, ':') - 1) AS INTEGER) "
                    "AND r.name = substr(c.key, instr(c.key, ':') + 1) "
                    "WHERE c.kind = 'release' AND c.serial > ? ORDER BY c.serial LIMIT ?", (release_after, max_events + 1))
                rel_rows = list(await cur.fetchall())
                await cur.close()
                for r in rel_rows[:max_events]:
                    cost = _size(r["params"], r["datasets"], r["meta"], r["note"])
                    if (events or releases) and spent + cost > budget:
                        rel_more = True
                        break
                    releases.append(_release(r))
                    release_serial = r["serial"]
                    spent += cost
                rel_more = rel_more or len(rel_rows) > max_events
                if not rel_more:
                    release_serial = newest_serial
            else:
                rel_more = True
            more = more or rel_more
            aliases: list[AliasRow] | None = None
            index: list[tuple[int, str, str]] | None = None
            if not more:
                cur = await c.execute(f"SELECT {_ALIAS_COLS} FROM aliases ORDER BY repo, name")
                aliases = [_alias(r) for r in await cur.fetchall()]
                await cur.close()
                cur = await c.execute("SELECT repo, name, commit_sha FROM releases ORDER BY repo, name")
                index = [(r["repo"], r["name"], r["commit_sha"]) for r in await cur.fetchall()]
                await cur.close()
            ids = {e.repo for e in events} | {r.repo for r in releases}
            ids |= {a.repo for a in aliases or ()} | {i[0] for i in index or ()}
            cur = await c.execute("SELECT id, repo_type, repo_id FROM repos WHERE id IN (SELECT value FROM json_each(?))",
                                  (json.dumps(sorted(ids)),))
            repos = {r["id"]: RepoKey(r["repo_type"], r["repo_id"]) for r in await cur.fetchall()}
            await cur.close()
        return Export(event, release_serial, events, releases, more, aliases, index, repos)

    # --- the follower's side ----------------------------------------------------------

    async def state(self, authority: str) -> FollowState | None:
        r = await self.db.fetchone("SELECT * FROM channel_follow WHERE authority = ?", (authority,))
        if r is None:
            return None
        return FollowState(r["authority"], r["authority_key"], r["event"], r["release_serial"], r["applied_at"],
                           r["error"], r["error_at"])

    async def all_states(self) -> list[FollowState]:
        rows = await self.db.fetchall("SELECT authority FROM channel_follow ORDER BY authority")
        return [s for r in rows if (s := await self.state(r["authority"])) is not None]

    async def note_error(self, authority: str, error: str) -> None:
        """Record why pulls fail now ('' clears it); called once per episode."""
        async with self.db.transaction() as c:
            await c.execute("INSERT INTO channel_follow(authority) VALUES (?) ON CONFLICT(authority) DO NOTHING",
                            (authority,))
            await c.execute("UPDATE channel_follow SET error = ?, error_at = ? WHERE authority = ?",
                            (error[:500], self._now() if error else None, authority))

    async def reset(self, authority: str) -> None:
        """Start the copy over (the authority's catalog was rebuilt: its ids restarted)."""
        await self.db.execute("UPDATE channel_follow SET event = 0, release_serial = 0 WHERE authority = ?", (authority,))

    async def apply(self, authority: str, authority_key: str, after: tuple[int, int], page: Import) -> Applied:
        """Write one page in one transaction, if the cursors are still `after`."""
        out = Applied()
        async with self.db.transaction() as c:
            cur = await c.execute("SELECT authority_key, event, release_serial, error FROM channel_follow "
                                  "WHERE authority = ?", (authority,))
            row = await cur.fetchone()
            await cur.close()
            held = (row["event"], row["release_serial"]) if row is not None and row["authority_key"] == authority_key else (0, 0)
            if held != after:
                out.stale = True
                return out
            now = self._now()
            for rel in page.releases:
                cur = await c.execute("SELECT commit_sha FROM releases WHERE repo = ? AND name = ?", (rel.repo, rel.name))
                mine = await cur.fetchone()
                await cur.close()
                if mine is None:
                    await c.execute(
                        f"INSERT INTO releases({_RELEASE_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (rel.repo, rel.name, rel.version, rel.commit, rel.author, rel.created_at,
                         json.dumps(rel.params, sort_keys=True), json.dumps(list(rel.datasets)),
                         json.dumps(rel.meta, sort_keys=True), rel.note))
                    await c.execute("INSERT INTO changelog(at, kind, key) VALUES (?, 'release', ?)",
                                    (now, f"{rel.repo}:{rel.name}"))
                    out.releases_added.append(rel)
                elif mine["commit_sha"] != rel.commit:
                    out.conflicts.append((rel.repo, rel.name, rel.commit, mine["commit_sha"]))
            for ev in page.events:
                await c.execute(
                    "INSERT INTO alias_events(repo, name, at, actor, action, from_sha, to_sha, canary_sha, weight, reason, "
                    "detail) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (ev.repo, ev.name, ev.at, ev.actor, ev.action, ev.from_sha, ev.to_sha, ev.canary, ev.weight, ev.reason,
                     json.dumps(ev.detail, sort_keys=True)))
                await c.execute("INSERT INTO changelog(at, kind, key) VALUES (?, 'alias', ?)", (now, f"{ev.repo}:{ev.name}"))
                out.events += 1
            if page.aliases is not None:
                out.aliases_changed = await _replace_aliases(c, page.aliases, authority, now)
            if page.index is not None:
                await _drop_releases(c, page.index, out)
            if (row is not None and row["authority_key"] == authority_key and not row["error"] and not _changed(out)
                    and held == (page.event, page.release_serial)):
                return out  # nothing new: no write
            await c.execute(
                "INSERT INTO channel_follow(authority, authority_key, event, release_serial, applied_at, error, error_at) "
                "VALUES (?,?,?,?,?,'',NULL) ON CONFLICT(authority) DO UPDATE SET authority_key = excluded.authority_key, "
                "event = excluded.event, release_serial = excluded.release_serial, error = '', error_at = NULL, "
                "applied_at = COALESCE(excluded.applied_at, channel_follow.applied_at)",
                (authority, authority_key, page.event, page.release_serial, now if _changed(out) else None))
        return out


def _changed(out: Applied) -> bool:
    return bool(out.events or out.serving_changed)


def _served(a: AliasRow) -> tuple[object, ...]:
    """An alias row's fields but its write time (the authority's bookkeeping included)."""
    return (a.commit, a.release, a.canary, a.canary_release, a.weight, json.dumps(a.plan, sort_keys=True), a.salt,
            a.started_at, a.next_at, a.failures, a.holding)


async def _replace_aliases(c: aiosqlite.Connection, rows: list[AliasRow], authority: str, now: float) -> int:
    cur = await c.execute(f"SELECT {_ALIAS_COLS} FROM aliases")
    mine = {(r["repo"], r["name"]): _alias(r) for r in await cur.fetchall()}
    await cur.close()
    theirs = {(a.repo, a.name): a for a in rows}
    changed = 0
    for key in sorted(mine.keys() - theirs.keys()):
        await c.execute("DELETE FROM aliases WHERE repo = ? AND name = ?", key)
        changed += 1
        # An alias the authority deleted ends with its copied "delete" row; one it never
        # had (made here before this node followed it) gets one, so `alias at` stays true.
        cur = await c.execute("SELECT to_sha FROM alias_events WHERE repo = ? AND name = ? ORDER BY id DESC LIMIT 1", key)
        last = await cur.fetchone()
        await cur.close()
        if last is not None and last["to_sha"] is None:
            continue
        await c.execute(
            "INSERT INTO alias_events(repo, name, at, actor, action, from_sha, to_sha, canary_sha, weight, reason, detail) "
            "VALUES (?,?,?,?,'delete',?,NULL,NULL,0,?,?)",
            (*key, now, f"follow:{authority}", mine[key].commit,
             f"not an alias at the authority {authority}, which this node follows", json.dumps({"authority": authority})))
    for key, a in theirs.items():
        if key in mine and _served(mine[key]) == _served(a):
            continue
        await c.execute(
            f"INSERT OR REPLACE INTO aliases({_ALIAS_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (a.repo, a.name, a.commit, a.release, a.canary, a.canary_release, a.weight,
             json.dumps(a.plan, sort_keys=True) if a.plan is not None else None, a.salt, a.started_at, a.next_at,
             a.failures, a.holding, a.updated_at))
        changed += 1
    return changed


async def _drop_releases(c: aiosqlite.Connection, index: set[tuple[int, str, str]], out: Applied) -> None:
    """Delete releases the authority no longer has; report those it has at another commit."""
    theirs = {(repo, name): commit for repo, name, commit in index}
    cur = await c.execute("SELECT repo, name, commit_sha FROM releases")
    mine = [(r["repo"], r["name"], r["commit_sha"]) for r in await cur.fetchall()]
    await cur.close()
    for repo, name, commit in mine:
        other = theirs.get((repo, name))
        if other is not None:
            if other != commit:
                out.conflicts.append((repo, name, other, commit))
            continue
        cur = await c.execute(
            "SELECT 1 FROM aliases WHERE repo = ? AND (release = ? OR canary_release = ?)", (repo, name, name))
        named = await cur.fetchone()
        await cur.close()
        if named is None:
            await c.execute("DELETE FROM releases WHERE repo = ? AND name = ?", (repo, name))
            out.releases_removed.append((repo, name))
