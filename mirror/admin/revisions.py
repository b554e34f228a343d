"""Naming revisions from the shell: `REPO[@REV]` and its local resolution.

Resolution here never asks upstream: it answers from what the catalog knows (refs,
listed commits, unique sha prefixes), so inspection and pinning work offline.
"""

from __future__ import annotations

import re

from mirror.catalog import Catalog
from mirror.errors import RepoNotFound, RevisionNotFound, UsageError
from mirror.model import REPO_TYPES, RepoKey

_FULL = re.compile(r"[0-9a-f]{40}", re.ASCII)
_PREFIX = re.compile(r"[0-9a-f]{7,39}", re.ASCII)
_REPO = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", re.ASCII)


def parse_spec(text: str, repo_type: str = "model") -> tuple[RepoKey, str | None]:
    """'org/name@rev' -> (key, 'rev'); 'org/name' -> (key, None). A 'datasets/' or
    'spaces/' prefix sets the type, as in Hub URLs."""
    repo, sep, rev = text.partition("@")
    for t in REPO_TYPES[1:]:
        if repo.startswith(f"{t}s/"):
            repo, repo_type = repo[len(t) + 2:], t
    if not _REPO.fullmatch(repo) or (sep and not rev):
        raise UsageError(f"not a repo spec: {text!r} (use org/name or org/name@revision)")
    return RepoKey(repo_type, repo), (rev if sep else None)


async def local_commit(catalog: Catalog, key: RepoKey, rev: str | None) -> tuple[int, str]:
    """(repo row id, commit sha) for a revision this mirror knows."""
    repo = await catalog.repos.repo_id(key, create=False)
    if repo is None:
        raise RepoNotFound(f"{key} is not in this mirror")
    refs = await catalog.repos.refs_of(repo)
    if rev is None:
        for name in ("", "main"):
            if name in refs:
                return repo, refs[name]
        raise RevisionNotFound(f"{key}: no default branch known; name a revision (REPO@REV)")
    if rev in refs:
        return repo, refs[rev]
    if _FULL.fullmatch(rev) and rev in await catalog.repos.commits_of(repo):
        return repo, rev
    if _PREFIX.fullmatch(rev):
        found = await catalog.repos.find_commit(repo, rev)
        if len(found) == 1:
            return repo, found[0]
    raise RevisionNotFound(f"{key}@{rev} is not known to this mirror (pull it first)")
