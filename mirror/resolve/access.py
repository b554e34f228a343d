"""Access to gated and private repos (design.md §10, threat-model T17).

Cached bytes and metadata of a gated or private repo are served only to a caller whose
own Hub token upstream accepted for that repo recently (`cache.auth_ttl`, memoised per
token fingerprint). The check asks upstream with the caller's token: repo info at the
commit for a private repo, and the first byte of a file for a gated one (the Hub shows a
gated repo's metadata to anyone, but not its files). When upstream cannot confirm, the
answer is no (fail closed). Tokens are held only as fingerprints.
"""

from __future__ import annotations

import logging

from mirror.caller import Caller
from mirror.catalog.repos import RepoCatalog
from mirror.clock import Clock
from mirror.errors import GatedRepo, MirrorError, RepoNotFound, UpstreamError
from mirror.model import RepoKey
from mirror.upstream import urls
from mirror.upstream.client import HubClient

log = logging.getLogger("mirror.access")


class Access:
    def __init__(self, hub: HubClient, repos: RepoCatalog, clock: Clock, ttl: float) -> None:
        self.hub = hub
        self.repos = repos
        self.clock = clock
        self.ttl = ttl
        self._memo: dict[tuple[str, RepoKey], float] = {}

    def remember(self, key: RepoKey, caller: Caller) -> None:
        self._memo[(caller.fingerprint, key)] = self.clock.monotonic() + self.ttl
        if len(self._memo) > 100_000:
            now = self.clock.monotonic()
            self._memo = {k: v for k, v in self._memo.items() if v > now}

    async def check(self, key: RepoKey, repo: int, commit: str, caller: Caller, probe_path: str | None = None) -> None:
        row = await self.repos.get_repo(key)
        if row is None or (not row.private and not row.gated):
            return
        memo = self._memo.get((caller.fingerprint, key))
        if memo is not None and memo > self.clock.monotonic():
            return
        try:
            if row.gated:
                path = probe_path or await self._any_file(repo, commit)
                if path is None:
                    await self.hub.get_json(urls.info(key, commit), caller.hub_token)
                else:
                    body = await self.hub.open_file(urls.resolve(key, commit, path), caller.hub_token, 0, 1)
                    body.close()
            else:
                await self.hub.get_json(urls.info(key, commit), caller.hub_token)
        except UpstreamError:
            log.warning("cannot confirm access to %s %s: upstream unavailable; refusing", row.gated and "gated" or "private", key)
            if row.gated:
                raise GatedRepo(f"Access to {key} cannot be confirmed while upstream is unreachable") from None
            raise RepoNotFound(f"Repository {key} not found (access cannot be confirmed)") from None
        except MirrorError:
            raise
        self.remember(key, caller)

    async def _any_file(self, repo: int, commit: str) -> str | None:
        listing = await self.repos.get_listing(repo, commit)
        if not listing:
            return None
        files = sorted(p for p, e in listing.items() if e.kind == "file")
        if not files:
            return None
        # Prefer a small regular file for the probe.
        small = [p for p in files if not listing[p].lfs_sha256]
        return (small or files)[0]
