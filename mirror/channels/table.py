"""The alias table every Hub route consults: a revision name -> the commit to serve, in
memory, with no upstream request and no database round trip on the hot path.

It holds every alias and every release name of the catalog. Any process that changes
them (the daemon's admin API, its canary controller, a `mirror alias ...` command) writes
the catalog first, then replaces the stamp file `<data_dir>/channels.stamp` (a new inode
each time); a process that serves checks the stamp's identity with one `stat` per look-up
and reloads when it moved, so a change is seen by the very next request. Should a writer
die between its commit and the stamp, `poll()` (the canary controller's tick) compares
the catalog's change counter and reloads too.

Order of precedence for a name: an alias, then a release, then upstream's branches and
tags (names that shadow those are refused unless forced: channels/aliases.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mirror.catalog.channels import AliasRow, ChannelCatalog
from mirror.channels.split import on_canary

log = logging.getLogger("mirror.channels")


@dataclass(frozen=True, slots=True)
class Pick:
    """What a local revision name resolved to for one client."""

    commit: str
    name: str  # the alias or release name asked for
    kind: str  # "alias" | "release"
    side: str = ""  # "stable" | "canary" for an alias with a canary running, else ""

    def describe(self) -> str:
        return f"{self.kind} {self.name}" + (f"; {self.side}" if self.side else "")


class AliasTable:
    def __init__(self, catalog: ChannelCatalog, stamp: Path) -> None:
        self.catalog = catalog
        self.stamp = stamp
        self._aliases: dict[tuple[int, str], AliasRow] = {}
        self._releases: dict[tuple[int, str], str] = {}
        self._seen: tuple[int, int] | None = None  # the stamp's (inode, mtime) at the last load
        self._generation: tuple[int, int] | None = None
        self._loaded = False
        self._lock = asyncio.Lock()

    async def pick(self, repo: int, name: str, client_key: str) -> Pick | None:
        if not self._loaded or self._stamp_id() != self._seen:
            await self.reload(only_if_moved=True)
        row = self._aliases.get((repo, name))
        if row is not None:
            if row.canary is None:
                return Pick(row.commit, name, "alias")
            if on_canary(row.salt, client_key, row.weight):
                return Pick(row.canary, name, "alias", "canary")
            return Pick(row.commit, name, "alias", "stable")
        commit = self._releases.get((repo, name))
        if commit is not None:
            return Pick(commit, name, "release")
        return None

    def has_any(self) -> bool:
        return bool(self._aliases or self._releases)

    async def reload(self, *, only_if_moved: bool = False) -> None:
        async with self._lock:
            seen = self._stamp_id()  # before the read: a change racing it reloads again
            if only_if_moved and self._loaded and seen == self._seen:
                return  # requests that queued behind one reload share it
            generation = await self.catalog.generation()
            aliases = {(a.repo, a.name): a for a in await self.catalog.aliases()}
            releases = {(r.repo, r.name): r.commit for r in await self.catalog.releases()}
            self._aliases, self._releases = aliases, releases
            self._seen, self._generation, self._loaded = seen, generation, True

    async def poll(self) -> None:
        """Reload if the catalog changed without the stamp moving (a writer that died
        between its commit and the stamp)."""
        if await self.catalog.generation() != self._generation:
            await self.reload()

    async def changed(self) -> None:
        """After a change committed by this process: move the stamp, then reload."""
        self.touch()
        await self.reload()

    def touch(self) -> None:
        tmp = self.stamp.with_name(f".{self.stamp.name}.{os.getpid()}")
        try:
            tmp.write_text(f"{os.getpid()} {os.urandom(8).hex()}\n")
            os.replace(tmp, self.stamp)  # a new inode: readers see a new identity
        except OSError as exc:
            # The change is committed; other processes see it at their next `poll`.
            tmp.unlink(missing_ok=True)
            log.warning("cannot move %s (%s); other processes see this change within a tick", self.stamp, exc.strerror)

    def _stamp_id(self) -> tuple[int, int]:
        try:
            st = os.stat(self.stamp)
        except FileNotFoundError:
            return (0, 0)
        return (st.st_ino, st.st_mtime_ns)
