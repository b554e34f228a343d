"""Peer records: a branch or tag, and the revision it names, from a peer when upstream
is down (design.md §6: refs and listings never come from peers while upstream answers).

Asked by `Metadata` only after upstream failed (unreachable or 5xx) and this node has
no answer of its own. A usable peer's signed answer (client.py checks the responder's
signature over our nonce) is used when upstream confirmed that ref to the peer within
`[peers] ref_max_age`; the revision record (repo flags, repo info, the file listing,
every entry checked field by field) is stored as if upstream had said it at that time,
and the answer is marked stale like any other answer given while upstream is down. A
private repo stays private: its flags come with the record, and `Access` refuses a
private repo's metadata and a gated repo's files while it cannot ask upstream.
"""

from __future__ import annotations

import logging
from typing import Any

from mirror.catalog.repos import RepoCatalog
from mirror.clock import Clock
from mirror.errors import MirrorError
from mirror.model import RepoKey
from mirror.peers import wire
from mirror.peers.client import PeerClient
from mirror.peers.membership import Peers
from mirror.peers.service import entry_of

log = logging.getLogger("mirror.peers")

_HEX40 = wire.COMMIT_RE


class PeerRecords:
    def __init__(self, peers: Peers, client: PeerClient, repos: RepoCatalog, clock: Clock, max_age: float) -> None:
        self.peers = peers
        self.client = client
        self.repos = repos
        self.clock = clock
        self.max_age = max_age

    async def resolve(self, key: RepoKey, revision: str) -> tuple[int, str, dict[str, Any]] | None:
        """(repo row, commit, repo info) of `revision` as a peer knows it, stored here;
        None when no usable peer has a fresh record."""
        for peer in self.peers.usable():
            try:
                if _HEX40.fullmatch(revision):
                    commit, checked_at = revision, None
                else:
                    commit, checked_at = await self._ref(peer.url, peer.key, key, revision)
                    if commit is None:
                        continue
                found = await self._revision(peer.url, peer.key, key, commit)
                if found is None:
                    continue
                repo, info = found
                if checked_at is not None:
                    # Never roll a ref back: a record older than what this node last
                    # learned (from upstream or another peer) is not used (P4).
                    local = await self.repos.get_ref(repo, revision)
                    if local is not None and local[1] >= checked_at and local[0] != commit:
                        log.info("peer %s's record of %s@%s is older than this node's; not used", peer.url, key, revision)
                        continue
                    await self.repos.set_ref(repo, revision, commit, checked_at=checked_at)
                log.warning("upstream unavailable; %s@%s -> %s taken from peer %s", key, revision or "<default>", commit[:12], peer.url)
                return repo, commit, info
            except MirrorError as exc:
                log.info("peer %s could not give %s@%s: %s", peer.url, key, revision, exc.message)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                self.peers.fault(peer, f"malformed revision record: {exc}", integrity=True)
        return None

    async def _ref(self, url: str, pkey: str, key: RepoKey, revision: str) -> tuple[str | None, float | None]:
        names = [revision] if revision else ["", "main"]
        for name in names:
            try:
                rec = await self.client.ref(url, pkey, key.repo_type, key.repo_id, name)
            except MirrorError:
                continue
            commit, checked_at = rec.get("commit"), rec.get("checked_at")
            if not isinstance(commit, str) or not _HEX40.fullmatch(commit) or not isinstance(checked_at, (int, float)):
                raise ValueError("bad ref record")
            if self.clock.now() - checked_at > self.max_age:
                log.info("peer %s's record of %s@%s is too old to use", url, key, name or "<default>")
                continue
            return commit, float(checked_at)
        return None, None

    async def listing(self, key: RepoKey, commit: str) -> bool:
        """Store a commit's listing from a peer (upstream is down); True when one did."""
        for peer in self.peers.usable():
            try:
                if await self._revision(peer.url, peer.key, key, commit) is not None:
                    return True
            except MirrorError as exc:
                log.info("peer %s could not list %s@%s: %s", peer.url, key, commit[:12], exc.message)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                self.peers.fault(peer, f"malformed revision record: {exc}", integrity=True)
        return False

    async def _revision(self, url: str, pkey: str, key: RepoKey, commit: str) -> tuple[int, dict[str, Any]] | None:
        rec = await self.client.revision(url, pkey, key.repo_type, key.repo_id, commit)
        repo_rec, info, files = rec.get("repo"), rec.get("info"), rec.get("files")
        if rec.get("commit") != commit or not isinstance(repo_rec, dict) or not isinstance(files, list):
            raise ValueError("revision record does not match the request")
        if not isinstance(info, dict) or info.get("sha") != commit:
            raise ValueError("revision record's info is for another commit")
        entries = [entry_of(e) for e in files]
        repo = await self.repos.set_repo_info(key, private=bool(repo_rec.get("private")), gated=str(repo_rec.get("gated") or ""), info=None)
        await self.repos.set_commit_info(repo, commit, info)
        await self.repos.put_listing(repo, commit, entries, info)
        return repo, info
