"""Access to gated and private repos (design.md §10, threat-model T17).

Cached bytes and metadata of a gated or private repo are served only to a caller whose
own Hub token upstream accepted for that repo recently (`cache.auth_ttl`, memoised per
token fingerprint). The check asks upstream with the caller's token: repo info at the
commit for a private repo, and the first byte of a file for a gated one. A gated repo's
metadata (info, tree, refs, commits) is public, as on the Hub: only its file bytes are
checked (`check`); metadata answers pass `check_metadata`, which checks private repos
only. When upstream cannot confirm, the answer is no (fail closed), with the status the
Hub gives (401 without a token). Tokens are held only as fingerprints.

A cached answer is only as safe as the repo's known visibility: `learn` records it (with
the caller's token) before a pass-through answer is cached, and a repo whose visibility
was never learned gets no cached answer at all.
"""

from __future__ import annotations

import logging

from typing import TYPE_CHECKING

from mirror.caller import Caller
from mirror.catalog.repos import RepoCatalog
from mirror.clock import Clock
from mirror.errors import GatedRepo, MirrorError, RepoNotFound, Unauthorized, UpstreamError
from mirror.model import RepoKey
from mirror.upstream import urls
from mirror.upstream.client import HubClient

if TYPE_CHECKING:
    from mirror.audit.log import AuditLog
    from mirror.catalog.repos import RepoRow

log = logging.getLogger("mirror.access")

# What a memo entry vouches for: the file bytes (which implies the metadata) or the
# metadata only (a private and gated repo shows its info before its terms are accepted).
_BYTES = "bytes"
_META = "meta"


class Access:
    def __init__(self, hub: HubClient, repos: RepoCatalog, clock: Clock, ttl: float, audit: "AuditLog | None" = None) -> None:
        """`audit` records every read of a gated or private repo's bytes (who, with which
        token's fingerprint: never the token)."""
        self.audit = audit
        self.hub = hub
        self.repos = repos
        self.clock = clock
        self.ttl = ttl
        self._memo: dict[tuple[str, RepoKey, str], float] = {}

    def remember(self, key: RepoKey, caller: Caller) -> None:
        """Upstream just gave this token the repo's file bytes (or it is private only
        and showed its info, which on the Hub comes with the bytes)."""
        self._remember(key, caller, _BYTES)

    def remember_metadata(self, key: RepoKey, caller: Caller) -> None:
        """Upstream just showed this token the repo's metadata."""
        self._remember(key, caller, _META)

    def _remember(self, key: RepoKey, caller: Caller, what: str) -> None:
        self._memo[(caller.fingerprint, key, what)] = self.clock.monotonic() + self.ttl
        if len(self._memo) > 100_000:
            now = self.clock.monotonic()
            self._memo = {k: v for k, v in self._memo.items() if v > now}

    def _memoised(self, key: RepoKey, caller: Caller, *whats: str) -> bool:
        now = self.clock.monotonic()
        fp = caller.fingerprint
        return any(self._memo.get((fp, key, what), 0.0) > now for what in whats)

    async def check(self, key: RepoKey, repo: int, commit: str, caller: Caller, probe_path: str | None = None) -> None:
        """May this caller have the file bytes of this repo?"""
        row = await self.repos.get_repo(key)
        if row is None or (not row.private and not row.gated):
            return
        await self._check_bytes(key, row, repo, commit, caller, probe_path)
        if self.audit is not None:
            self.audit.record(caller.actor, "files.read.gated" if row.gated else "files.read.private", str(key), "ok",
                              commit=commit, path=probe_path or "", token=caller.fingerprint, address=caller.address)

    async def _check_bytes(self, key: RepoKey, row: "RepoRow", repo: int, commit: str, caller: Caller,
                           probe_path: str | None) -> None:
        if self._memoised(key, caller, _BYTES):
            return
        if caller.offline:
            self._local(key, caller)
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
            if row.gated and not row.private:
                raise GatedRepo(f"Access to {key} cannot be confirmed while upstream is unreachable") from None
            raise self._not_found(key, caller) from None
        except MirrorError:
            raise
        self.remember(key, caller)

    async def check_metadata(self, key: RepoKey, repo: int, commit: str, caller: Caller) -> None:
        """May this caller see a cached metadata answer (info, listing, refs, commits)?
        Only a private repo's metadata is restricted; a gated repo's is public."""
        row = await self.repos.get_repo(key)
        if row is None or not row.private:
            return
        if self._memoised(key, caller, _BYTES, _META):
            return
        if caller.offline:
            self._local(key, caller)
            return
        try:
            await self.hub.get_json(urls.info(key, commit or None), caller.hub_token)
        except UpstreamError:
            log.warning("cannot confirm access to private %s: upstream unavailable; refusing", key)
            raise self._not_found(key, caller) from None
        self.remember_metadata(key, caller)

    def _local(self, key: RepoKey, caller: Caller) -> None:
        """A gated or private repo of a local-only namespace: upstream is never asked,
        so the mirror's own rules decide: a mirror token admitted by the gate (its role
        and grants) may read it; an anonymous caller may not."""
        if not caller.principal:
            raise self._not_found(key, caller)

    async def learn(self, key: RepoKey, caller: Caller) -> int | None:
        """Make sure the repo's visibility is recorded before an answer about it is
        cached; return its catalog id, or None when it cannot be learned now (then the
        answer must not be cached). Upstream answered this caller about the repo just
        now, so a private repo's metadata is memoised for this token. An answer fetched
        with a token re-checks flags older than the auth TTL: a repo made private since
        must not have its new answers cached as public ones."""
        row = await self.repos.get_repo(key)
        if row is not None and row.info_at is not None and (caller.hub_token is None or self.clock.now() - row.info_at < self.ttl):
            if row.private:
                self.remember_metadata(key, caller)
            return row.id
        try:
            reply = await self.hub.get_json(urls.info(key, None), caller.hub_token)
        except MirrorError as exc:
            log.info("visibility of %s unknown (%s); answer not cached", key, exc.message)
            return None
        info = reply.data if isinstance(reply.data, dict) else {}
        private = bool(info.get("private"))
        gated = info.get("gated") or ""
        rid = await self.repos.set_repo_info(key, private=private, gated=str(gated) if gated else "", info=None)
        if private:
            self.remember_metadata(key, caller)
        return rid

    @staticmethod
    def _not_found(key: RepoKey, caller: Caller) -> MirrorError:
        # The Hub answers 401 to an anonymous caller and 404 to a token without access.
        if caller.hub_token is None:
            return Unauthorized(f"Repository {key} not found (access cannot be confirmed)")
        return RepoNotFound(f"Repository {key} not found (access cannot be confirmed)")

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
