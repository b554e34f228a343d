"""Which names upstream already uses for a repo: its branches and tags. A local alias or
release with one of those names would hide upstream's meaning of it, so creating one is
refused unless forced (channels/aliases.py, channels/releases.py).

The answer comes from the refs pass-through (resolve/passthrough.py: the live answer, or
the last one kept when upstream is down) plus the refs this mirror has seen resolved.
With neither, the check cannot be made and says so: the caller then refuses unless
forced, rather than guessing.
"""

from __future__ import annotations

from typing import Any

from mirror.caller import Caller
from mirror.catalog.repos import RepoCatalog
from mirror.errors import LocalOnly, MirrorError, UpstreamError
from mirror.model import RepoKey
from mirror.resolve.passthrough import Passthrough
from mirror.upstream import urls


class Unknown(MirrorError):
    """Upstream's names could not be read (unreachable, nothing cached)."""


class UpstreamNames:
    def __init__(self, passthrough: Passthrough, repos: RepoCatalog) -> None:
        self.passthrough = passthrough
        self.repos = repos

    async def names(self, key: RepoKey, caller: Caller) -> set[str]:
        """Upstream's branch and tag names of `key`, or `Unknown`."""
        seen: set[str] = set()
        repo = await self.repos.repo_id(key, create=False)
        if repo is not None:
            seen = {n for n in await self.repos.refs_of(repo) if n}
        try:
            data, _link, _stale = await self.passthrough.get(key, urls.api(key, "refs"), [], caller)
        except LocalOnly:
            return seen  # never asked upstream: it has no names to shadow
        except UpstreamError as exc:
            raise Unknown(f"cannot read upstream's branches and tags of {key} ({exc.message})") from None
        return seen | _ref_names(data)


def _ref_names(data: Any) -> set[str]:
    out: set[str] = set()
    if isinstance(data, dict):
        for group in ("branches", "tags", "converts"):
            for ref in data.get(group) or ():
                if isinstance(ref, dict) and isinstance(ref.get("name"), str):
                    out.add(ref["name"])
    return out
