"""A follower: this node serves the releases and aliases another node of the site (the
authority, `[channels] authority`) decides.

Every `[channels] tick` (and at start) it asks the authority for the channels it has
not copied yet (`GET /_peer/v1/channels`, a signed request; the answer must be signed by
the authority's key as this node's peer table knows it), page by page, and applies each
page in one catalog transaction (catalog/channel_copy.py). A page that changed what is
served moves the alias table's stamp, so the next request sees it.

The authority down (or not trusted, or answering nonsense): the follower keeps serving
its last copy and says so once per episode (a warning when it starts, a line when the
authority answers again; `mirror alias sync-status` shows the current one).

Releases are immutable here too: a release the authority has under a name this node
holds at another commit is an error, logged once, and never overwritten.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from mirror.catalog import Catalog
from mirror.catalog.channel_copy import Applied, Import
from mirror.catalog.repos import RepoCatalog
from mirror.channels.page import Page, parse_page
from mirror.channels.table import AliasTable
from mirror.errors import MirrorError
from mirror.model import RepoKey
from mirror.peers.client import PeerClient
from mirror.peers.membership import Peer, Peers

log = logging.getLogger("mirror.channels")

# Pages one pull reads at most (the rest follows next tick).
MAX_PAGES = 50


class AuthorityUnavailable(Exception):
    """The authority cannot be asked now (down, untrusted, refusing us, unreadable)."""


class Follower:
    def __init__(self, authority: str, peers: Peers, client: PeerClient, catalog: Catalog, table: AliasTable,
                 tick: float) -> None:
        self.authority = authority.rstrip("/")
        self.peers = peers
        self.client = client
        self.catalog = catalog
        self.table = table
        self.interval = tick
        self._down = ""  # why the current episode's pulls fail ('' while they work)
        self._conflicts: set[tuple[int, str, str, str]] = set()  # logged once each
        self._chained = ""

    async def forever(self) -> None:
        while True:
            try:
                await self.pull()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("channels: pulling from the authority %s failed; next pull in %.1fs", self.authority,
                              self.interval)
            await asyncio.sleep(self.interval)

    async def pull(self) -> list[Applied]:
        """Copy what the authority changed since the last pull (bounded: MAX_PAGES)."""
        try:
            done = await self._pull()
        except AuthorityUnavailable as exc:
            await self._failed(str(exc))
            return []
        if self._down:
            log.info("channels: the authority %s answers again; copying its releases and aliases", self.authority)
            self._down = ""
        return done

    async def _pull(self) -> list[Applied]:
        peer = await self._peer()
        state = await self.catalog.channel_copy.state(self.authority)
        after = (0, 0)
        if state is not None and state.authority_key == peer.key:
            after = (state.event, state.release_serial)
        elif state is not None and state.authority_key:
            log.warning("channels: the authority %s has a new key (%s, was %s); copying its channels from the start",
                        self.authority, peer.key[:16], state.authority_key[:16])
        done: list[Applied] = []
        for _ in range(MAX_PAGES):
            page = await self._page(peer, after)
            if page.event < after[0] or page.release_serial < after[1]:
                log.warning("channels: the authority %s is behind this copy (event %d < %d); its catalog was rebuilt? "
                            "copying its channels from the start", self.authority, page.event, after[0])
                await self.catalog.channel_copy.reset(self.authority)
                after = (0, 0)
                page = await self._page(peer, after)
            self._note_chain(page.follows)
            applied = await self.catalog.channel_copy.apply(self.authority, peer.key, after,
                                                            await to_import(page, self.catalog.repos))
            if applied.stale:
                log.warning("channels: the copy of %s moved meanwhile (another process follows it?); next tick",
                            self.authority)
                return done
            done.append(applied)
            await self._report(applied)
            if applied.serving_changed:
                await self.table.changed()
            after = (page.event, page.release_serial)
            if not page.more:
                break
        return done

    async def _peer(self) -> Peer:
        peer = next((p for p in self.peers.all() if p.url == self.authority), None)
        if peer is None:
            peer = self.peers.add(self.authority, "static")
        if peer.state == "unknown":
            await self.peers.check(peer)  # the first pull need not wait for the health loop
        if peer.state != "up" or not peer.key:
            why = {"self": "it is this node", "untrusted": f"its key {peer.key[:16]} is not trusted here (mirror keys trust)",
                   "refused": "it refuses this node's key (on it: mirror keys trust <this node's key>)"}.get(peer.state)
            raise AuthorityUnavailable(why or f"it is {peer.state}{': ' + peer.reason if peer.reason else ''}")
        return peer

    async def _page(self, peer: Peer, after: tuple[int, int]) -> Page:
        try:
            data = await self.client.channels(self.authority, peer.key, after[0], after[1])
        except MirrorError as exc:
            raise AuthorityUnavailable(exc.message) from None
        try:
            return parse_page(data)
        except ValueError as exc:
            raise AuthorityUnavailable(f"its channels answer is malformed: {exc}") from None

    async def _report(self, applied: Applied) -> None:
        for conflict in applied.conflicts:
            if conflict not in self._conflicts:
                self._conflicts.add(conflict)
                repo, name, theirs, ours = conflict
                key = await self.catalog.repos.key_of(repo) or f"repo #{repo}"
                log.error("channels: release %s of %s is commit %s at the authority %s but %s here; releases are "
                          "immutable, so this node keeps its own and does not apply the authority's",
                          name, key, theirs[:12], self.authority, ours[:12])
        if applied.serving_changed or applied.events:
            log.info("channels: copied from %s: %d history events, %d releases added, %d removed, %d aliases changed",
                     self.authority, applied.events, len(applied.releases_added), len(applied.releases_removed),
                     applied.aliases_changed)

    def _note_chain(self, follows: str) -> None:
        if follows and follows != self._chained:
            log.warning("channels: the authority %s itself follows %s; point [channels] authority at that node",
                        self.authority, follows)
        self._chained = follows

    async def _failed(self, why: str) -> None:
        if self._down == why:
            return
        if not self._down:  # one warning per episode; a changed reason is only recorded
            log.warning("channels: cannot pull from the authority %s (%s); serving the last copy", self.authority, why)
        self._down = why
        try:
            await self.catalog.channel_copy.note_error(self.authority, why)
        except MirrorError as exc:
            log.debug("cannot record the follow error: %s", exc.message)


async def to_import(page: Page, repos: RepoCatalog) -> Import:
    """A page with this node's repo ids (repos it did not know are created: their commit
    info and listings come on demand, from upstream or a peer, like any repo's)."""
    ids: dict[RepoKey, int] = {}
    for key in sorted(page.keys(), key=str):
        rid = await repos.repo_id(key, create=True)
        assert rid is not None
        ids[key] = rid
    return Import(
        page.event, page.release_serial,
        [replace(e, repo=ids[k]) for k, e in page.events],
        [replace(r, repo=ids[k]) for k, r in page.releases],
        None if page.aliases is None else [replace(a, repo=ids[k]) for k, a in page.aliases],
        None if page.index is None else {(ids[k], name, commit) for k, name, commit in page.index},
    )
