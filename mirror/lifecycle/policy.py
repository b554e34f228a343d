"""The lifecycle policy: which revisions stay hot, which are cold.

A revision (a listed commit) is kept hot when it is pinned, or among the `keep_revisions`
most recent commits any ref (branch or tag) pointed at, or was used within
`archive_after` (last access, or when it was listed if never read). Every other revision
is cold. Every age is measured on the injected `Clock`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mirror.catalog import Catalog
from mirror.catalog.lifecycle import Revision
# Watermark lives with the config, which parses it once at load; re-exported here.
from mirror.config import LifecycleConfig, Watermark
from mirror.errors import StorageError

log = logging.getLogger("mirror.lifecycle")

RevKey = tuple[int, str]


@dataclass(frozen=True, slots=True)
class Policy:
    archive_after: float = 30 * 86400.0
    keep_revisions: int = 3
    high: Watermark = Watermark(percent=0.9)
    low: Watermark = Watermark(percent=0.8)
    archive_dir: str = ""
    gc_grace: float = 3600.0
    interval: float = 0.0
    thaw_after_hits: int = 3

    @classmethod
    def from_config(cls, cfg: LifecycleConfig) -> "Policy":
        """The policy of a loaded config: its values were parsed and checked at load."""
        v = cfg.parsed
        return cls(
            archive_after=v.archive_after,
            keep_revisions=cfg.keep_revisions,
            high=v.high,
            low=v.low,
            archive_dir=cfg.archive_dir,
            gc_grace=v.gc_grace,
            interval=v.interval,
            thaw_after_hits=cfg.thaw_after_hits,
        )


@dataclass
class Graph:
    """Who references what, loaded once per run."""

    revisions: dict[RevKey, Revision]
    rev_manifests: dict[RevKey, set[str]]
    manifest_chunks: dict[str, list[str]]
    ref_history: dict[tuple[int, str], list[str]]

    def chunks_of(self, identities: set[str]) -> set[str]:
        return {c for i in identities for c in self.manifest_chunks.get(i, ())}

    def referenced_manifests(self) -> set[str]:
        return {i for ids in self.rev_manifests.values() for i in ids}


async def load_graph(catalog: Catalog) -> Graph:
    lc = catalog.lifecycle
    revs = {(r.repo, r.sha): r for r in await lc.revisions()}
    return Graph(revs, await lc.revision_manifests(), await lc.manifest_chunks(), await lc.ref_history())


def kept_by_refs(graph: Graph, keep: int) -> set[RevKey]:
    out: set[RevKey] = set()
    for (repo, _name), shas in graph.ref_history.items():
        out.update((repo, s) for s in shas[:keep])
    return out


def cold_revisions(graph: Graph, policy: Policy, now: float, older_than: float | None = None) -> list[Revision]:
    """Unpinned revisions outside the kept window, idle longer than `older_than`
    (default `archive_after`), least recently used first."""
    idle = policy.archive_after if older_than is None else older_than
    kept = kept_by_refs(graph, policy.keep_revisions)
    cold = [r for k, r in graph.revisions.items() if not r.pinned and k not in kept and now - r.last_used > idle]
    return sorted(cold, key=lambda r: (r.last_used, r.repo, r.sha))


async def repo_names(catalog: Catalog) -> dict[int, str]:
    """repo id -> its name as users write it ('org/m', 'datasets/org/d'), for audit records."""
    return {r.id: str(r.key) for r in await catalog.repos.list_repos()}


async def revision_access(catalog: Catalog, repo: int) -> dict[str, tuple[float, int]]:
    """commit -> (last access, hits) of a repo, including accesses not yet flushed; for
    `mirror ls` / `mirror show`."""
    await flush_access(catalog)
    return await catalog.meta.access_of(repo)


async def flush_access(catalog: Catalog) -> None:
    """Write batched access records before a policy decision reads them. On a full disk
    the decision goes ahead on what is stored (relief must not need space to start)."""
    try:
        await catalog.meta.flush()
    except StorageError as exc:
        log.warning("lifecycle: deciding on stored access records (%s)", exc.message)
