"""Inspection for `mirror ls`, `mirror show` and `mirror stats` (and their admin API
twins): what the mirror holds, per repo and per revision, answered from the catalog
alone (no upstream, works beside a running daemon).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mirror.catalog import Catalog
from mirror.catalog.pins import Pin
from mirror.catalog.usage import FileUsage
from mirror.errors import RevisionNotFound
from mirror.model import RepoKey
from mirror.admin.revisions import local_commit


@dataclass(frozen=True, slots=True)
class RepoSummary:
    key: RepoKey
    refs: dict[str, str]
    commits: int
    logical_bytes: int
    stored_bytes: int
    last_access: float | None
    pins: list[Pin]

    def to_json(self) -> dict[str, Any]:
        """One repo as `mirror ls --json` and `GET /_admin/v1/repos` show it."""
        return {
            "repo": self.key.repo_id,
            "repo_type": self.key.repo_type,
            "refs": self.refs,
            "commits": self.commits,
            "logical_bytes": self.logical_bytes,
            "stored_bytes": self.stored_bytes,
            "last_access": self.last_access,
            "pins": [{"commit": p.commit, "label": p.label} for p in self.pins],
        }


@dataclass(frozen=True, slots=True)
class RevisionView:
    key: RepoKey
    commit: str
    refs: list[str]
    pinned: bool
    files: list[FileUsage]

    @property
    def cached_bytes(self) -> int:
        return sum(f.size for f in self.files if f.cached)

    @property
    def shared_bytes(self) -> int:
        return sum(f.shared_bytes for f in self.files)


async def list_repos(catalog: Catalog) -> list[RepoSummary]:
    usage = await catalog.usage.repos()
    pins: dict[int, list[Pin]] = {}
    for pin in await catalog.pins.all():
        pins.setdefault(pin.repo, []).append(pin)
    out = []
    for row in await catalog.repos.list_repos():
        u = usage.get(row.id)
        refs = await catalog.repos.refs_of(row.id)
        commits = await catalog.repos.commits_of(row.id)
        if not refs and not commits and u is None:
            continue  # asked about once, never found: not worth a line
        out.append(RepoSummary(row.key, refs, len(commits), u.logical_bytes if u else 0, u.stored_bytes if u else 0,
                               u.last_access if u else None, pins.get(row.id, [])))
    return out


async def show_revision(catalog: Catalog, key: RepoKey, rev: str | None) -> RevisionView:
    repo, commit = await local_commit(catalog, key, rev)
    if await catalog.repos.get_listing(repo, commit) is None:
        raise RevisionNotFound(f"{key}@{commit[:12]}: its file listing is not known yet (pull it first)")
    refs = [name or "(default)" for name, sha in (await catalog.repos.refs_of(repo)).items() if sha == commit]
    pinned = any(p.commit == commit for p in await catalog.pins.pins_of(repo))
    return RevisionView(key, commit, refs, pinned, await catalog.usage.revision(repo, commit))


async def store_stats(catalog: Catalog) -> dict[str, Any]:
    """What `mirror stats --json` and `GET /_admin/v1/stats` show."""
    st = await catalog.content.stats()
    counters = await catalog.meta.counters()
    return {
        "files": st.files,
        "logical_bytes": st.logical_bytes,
        "stored_bytes": st.stored_bytes,
        "unique_raw_bytes": st.unique_raw_bytes,
        "chunks": st.chunks,
        "dedup_ratio": round(st.dedup_ratio, 4),
        "compression_ratio": round(st.compression_ratio, 4),
        "stored_over_logical": round(st.stored_bytes / st.logical_bytes, 4) if st.logical_bytes else 1.0,
        "upstream_bytes_fetched": counters.get("upstream_bytes", 0),
        "bytes_served": counters.get("served_bytes", 0),
    }
