"""Access to gated and private repos (design.md §10, threat-model T17).

Cached bytes and metadata of a gated or private repo are served only to a caller whose
own Hub token upstream accepted for that repo recently (`cache.auth_ttl`, memoised per
token fingerprint). The check asks upstream with the caller's token: repo info at the
commit for a private repo, and the first byte of a file for a gated one (the Hub shows a
gated repo's metadata to anyone, but not its files). When upstream cannot confirm, the
answer is no (fail closed). Tokens are held only as fingerprints.
"""

from __future__ import annotations

import hashlib
import logging

from mirror.catalog import Catalog
from mirror.clock import Clock
from mirror.errors import GatedRepo, MirrorError, RepoNotFound, UpstreamError
from mirror.model import RepoKey
from mirror.upstream import urls
from mirror.upstream.client import HubClient

log = logging.getLogger("mirror.access")


class Access:
    def __init__(self, hub: HubClient, catalog: Catalog, clock: Clock, ttl: float) -> None:
        self.hub = hub
        self.catalog = catalog
        self.clock = clock
        self.ttl = ttl
        self._memo: dict[tuple[str, RepoKey], float] = {}

    @staticmethod
    def fingerprint(token: str | None) -> str:
        if not token:
            return "anonymous"
        return hashlib.sha256(b"model-mirror token\0" + token.encode()).hexdigest()[:24]

    def remember(self, key: RepoKey, token: str | None) -> None:
        self._memo[(self.fingerprint(token), key)] = self.clock.monotonic() + self.ttl
        if len(self._memo) > 100_000:
            now = self.clock.monotonic()
            self._memo = {k: v for k, v in self._memo.items() if v > now}

    async def check(self, key: RepoKey, repo: int, commit: str, token: str | None, probe_path: str | None = None) -> None:
        row = await self.catalog.repos.get_repo(key)
        if row is None or (not row.private and not row.gated):
            return
        memo = self._memo.get((self.fingerprint(token), key))
        if memo is not None and memo > self.clock.monotonic():
            return
        try:
            if row.gated:
                path = probe_path or await self._any_file(repo, commit)
                if path is None:
                    await self.hub.get_json(urls.info(key, commit), token)
                else:
                    body = await self.hub.open_file(urls.resolve(key, commit, path), token, 0, 1)
                    body.close()
            else:
                await self.hub.get_json(urls.info(key, commit), token)
        except UpstreamError:
            log.warning("cannot confirm access to %s %s: upstream unavailable; refusing", row.gated and "gated" or "private", key)
            if row.gated:
                raise GatedRepo(f"Access to {key} cannot be confirmed while upstream is unreachable") from None
            raise RepoNotFound(f"Repository {key} not found (access cannot be confirmed)") from None
        except MirrorError:
            raise
        self.remember(key, token)

    async def _any_file(self, repo: int, commit: str) -> str | None:
        listing = await self.catalog.repos.get_listing(repo, commit)
        if not listing:
            return None
        files = sorted(p for p, e in listing.items() if e.kind == "file")
        if not files:
            return None
        # Prefer a small regular file for the probe.
        small = [p for p in files if not listing[p].lfs_sha256]
        return (small or files)[0]
