"""`mirror sync --from URL`: replicate another mirror's revisions by its changelog.

A run holds `locks/sync.lock` (the lock of `mirror sync`: a sync and a replication on
one data directory never overlap; a second run exits 0, "already running"), then:

1. says hello to the source: its key (proven by its signed answer) must be trusted here,
   and the source must trust this node's key (its peer API refuses others);
2. reads the changes after the serial applied from that source (serial 0: a snapshot of
   every listed commit and every ref), page by page, in serial order, and applies each
   one whose repo is watched (`repos`: ids or fnmatch patterns over `org/name` or
   `datasets/org/name`; none = every repo):
   - a listing: the revision (signed answer: repo flags, commit info, entries checked
     one by one); every file the source holds whose content is not complete here is
     copied (copier.py: verified manifest, missing chunks only, the file hash), then the
     flags, the commit info and the listing are stored;
   - a ref: its commit as above, then the ref with the source's `checked_at` (0, "ask
     upstream first", when the source no longer says so), unless this node's record is
     newer; a ref is not moved to a commit this node cannot list (the source has not
     listed it yet): the listing change that follows moves it; a ref whose revision
     failed waits for the next run with it;
   - a manifest: a file the source has stored since it listed its revision, copied
     when a watched revision here names it;
3. records the serial applied once every change up to it is committed. A killed or
   failed run starts again from there and skips what is already stored (contents by
   their complete manifests, listings, refs), so re-runs are cheap and nothing is lost.

Visibility only tightens here: a repo this node knows as private or gated stays so
whatever the source says (upstream tells this node otherwise when it is asked).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Sequence

from yarl import URL

from mirror.catalog.changes import ChangeCatalog
from mirror.catalog.repos import RepoCatalog
from mirror.errors import BadSignature, MirrorError, PeerError, PeerRefused, UsageError
from mirror.flock import FileLock
from mirror.ingest import Ingestor
from mirror.manifest import IDENTITY_RE
from mirror.model import FileEntry, RepoKey
from mirror.peers import wire
from mirror.peers.auth import TrustStore
from mirror.peers.client import PeerClient
from mirror.peers.copier import FileCopier
from mirror.peers.service import entry_of
from mirror.resolve.metadata import strip_xet

log = logging.getLogger("mirror.peers")

_HEX40 = wire.COMMIT_RE
_REF = re.compile(r"[A-Za-z0-9._/-]{0,255}", re.ASCII)
# Files copied at once within one revision.
_FILES_AT_ONCE = 4
# What became of a revision.
_LISTED, _ABSENT, _FAILED = "listed", "absent", "failed"


def source_url(url: str) -> str:
    """The base URL of a source node, normalised (the key its progress is kept under)."""
    try:
        u = URL(url)
    except (ValueError, TypeError):
        u = None
    if u is None or u.scheme not in ("http", "https") or not u.raw_host or u.user or u.query_string or u.fragment:
        raise UsageError(f"--from {url!r}: give the base URL of a mirror node, like http://10.0.0.2:8090")
    return url.rstrip("/")


@dataclass
class ReplicationReport:
    source: str
    source_key: str = ""
    serial_from: int = 0
    serial: int = 0  # applied after this run
    revisions: int = 0  # revisions stored or confirmed complete
    refs: int = 0  # refs moved or refreshed
    files: int = 0  # contents copied
    files_present: int = 0  # contents complete here already
    files_absent: int = 0  # listed, but not stored at the source (yet)
    chunks_fetched: int = 0
    bytes_fetched: int = 0
    chunks_present: int = 0  # chunks of copied contents this node held already
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "source": self.source, "source_key": self.source_key, "serial_from": self.serial_from,
            "serial": self.serial, "revisions": self.revisions, "refs": self.refs, "files": self.files,
            "files_present": self.files_present, "files_absent": self.files_absent,
            "chunks_fetched": self.chunks_fetched, "bytes_fetched": self.bytes_fetched,
            "chunks_present": self.chunks_present, "failures": self.failures,
        }


@dataclass
class _Run:
    base: str
    key: str
    watch: list[str] | None
    report: ReplicationReport
    blocked: bool = False  # a change failed: the applied serial stays before it
    stopped: bool = False  # the source went away or refuses this node now
    done: set[tuple[RepoKey, str]] = field(default_factory=set)
    contents: set[str] = field(default_factory=set)

    def watched(self, key: RepoKey) -> bool:
        return self.watch is None or any(fnmatchcase(str(key), p) for p in self.watch)

    def fail(self, what: str) -> None:
        self.report.failures.append(what)
        self.blocked = True


class Replicator:
    def __init__(self, client: PeerClient, trust: TrustStore, copier: FileCopier, ingestor: Ingestor,
                 repos: RepoCatalog, changes: ChangeCatalog, lock: FileLock) -> None:
        self.client = client
        self.trust = trust
        self.copier = copier
        self.ingestor = ingestor
        self.repos = repos
        self.changes = changes
        self.lock = lock

    async def run(self, url: str, repos: Sequence[str] | None = None, *, wait: bool = False) -> ReplicationReport:
        """Replicate the source at `url` (every repo, or those `repos` match), holding
        the sync lock (LockBusy when another sync runs, unless `wait`)."""
        base = source_url(url)
        async with self.lock.held_async(wait=wait):
            return await self._run(base, list(repos) if repos else None)

    async def _run(self, base: str, watch: list[str] | None) -> ReplicationReport:
        report = ReplicationReport(base)
        try:
            hello = await self.client.hello(base)
        except PeerError as exc:
            if exc.peer_status in (401, 403):
                raise PeerRefused(f"source {base} refused this node ({exc.message}); on the source, run "
                                  f"`mirror keys trust {self.client.key.public_hex}`", status=403) from None
            raise
        if hello.public_key == self.client.key.public_hex:
            raise UsageError(f"--from {base} is this node itself")
        if not await self.trust.is_trusted(hello.public_key):
            raise PeerRefused(f"source {base} has key {hello.public_key}, which this node does not trust; check it "
                              f"(`mirror keys show` there) and run `mirror keys trust {hello.public_key}`", status=403)
        report.source_key = hello.public_key
        since = await self.changes.applied(base)
        if hello.serial < since:
            log.warning("source %s is at serial %d, before the %d applied here (its catalog was replaced?): "
                        "replicating from its snapshot", base, hello.serial, since)
            since = 0
        report.serial_from = report.serial = since
        run = _Run(base, hello.public_key, watch, report)
        while True:
            page = await self.client.changes(base, run.key, since)
            serial, items, more = _page(page, since)
            await self._apply(run, items)
            if not run.blocked and serial > report.serial:
                await self._applied(run, serial)
            if run.stopped or not more or serial <= since:
                break
            since = serial
        return report

    async def _applied(self, run: _Run, serial: int) -> None:
        await self.changes.set_applied(run.base, serial)
        run.report.serial = serial

    async def _apply(self, run: _Run, items: list[dict[str, Any]]) -> None:
        done_serial = 0  # every change up to this serial is committed
        for change in items:
            serial = change["serial"]
            if not run.blocked and done_serial > run.report.serial and serial > done_serial:
                await self._applied(run, done_serial)
            try:
                await self._change(run, change)
            except PeerError as exc:
                run.fail(f"{_what(change)}: {exc.message}")
                if exc.peer_status in (0, 401, 403):
                    run.stopped = True  # the source is gone or refuses this node now
                    return
            except (MirrorError, ValueError) as exc:
                run.fail(f"{_what(change)}: {getattr(exc, 'message', exc)}")
            done_serial = serial

    async def _change(self, run: _Run, change: dict[str, Any]) -> None:
        kind = change.get("kind")
        if kind == "manifest":
            await self._stored_at_source(run, str(change.get("identity", "")))
            return
        if kind not in ("listing", "ref"):
            return  # manifest-deleted: this node's own lifecycle decides what it keeps
        key = _repo_key(change)
        commit = str(change.get("commit", ""))
        if not _HEX40.fullmatch(commit):
            raise ValueError("malformed commit in a change")
        if not run.watched(key):
            return
        if kind == "listing":
            if await self._revision(run, key, commit) == _LISTED:
                await self._follow_refs(run, key, commit)
            return
        name = str(change.get("ref", ""))
        if not _REF.fullmatch(name) or ".." in name.split("/"):
            raise ValueError("malformed ref name in a change")
        state = await self._revision(run, key, commit)
        if state != _FAILED:  # else the ref waits with its revision for the next run
            await self._ref(run, key, name, commit, state == _LISTED)

    # --- revisions -------------------------------------------------------------------------

    async def _revision(self, run: _Run, key: RepoKey, commit: str) -> str:
        """Copy one revision: _LISTED here afterwards, _ABSENT (the source does not list
        it) or _FAILED (a file failed; recorded)."""
        if (key, commit) in run.done:
            return _LISTED
        try:
            rec = await self.client.revision(run.base, run.key, key.repo_type, key.repo_id, commit)
        except PeerError as exc:
            if exc.peer_status == 404:
                return _ABSENT
            raise
        private, gated, info, entries = _revision(rec, key, commit)
        contents: dict[str, FileEntry] = {}
        for e in entries:
            if e.kind == "file" and contents.setdefault(e.identity, e).size != e.size:
                raise BadSignature(f"{key}@{commit[:12]}: two sizes listed for {e.identity}")
        failed: list[str] = []
        queue = list(contents.values())

        async def worker() -> None:
            while queue:
                e = queue.pop()
                try:
                    await self._content(run, e.identity, e.size)
                except MirrorError as exc:
                    failed.append(f"{key}@{commit[:12]} {e.path}: {exc.message}")

        # Every worker ends before anything is raised: none copies on unobserved.
        errors = await asyncio.gather(*(worker() for _ in range(_FILES_AT_ONCE)), return_exceptions=True)
        for err in errors:
            if isinstance(err, BaseException):
                raise err
        if failed:
            for f in failed:
                run.fail(f)
            return _FAILED
        await self._store(key, commit, private, gated, info, entries)
        run.done.add((key, commit))
        run.report.revisions += 1
        log.info("replicated %s@%s from %s (%d files)", key, commit[:12], run.base, len(contents))
        return _LISTED

    async def _content(self, run: _Run, identity: str, size: int) -> None:
        if identity in run.contents:
            return
        rep = run.report
        if await self.ingestor.complete_manifest(identity) is not None:
            rep.files_present += 1
        else:
            copied = await self.copier.copy(run.base, run.key, identity, size)
            if copied is None:
                rep.files_absent += 1  # a later 'manifest' change brings it
            else:
                rep.files += 1
                rep.chunks_fetched += copied.chunks_fetched
                rep.bytes_fetched += copied.bytes_fetched
                rep.chunks_present += copied.chunks_present
        run.contents.add(identity)

    async def _store(self, key: RepoKey, commit: str, private: bool, gated: str, info: dict[str, Any] | None,
                     entries: list[FileEntry]) -> None:
        row = await self.repos.get_repo(key)
        if row is not None and row.known:
            private, gated = private or row.private, gated or row.gated
        if row is None or not row.known or (row.private, row.gated) != (private, gated):
            rid = await self.repos.set_repo_info(key, private=private, gated=gated, info=None)
        else:
            rid = row.id
        if await self.repos.get_listing(rid, commit) is None:
            await self.repos.put_listing(rid, commit, entries, info)
        elif info is not None and await self.repos.commit_info(rid, commit) is None:
            await self.repos.set_commit_info(rid, commit, info)

    async def _stored_at_source(self, run: _Run, identity: str) -> None:
        """The source stored a content since: copy it if a watched revision here lists it."""
        if not IDENTITY_RE.fullmatch(identity):
            raise ValueError("malformed identity in a change")
        for key, entry in await self.repos.files_with(identity):
            if run.watched(key):
                await self._content(run, identity, entry.size)
                return

    # --- refs ------------------------------------------------------------------------------

    async def _ref(self, run: _Run, key: RepoKey, name: str, commit: str, listed: bool,
                   checked: float | None = None) -> None:
        rid = await self.repos.repo_id(key)
        assert rid is not None
        local = await self.repos.get_ref(rid, name)
        if local is not None and not listed and local[0] != commit and await self.repos.get_listing(rid, local[0]) is not None:
            return  # keep serving a commit listed here; the listing change moves the ref
        if checked is None:
            checked = await self._checked_at(run, key, name, commit)
        if local is not None and local[1] >= checked and (local[0] == commit or checked > 0):
            return  # this node's record is as new (a ref checked at 0 is re-asked upstream first)
        await self.repos.set_ref(rid, name, commit, checked_at=checked)
        run.report.refs += 1

    async def _follow_refs(self, run: _Run, key: RepoKey, commit: str) -> None:
        """After a listing: the refs this node knows for the repo that the source now
        points at that commit (moves deferred while the source had not listed it)."""
        rid = await self.repos.repo_id(key, create=False)
        if rid is None:
            return
        for name, sha in (await self.repos.refs_of(rid)).items():
            if sha != commit:
                checked = await self._checked_at(run, key, name, commit)
                if checked > 0:
                    await self._ref(run, key, name, commit, True, checked)

    async def _checked_at(self, run: _Run, key: RepoKey, name: str, commit: str) -> float:
        """When the source last checked upstream that `name` is `commit` (0: it does
        not say so now)."""
        try:
            ans = await self.client.ref(run.base, run.key, key.repo_type, key.repo_id, name)
        except PeerError as exc:
            if exc.peer_status == 404:
                return 0.0
            raise
        if not isinstance(ans, dict):
            return 0.0
        at = ans.get("checked_at")
        if ans.get("commit") != commit or isinstance(at, bool) or not isinstance(at, (int, float)):
            return 0.0
        return float(at)


def _page(page: Any, since: int) -> tuple[int, list[dict[str, Any]], bool]:
    if not isinstance(page, dict) or not isinstance(page.get("changes"), list):
        raise PeerError("source sent a malformed changes page")
    serial, more = page.get("serial"), page.get("more")
    if isinstance(serial, bool) or not isinstance(serial, int) or serial < 0 or not isinstance(more, bool):
        raise PeerError("source sent a malformed changes page")
    items = []
    for c in page["changes"]:
        s = c.get("serial") if isinstance(c, dict) else None
        if isinstance(s, bool) or not isinstance(s, int) or s > serial:
            raise PeerError("source sent a malformed change")
        items.append(c)
    items.sort(key=lambda c: c["serial"])
    return serial, items, more


def _repo_key(d: dict[str, Any]) -> RepoKey:
    return wire.repo_key(d.get("repo_type"), d.get("repo_id"))


def _revision(rec: Any, key: RepoKey, commit: str) -> tuple[bool, str, dict[str, Any] | None, list[FileEntry]]:
    """(private, gated, info, entries) of a revision record, checked."""
    try:
        repo, files = rec["repo"], rec["files"]
        if _repo_key(repo) != key or rec.get("commit") != commit or not isinstance(files, list):
            raise ValueError("the record is for another revision")
        private, gated = repo.get("private"), repo.get("gated") or ""
        if not isinstance(private, bool) or not isinstance(gated, str):
            raise ValueError("malformed repo flags")
        entries = [entry_of(e) for e in files]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadSignature(f"source sent a malformed revision record for {key}@{commit[:12]} ({exc})") from None
    info = rec.get("info")
    info = strip_xet(info) if isinstance(info, dict) and info.get("sha") == commit else None
    return private, gated, info, entries


def _what(change: dict[str, Any]) -> str:
    if change.get("kind") == "manifest":
        return f"content {change.get('identity')}"
    where = f"{change.get('repo_type')}/{change.get('repo_id')}@{str(change.get('commit', ''))[:12]}"
    return f"{change.get('kind')} {where}" + (f" ({change.get('ref')})" if change.get("ref") is not None else "")
