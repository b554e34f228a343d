"""The dashboard's read model: what each page of `/ui` shows, gathered from the components
the CLI and the admin API already use (admin/inspect.py for `mirror ls/show/stats`,
`Channels`, `Releases` and `VersionMetrics` for releases and canaries, the peer table,
the audit log, the evictor's watermarks, the traffic history). No SQL here and no HTTP:
each method returns plain values for a template (ui/render.py), and raises the domain
errors (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`...) the edge maps to pages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mirror.admin.inspect import RepoSummary, list_repos, show_revision, store_stats
from mirror.audit.log import AuditLog
from mirror.catalog import Catalog
from mirror.catalog.channels import AliasRow, Release
from mirror.catalog.lifecycle import Revision
from mirror.channels.aliases import Channels
from mirror.channels.metrics import VersionMetrics
from mirror.channels.releases import Releases
from mirror.errors import EntryNotFound, MirrorError
from mirror.lifecycle.evict import Evictor
from mirror.model import RepoKey
from mirror.peers.membership import Peers
from mirror.ui.history import SERIES, TrafficHistory

# Audit prefixes of the activity pages (audit/log.py names the actions).
EVENT_KINDS = {"sync": "sync", "lifecycle": "lifecycle", "audit": ""}


@dataclass
class RevisionRow:
    commit: str
    refs: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    releases: list[str] = field(default_factory=list)
    listed_at: float | None = None
    last_access: float | None = None
    hits: int = 0
    pinned: bool = False
    archived: bool = False


@dataclass
class RepoView:
    summary: RepoSummary
    revisions: list[RevisionRow]
    aliases: list[AliasRow]
    releases: list[Release]


class Dashboard:
    def __init__(self, catalog: Catalog, channels: Channels, releases: Releases, metrics: VersionMetrics, peers: Peers,
                 audit: AuditLog, evictor: Evictor, history: TrafficHistory) -> None:
        self.catalog = catalog
        self.channels = channels
        self.releases = releases
        self.metrics = metrics
        self.peers = peers
        self.audit = audit
        self.evictor = evictor
        self.history = history

    # --- overview -------------------------------------------------------------------------

    async def overview(self, hours: int, buckets: int = 60) -> dict[str, Any]:
        """`mirror stats --json` numbers, savings, the byte hit ratio, bytes by source over
        the last `hours`, the biggest repos, running canaries, peers by state, recent events."""
        stats = await store_stats(self.catalog)
        served, fetched = stats["bytes_served"], stats["upstream_bytes_fetched"]
        live = await self.history.read()
        repos = sorted(await list_repos(self.catalog), key=lambda r: r.logical_bytes, reverse=True)
        keys = await self._keys()
        canaries = [(keys[a.repo], a) for a in await self.catalog.channels.canaries() if a.repo in keys]
        states: dict[str, int] = {}
        for p in self.peers.snapshot()["peers"]:
            states[p["state"]] = states.get(p["state"], 0) + 1
        return {
            "stats": stats,
            # Share of the bytes served that upstream did not have to send (None: nothing served yet).
            "hit_ratio": max(0.0, 1.0 - fetched / served) if served else None,
            "traffic": self.history.buckets(live, hours * 3600.0, buckets),
            "series": SERIES,
            "hours": hours,
            "covers": self.history.covers(),
            "repos": repos[:10],
            "repo_count": len(repos),
            "canaries": canaries,
            "peer_states": states,
            "events": (await self.audit.read(limit=8, newest=True))[::-1],
        }

    # --- repos, revisions, files ------------------------------------------------------------

    async def repos(self) -> list[RepoView]:
        summaries = await list_repos(self.catalog)
        ids = {key: rid for rid, key in (await self._keys()).items()}
        revs = await self.catalog.lifecycle.revisions()
        aliases = await self.catalog.channels.aliases()
        releases = await self.catalog.channels.releases()
        out = []
        for s in summaries:
            rid = ids.get(s.key)
            mine_aliases = [a for a in aliases if a.repo == rid]
            mine_releases = [r for r in releases if r.repo == rid]
            rows = _revision_rows(s, [r for r in revs if r.repo == rid], mine_aliases, mine_releases)
            out.append(RepoView(s, rows, mine_aliases, mine_releases))
        return out

    async def repo(self, key: RepoKey) -> RepoView:
        rid = await self.channels.repo(key)  # RepoNotFound for a repo this mirror never saw
        for view in await self.repos():
            if view.summary.key == key:
                return view
        return RepoView(RepoSummary(key, {}, 0, 0, 0, None, []), [], await self.catalog.channels.aliases(rid),
                        await self.catalog.channels.releases(rid))

    async def revision(self, key: RepoKey, rev: str | None) -> dict[str, Any]:
        view = await show_revision(self.catalog, key, rev)
        repo = await self.repo(key)
        row = next((r for r in repo.revisions if r.commit == view.commit), RevisionRow(view.commit, refs=view.refs))
        return {"key": key, "view": view, "row": row, "total": sum(f.size for f in view.files)}

    async def file(self, key: RepoKey, rev: str, path: str) -> dict[str, Any]:
        view = await show_revision(self.catalog, key, rev)
        usage = next((f for f in view.files if f.path == path), None)
        if usage is None:
            raise EntryNotFound(f"{key}@{view.commit[:12]} has no file {path!r}")
        manifest = await self.catalog.content.get_manifest(usage.identity) if usage.cached else None
        holders = [(k, e.path) for k, e in await self.catalog.repos.files_with(usage.identity, limit=50)
                   if not (k == key and e.path == path)]
        return {"key": key, "commit": view.commit, "file": usage, "manifest": manifest, "holders": holders}

    # --- releases and canaries ----------------------------------------------------------------

    async def channel_overview(self) -> list[tuple[RepoKey, list[Release], list[AliasRow]]]:
        keys = await self._keys()
        by_repo: dict[int, tuple[list[Release], list[AliasRow]]] = {}
        for rel in await self.catalog.channels.releases():
            by_repo.setdefault(rel.repo, ([], []))[0].append(rel)
        for row in await self.catalog.channels.aliases():
            by_repo.setdefault(row.repo, ([], []))[1].append(row)
        return sorted(((keys[rid], rels, rows) for rid, (rels, rows) in by_repo.items() if rid in keys),
                      key=lambda t: str(t[0]))

    async def alias(self, key: RepoKey, name: str) -> dict[str, Any]:
        """One alias: its state, canary plan, history, and the metrics of the two commits
        that matter now (stable vs canary; without a canary, the previous target vs the
        current one) compared with Welch's t-test."""
        row = await self.channels.get(key, name)
        history = await self.channels.history(key, name, 200)  # newest first
        if row.canary is not None:
            a, b = row.commit, row.canary
        else:
            before = [e.from_sha for e in history if e.from_sha and e.from_sha != row.commit]
            a, b = (before[0], row.commit) if before else (row.commit, row.commit)
        names = {r.commit: r.name for r in await self.releases.list_releases(key)}
        compare = await self.metrics.compare(row.repo, a, b) if a != b else None
        return {
            "key": key, "row": row, "history": history, "a": a, "b": b, "names": names,
            "compare": compare,
            "summaries": [(c, await self.metrics.summary(row.repo, c)) for c in dict.fromkeys((a, b))],
        }

    # --- peers, activity, lifecycle ------------------------------------------------------------

    def peer_table(self) -> dict[str, Any]:
        return self.peers.snapshot()

    async def events(self, kind: str, *, action: str = "", actor: str = "", limit: int = 200) -> list[dict[str, Any]]:
        """The newest audit records of one kind (`EVENT_KINDS`), newest first; `action`
        and `actor` narrow the whole log (exact, or a prefix up to a separator)."""
        prefix = EVENT_KINDS[kind] or action or None
        return (await self.audit.read(action=prefix, actor=actor or None, limit=limit, newest=True))[::-1]

    async def lifecycle(self) -> dict[str, Any]:
        revs = await self.catalog.lifecycle.revisions()
        usage: tuple[int, int, int] | None = None
        usage_error = ""
        try:
            usage = await self.evictor.usage(self.evictor.policy)
        except MirrorError as exc:
            usage_error = exc.message
        return {
            "policy": self.evictor.policy, "usage": usage, "usage_error": usage_error,
            "revisions": len(revs), "archived": sum(r.archived for r in revs), "pinned": sum(r.pinned for r in revs),
            "events": await self.events("lifecycle", limit=50),
        }

    async def _keys(self) -> dict[int, RepoKey]:
        return {row.id: row.key for row in await self.catalog.repos.list_repos()}


def _revision_rows(summary: RepoSummary, revs: list[Revision], aliases: list[AliasRow],
                   releases: list[Release]) -> list[RevisionRow]:
    """A repo's revisions with every local name pointing at each, newest access first."""
    rows: dict[str, RevisionRow] = {}
    for r in revs:
        rows[r.sha] = RevisionRow(r.sha, listed_at=r.listed_at, last_access=r.last_access, hits=r.hits,
                                  pinned=r.pinned, archived=r.archived)
    for name, sha in summary.refs.items():
        rows.setdefault(sha, RevisionRow(sha)).refs.append(name or "(default)")
    for a in aliases:
        rows.setdefault(a.commit, RevisionRow(a.commit)).aliases.append(a.name)
        if a.canary:
            rows.setdefault(a.canary, RevisionRow(a.canary)).aliases.append(f"{a.name} (canary {a.weight:g}%)")
    for rel in releases:
        rows.setdefault(rel.commit, RevisionRow(rel.commit)).releases.append(rel.name)
    return sorted(rows.values(), key=lambda r: (r.last_access or 0.0, r.listed_at or 0.0), reverse=True)

