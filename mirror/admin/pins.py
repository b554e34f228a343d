"""Pins: revisions an operator keeps whatever the lifecycle policy says. A pin names a
commit (a branch is resolved to the commit it points at now, locally)."""

from __future__ import annotations

from mirror.admin.revisions import local_commit
from mirror.catalog import Catalog
from mirror.model import RepoKey


async def pin(catalog: Catalog, key: RepoKey, rev: str | None, label: str = "") -> str:
    repo, commit = await local_commit(catalog, key, rev)
    await catalog.pins.pin(repo, commit, label or (rev or ""))
    return commit


async def unpin(catalog: Catalog, key: RepoKey, rev: str | None) -> tuple[str, bool]:
    repo, commit = await local_commit(catalog, key, rev)
    return commit, await catalog.pins.unpin(repo, commit)
