"""Channels: aliases (prod -> a commit), their history and rollback, and canaries as
people drive them (start, promote, abort). The canary controller (canary.py) drives the
automatic part through the same catalog path.

Every change is one `ChannelCatalog.change_alias` transaction (row, history row, webhook
announcement), then the alias table's stamp moves so every serving process sees it on
its next request (table.py). The history row holds the state *after* the change, so
`at(T)` is a look-up and `rollback` is a walk back over it:

    set A, set B, set C, rollback (-> B), rollback (-> A)

A rollback undoes the newest forward change not yet undone; with a canary running it
rolls the canary back instead (the stable side never moved).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable

from mirror.admin.revisions import local_commit
from mirror.audit.log import AuditLog
from mirror.caller import ANONYMOUS, Caller
from mirror.catalog import Catalog
from mirror.catalog.channels import AliasEvent, AliasRow, Change
from mirror.channels.metrics import check_name
from mirror.channels.names import alias_name
from mirror.channels.plan import CanaryPlan
from mirror.channels.shadow import Unknown, UpstreamNames
from mirror.channels.split import canary_salt
from mirror.channels.table import AliasTable
from mirror.channels.webhook import announcement
from mirror.clock import Clock
from mirror.errors import AliasNotFound, BadRequest, Conflict, RepoNotFound, RevisionNotFound
from mirror.model import RepoKey
from mirror.resolve.metadata import Metadata

# Actions that move the stable target forward (undone by a rollback).
FORWARD = ("set", "canary-promote")
STABLE_MOVES = ("set", "canary-promote", "rollback")


@dataclass(frozen=True, slots=True)
class Target:
    repo: int
    commit: str
    release: str = ""  # the release name the revision named, if any


class Channels:
    def __init__(self, catalog: Catalog, table: AliasTable, metadata: Metadata, upstream_names: UpstreamNames,
                 clock: Clock, node_key: str, audit: AuditLog, wake: Callable[[], None] = lambda: None,
                 announcing: bool = False, keep_hot: Callable[[int, str], Awaitable[bool]] | None = None,
                 follows: str = "") -> None:
        self.catalog = catalog
        self.keep_hot = keep_hot  # thaws an archived revision a name now points at (lifecycle)
        self.follows = follows.rstrip("/")  # `[channels] authority`: that node decides, this one copies
        self.announcing = announcing
        self.audit = audit
        self.table = table
        self.metadata = metadata
        self.upstream_names = upstream_names
        self.clock = clock
        self.node_key = node_key
        self.wake = wake  # the webhook's deliverer, when this process runs one

    # --- naming revisions -------------------------------------------------------------------

    async def repo(self, key: RepoKey) -> int:
        repo = await self.catalog.repos.repo_id(key, create=False)
        if repo is None:
            raise RepoNotFound(f"{key} is not in this mirror (pull it, or name it once through the mirror)")
        return repo

    async def target(self, key: RepoKey, rev: str | None, caller: Caller, *, online: bool = True) -> Target:
        """The commit a revision names: an alias (its stable side), a release, a commit or
        a branch or tag known here; else, `online`, upstream's answer. The commit's info
        and listing are fetched now, so the alias resolves later with upstream down."""
        repo = await self.catalog.repos.repo_id(key, create=False)
        if repo is not None and rev:
            row = await self.catalog.channels.alias(repo, rev)
            if row is not None:
                return Target(repo, row.commit, row.release)
            rel = await self.catalog.channels.release(repo, rev)
            if rel is not None:
                return Target(repo, rel.commit, rel.name)
        if repo is not None:
            try:
                _repo, local = await local_commit(self.catalog, key, rev)
            except (RepoNotFound, RevisionNotFound):
                local = None
            if local is not None and await self.catalog.repos.get_listing(repo, local) is not None:
                return Target(repo, local)
        if not online:
            raise RevisionNotFound(f"{key}@{rev or 'main'} is not known to this mirror (pull it first)")
        res, _info = await self.metadata.resolve(key, rev, caller)
        await self.metadata.listing(res, caller)
        return Target(res.repo, res.commit)

    async def version_of(self, key: RepoKey, rev: str | None, client_key: str = "") -> tuple[int, str]:
        """(repo row id, commit) of a revision a metric report or query names, never
        asking upstream. An alias names its stable commit, except for a report made for a
        client (`client_key`): with a canary running, the value belongs to the side that
        client is served (the same sticky split)."""
        if rev and client_key:
            repo = await self.catalog.repos.repo_id(key, create=False)
            pick = await self.table.pick(repo, rev, client_key) if repo is not None else None
            if pick is not None and repo is not None:
                return repo, pick.commit
        target = await self.target(key, rev, ANONYMOUS, online=False)
        return target.repo, target.commit

    async def check_shadow(self, key: RepoKey, name: str, caller: Caller, force: bool) -> None:
        """Refuse a local name upstream also uses (a branch or tag), unless forced."""
        if force:
            return
        try:
            names = await self.upstream_names.names(key, caller)
        except Unknown as exc:
            raise Conflict(f"{exc.message}, so {name!r} may shadow an upstream branch or tag; use --force to create "
                           f"it anyway") from None
        if name in names:
            raise Conflict(f"{name!r} is a branch or tag of {key} upstream; a local {name!r} would shadow it "
                           f"(use --force to shadow it on purpose)")

    # --- reading ----------------------------------------------------------------------------

    async def get(self, key: RepoKey, name: str) -> AliasRow:
        row = await self.catalog.channels.alias(await self.repo(key), name)
        if row is None:
            raise AliasNotFound(f"{key} has no alias {name!r} (mirror alias list {key})")
        return row

    async def list_aliases(self, key: RepoKey) -> list[AliasRow]:
        return await self.catalog.channels.aliases(await self.repo(key))

    async def history(self, key: RepoKey, name: str, limit: int = 1000) -> list[AliasEvent]:
        repo = await self.repo(key)
        events = await self.catalog.channels.history(repo, name, limit)
        if not events:
            raise AliasNotFound(f"{key} has no alias {name!r} and never had one")
        return events

    async def at(self, key: RepoKey, name: str, when: float) -> AliasEvent | None:
        """The state the alias was in at `when` (None: it did not exist yet)."""
        await self.history(key, name, 1)  # a name that never existed is an error, not "nothing"
        ev = await self.catalog.channels.event_at(await self.repo(key), name, when)
        return ev if ev is not None and ev.to_sha is not None else None

    # --- changing -----------------------------------------------------------------------------

    def refuse_if_following(self) -> None:
        """Conflict on a node that follows an authority: its releases and aliases are
        the authority's copy (channels/follow.py), changed there only."""
        if self.follows:
            raise Conflict(f"this node follows {self.follows} ([channels] authority); change aliases and releases "
                           f"there")

    async def set(self, key: RepoKey, name: str, rev: str, caller: Caller, *, reason: str, force: bool = False) -> Change | None:
        self.refuse_if_following()
        alias_name(name)
        _need_reason(reason)
        target = await self.target(key, rev, caller)
        if await self.catalog.channels.release(target.repo, name) is not None:
            raise Conflict(f"{name!r} is a release of {key}; an alias cannot take a release's name")
        current = await self.catalog.channels.alias(target.repo, name)
        if current is None:
            await self.check_shadow(key, name, caller, force)

        def decide(row: AliasRow | None) -> Change | None:
            if row is not None and row.canary is not None:
                raise Conflict(f"a canary is running on {name} ({row.weight:g}% to {row.canary[:12]}); "
                               f"promote or abort it first")
            if row is not None and row.commit == target.commit and row.release == target.release:
                return None
            new = AliasRow(target.repo, name, target.commit, target.release, salt="", updated_at=self.clock.now())
            return self.make_change(key, row, new, "set", caller.actor, reason, {"revision": rev})

        return await self.apply(target.repo, name, decide)

    async def rollback(self, key: RepoKey, name: str, caller: Caller, *, reason: str) -> Change:
        self.refuse_if_following()
        _need_reason(reason)
        repo = await self.repo(key)
        events = await self.catalog.channels.history(repo, name)
        previous = _previous_target(events)

        def decide(row: AliasRow | None) -> Change | None:
            if row is None:
                raise AliasNotFound(f"{key} has no alias {name!r}")
            if row.canary is not None:
                return self.make_change(key, row, row.without_canary(), "canary-rollback", caller.actor, reason,
                                    {"canary": row.canary, "weight": row.weight, "manual": True})
            if previous is None:
                raise Conflict(f"{key} {name} has no earlier target to roll back to")
            release = _release_then(events, previous)
            new = replace(row, commit=previous, release=release)
            return self.make_change(key, row, new, "rollback", caller.actor, reason, {"undone": row.commit})

        change = await self.apply(repo, name, decide)
        assert change is not None
        return change

    async def delete(self, key: RepoKey, name: str, caller: Caller, *, reason: str) -> Change:
        self.refuse_if_following()
        _need_reason(reason)
        repo = await self.repo(key)

        def decide(row: AliasRow | None) -> Change | None:
            if row is None:
                raise AliasNotFound(f"{key} has no alias {name!r}")
            return self.make_change(key, row, None, "delete", caller.actor, reason, {})

        change = await self.apply(repo, name, decide)
        assert change is not None
        return change

    async def canary(self, key: RepoKey, name: str, rev: str, plan: CanaryPlan, caller: Caller, *, reason: str = "") -> Change:
        self.refuse_if_following()
        for gate in plan.gates:
            check_name(gate.metric, builtin_ok=True)
        target = await self.target(key, rev, caller)

        def decide(row: AliasRow | None) -> Change | None:
            if row is None:
                raise AliasNotFound(f"{key} has no alias {name!r}; set it first (mirror alias set)")
            if row.canary is not None:
                raise Conflict(f"a canary is already running on {name} ({row.weight:g}% to {row.canary[:12]})")
            if row.commit == target.commit:
                raise BadRequest(f"{name} already serves {target.commit[:12]}")
            now = self.clock.now()
            new = replace(row, canary=target.commit, canary_release=target.release, weight=plan.start,
                          plan=plan.to_json(), salt=canary_salt(key, name, target.commit, now), started_at=now, next_at=now + plan.every,
                          failures=0, holding="")
            return self.make_change(key, row, new, "canary-start", caller.actor, reason or f"canary {plan.start:g}%",
                                {"plan": plan.to_json(), "revision": rev})

        change = await self.apply(target.repo, name, decide)
        assert change is not None
        return change

    async def promote(self, key: RepoKey, name: str, caller: Caller, *, reason: str = "") -> Change:
        return await self._end_canary(key, name, caller, "canary-promote", reason or "promoted by hand")

    async def abort(self, key: RepoKey, name: str, caller: Caller, *, reason: str = "") -> Change:
        return await self._end_canary(key, name, caller, "canary-abort", reason or "aborted by hand")

    async def _end_canary(self, key: RepoKey, name: str, caller: Caller, action: str, reason: str) -> Change:
        self.refuse_if_following()
        repo = await self.repo(key)

        def decide(row: AliasRow | None) -> Change | None:
            if row is None:
                raise AliasNotFound(f"{key} has no alias {name!r}")
            if row.canary is None:
                raise Conflict(f"no canary is running on {key} {name}")
            if action == "canary-promote":
                new = row.without_canary(commit=row.canary, release=row.canary_release)
            else:
                new = row.without_canary()
            return self.make_change(key, row, new, action, caller.actor, reason, {"canary": row.canary, "weight": row.weight})

        change = await self.apply(repo, name, decide)
        assert change is not None
        return change

    # --- the one write path ---------------------------------------------------------------------

    async def apply(self, repo: int, name: str, decide: Callable[[AliasRow | None], Change | None]) -> Change | None:
        """The one write path: decide inside the catalog's transaction, then audit,
        move the stamp and wake the webhook. Announcements are queued only when this
        node announces (a webhook is configured), so the outbox never fills for nobody.
        A follower refuses it: its aliases change only by copy."""
        self.refuse_if_following()
        made: list[Change] = []

        def decided(row: AliasRow | None) -> Change | None:
            change = decide(row)
            if change is None:
                return None
            made.append(change)
            return change if self.announcing else replace(change, announce=None)

        written = await self.catalog.channels.change_alias(repo, name, decided)
        if written is None:
            return None
        change = made[-1]
        if change.history:  # bookkeeping writes change nothing served
            body = change.announce or {}
            self.audit.record(change.actor, f"alias.{change.action}", f"{body.get('repo', repo)}:{name}",
                              to=body.get("to"), canary=body.get("canary"), weight=body.get("weight"),
                              reason=change.reason[:300])
            await self.table.changed()
            if self.keep_hot is not None and change.row is not None:  # after: serving never waits for a thaw
                for sha in {change.row.commit, change.row.canary} - {None}:
                    await self.keep_hot(repo, sha)  # type: ignore[arg-type]
        if written.announce is not None:
            self.wake()
        return change

    def make_change(self, key: RepoKey, before: AliasRow | None, after: AliasRow | None, action: str, actor: str,
                reason: str, detail: dict[str, Any]) -> Change:
        name = (after or before).name  # type: ignore[union-attr]
        detail = {**detail, "release": after.release if after else ""}
        body = announcement(event=action, at=self.clock.now(), repo=key.repo_id, repo_type=key.repo_type, alias=name,
                            from_sha=before.commit if before else None, to_sha=after.commit if after else None,
                            canary=after.canary if after else None, weight=after.weight if after else 0.0,
                            actor=actor, reason=reason, detail=detail, node=self.node_key)
        return Change(after, action, actor, reason, detail, announce=body)


def _need_reason(reason: str) -> None:
    if not reason or not reason.strip():
        raise BadRequest("say why (--reason): every alias change is recorded with its reason")
    if len(reason) > 1000:
        raise BadRequest("--reason is limited to 1000 characters")


def _previous_target(events: list[AliasEvent]) -> str | None:
    """The stable target before the newest forward change not yet undone (events newest
    first)."""
    undone = 0
    for ev in events:
        if ev.action not in STABLE_MOVES:
            continue
        if ev.action == "rollback":
            undone += 1
        elif undone:
            undone -= 1
        else:
            return ev.from_sha
    return None


def _release_then(events: list[AliasEvent], commit: str) -> str:
    """The release name the alias carried when it last served `commit` as its stable
    target (so a rollback to a release shows that release again)."""
    for ev in events:
        if ev.to_sha == commit and ev.action in STABLE_MOVES:
            rel = ev.detail.get("release")
            return rel if isinstance(rel, str) else ""
    return ""
