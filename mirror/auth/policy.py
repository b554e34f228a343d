"""Repo rules: what may be proxied at all, what never goes upstream, and a developer's
grants. Globs match a repo's display name (`org/model`, `datasets/org/set`) and, for
models and any type alike, its bare id (`org/model`); a bare namespace (`org`) means
everything under it.

- `[auth] deny`: never proxied, for anyone (403 RepoDenied);
- `[auth] allow`: when set, only matching repos are proxied;
- `[auth] local_only` and namespaces marked at run time (`mirror local-only NS`):
  served only from local data (imports, `sync --from`), never asked upstream;
- a developer token reads only repos matching its grants.
"""

from __future__ import annotations

import fnmatch

from mirror.config import AuthConfig
from mirror.model import RepoKey


def matches(glob: str, key: RepoKey) -> bool:
    names = (str(key), key.repo_id)
    if "/" not in glob and not any(c in glob for c in "*?["):
        return any(n == glob or n.startswith(glob + "/") for n in names) or key.repo_id.split("/")[0] == glob
    return any(fnmatch.fnmatchcase(n, glob) for n in names)


def any_match(globs: "tuple[str, ...] | list[str]", key: RepoKey) -> bool:
    return any(matches(g, key) for g in globs)


class RepoPolicy:
    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self.local: tuple[str, ...] = tuple(config.local_only)

    def set_local(self, namespaces: "list[str]") -> None:
        """The run-time local-only namespaces (from the catalog) besides the config's."""
        self.local = tuple(dict.fromkeys([*self.config.local_only, *namespaces]))

    def refusal(self, key: RepoKey) -> str | None:
        """Why `key` may not be proxied at all, or None."""
        if any_match(self.config.deny, key):
            return f"{key} is denied by this mirror's policy ([auth] deny)"
        if self.config.allow and not any_match(self.config.allow, key):
            return f"{key} is not in this mirror's allow list ([auth] allow)"
        return None

    def local_only(self, key: RepoKey) -> bool:
        return any_match(self.local, key)

    @staticmethod
    def in_grants(grants: "tuple[str, ...]", key: RepoKey) -> bool:
        return any_match(grants, key)
