"""Pass-through API calls (refs, commit lists, whoami) with a last-known-answer cache.

The answer is fetched upstream with the caller's token; when upstream is unreachable or
fails, the last answer is served (marked stale) after the same access check as any
cached answer of that repo. `Link rel=next` URLs are returned as upstream paths so the
edge can rewrite them onto the mirror's own origin.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from mirror.caller import Caller
from mirror.catalog.apicache import ApiCache
from mirror.catalog.repos import RepoCatalog
from mirror.errors import StorageError, UpstreamError
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
        repo = await self.repos.repo_id(key) if key is not None else None
        try:
            reply = await self.hub.get_json(path, caller.hub_token, query)
        except UpstreamError:
            hit = await self.answers.get(cache_key)
            if hit is None or key is None or repo is None:
                raise
            commit = (await self.repos.refs_of(repo)).get("", "")
            await self.access.check(key, repo, commit, caller)
            return json.loads(hit[0]), hit[1], True
        data = strip_xet(reply.data)
        link = None
        if reply.link_next:
            parts = urlsplit(reply.link_next)
            link = parts.path + (f"?{parts.query}" if parts.query else "")
        if key is not None:
            try:
                await self.answers.put(cache_key, repo, json.dumps(data), link)
            except StorageError:
                pass  # a full disk: answered, not remembered

        return data, link, False
