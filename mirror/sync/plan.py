"""The sync plan: which contents of the watched revisions the store lacks.

Each revision is resolved upstream exactly once (a fresh answer, whatever `ref_ttl`
says), and from then on everything is addressed by commit sha, so a ref that moves
during a run cannot mix two commits. The commit's listing is filtered by the include
and exclude globs and diffed against the catalog by upstream content hash: a content
whose manifest is stored with all its chunks is reused, anything else is fetched once
per run however many revisions or repos name it.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from mirror.config import SyncRepo
from mirror.errors import MirrorError, UpstreamUnavailable
from mirror.model import FileEntry, RepoKey
from mirror.caller import Caller
from mirror.catalog.repos import RepoCatalog
from mirror.resolve.files import Files
from mirror.resolve.metadata import FULL_SHA, Metadata


@dataclass(frozen=True, slots=True)
class FileTask:
    key: RepoKey
    commit: str
    entry: FileEntry


@dataclass
class RevisionPlan:
    revision: str
    commit: str
    previous: str | None
    files: int = 0

    @property
    def updated(self) -> bool:
        return self.previous != self.commit


@dataclass
class RepoPlan:
    spec: SyncRepo
    key: RepoKey
    revisions: list[RevisionPlan] = field(default_factory=list)
    fetch: list[FileTask] = field(default_factory=list)
    reused_bytes: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def fetch_bytes(self) -> int:
        return sum(t.entry.size for t in self.fetch)


def wanted(path: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """A path is wanted when it matches an include glob (or there are none) and no exclude
    glob. Globs match the whole repo path (`*` crosses `/`), or its file name alone."""
    name = path.rsplit("/", 1)[-1]

    def hit(globs: tuple[str, ...]) -> bool:
        return any(fnmatch.fnmatchcase(path, g) or fnmatch.fnmatchcase(name, g) for g in globs)

    return (not include or hit(include)) and not hit(exclude)


class Planner:
    def __init__(self, metadata: Metadata, files: Files, repos: RepoCatalog, caller: Caller) -> None:
        self.metadata = metadata
        self.files = files
        self.repos = repos
        self.caller = caller
        self._scheduled: set[str] = set()

    async def plan(self, spec: SyncRepo) -> RepoPlan:
        key = RepoKey(spec.repo_type, spec.repo)
        plan = RepoPlan(spec, key)
        reused: set[str] = set()
        for rev in spec.revisions:
            label = rev or "(default branch)"
            try:
                repo = await self.repos.repo_id(key)
                assert repo is not None
                previous = await self._previous(repo, rev)
                res, _info = await self.metadata.resolve(key, rev or None, self.caller, fresh=True)
                if res.stale:
                    raise UpstreamUnavailable("upstream is unreachable")
                listing = await self.metadata.listing(res, self.caller)
            except MirrorError as exc:
                plan.errors.append(f"{key}@{label}: {exc.message}")
                continue
            rp = RevisionPlan(rev, res.commit, previous)
            for entry in listing.values():
                if entry.kind != "file" or not wanted(entry.path, spec.include, spec.exclude):
                    continue
                rp.files += 1
                ident = entry.identity
                if ident in self._scheduled or ident in reused:
                    continue
                if await self.files.stored_manifest(ident) is not None:
                    reused.add(ident)
                    plan.reused_bytes += entry.size
                    continue
                self._scheduled.add(ident)
                plan.fetch.append(FileTask(key, res.commit, entry))
            plan.revisions.append(rp)
        return plan

    async def _previous(self, repo: int, rev: str) -> str | None:
        """The commit this revision named before this run (None if never seen)."""
        if FULL_SHA.fullmatch(rev):
            return rev if await self.repos.get_listing(repo, rev) is not None else None
        ref = await self.repos.get_ref(repo, rev)
        return ref[0] if ref else None
