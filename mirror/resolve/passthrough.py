"""Pass-through API calls (refs, commit lists, whoami) with a last-known-answer cache.

The answer is fetched upstream with the caller's token; when upstream is unreachable or
fails, the last answer is served (marked stale) after the same access check as any
cached metadata of that repo (`Access.check_metadata`). An answer is cached only once
the repo's visibility is recorded (`Access.learn`), so a private repo's answer can never
be served stale as if it were public; an old cache entry of a repo whose visibility is
unknown is not served at all. A repo gets a catalog row only when upstream answered
for it. `Link rel=next` URLs are returned as upstream paths so the edge can rewrite them
onto the mirror's own origin.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from mirror.caller import Caller
from mirror.catalog.apicache import ApiCache
from mirror.catalog.repos import RepoCatalog
from mirror.errors import LocalOnly, StorageError, UpstreamError
from mirror.model import RepoKey
from mirror.resolve.access import Access
from mirror.resolve.metadata import strip_xet
from mirror.upstream.client import HubClient


class Passthrough:
    def __init__(self, hub: HubClient, repos: RepoCatalog, answers: ApiCache, access: Access) -> None:
        self.hub = hub
        self.repos = repos
        self.answers = answers
        self.access = access

    async def get(self, key: RepoKey | None, path: str, query: list[tuple[str, str]], caller: Caller) -> tuple[Any, str | None, bool]:
        """(json, next-link path+query or None, stale)."""
        cache_key = path + "?" + "&".join(f"{k}={v}" for k, v in query)
        try:
            if caller.offline:
                raise LocalOnly(f"{key} is local-only: this mirror does not ask upstream for it")
            reply = await self.hub.get_json(path, caller.hub_token, query)
        except UpstreamError:
            if key is None:
                raise
            row = await self.repos.get_repo(key)
            if row is None or not row.known:
                raise  # visibility unknown: nothing cached may be shown (fail closed)
            hit = await self.answers.get(cache_key)
            if hit is None:
                raise
            commit = (await self.repos.refs_of(row.id)).get("", "")
            await self.access.check_metadata(key, row.id, commit, caller)
            return json.loads(hit[0]), hit[1], True
        data = strip_xet(reply.data)
        link = None
        if reply.link_next:
            parts = urlsplit(reply.link_next)
            link = parts.path + (f"?{parts.query}" if parts.query else "")
        if key is not None:
            repo = await self.access.learn(key, caller)
            if repo is not None:
                try:
                    await self.answers.put(cache_key, repo, json.dumps(data), link)
                except StorageError:
                    pass  # a full disk: answered, not remembered
        return data, link, False
