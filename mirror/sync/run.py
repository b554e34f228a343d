"""One sync run over a watch list, and the daemon's periodic loop.

`Syncer.run` plans every watched repo (resolving each revision once), then fetches the
missing contents, then reports per repo what changed. It takes no lock itself: the CLI
and `Syncer.forever` hold `locks/sync.lock` (`Syncer.lock`) around it so overlapping
runs never race.
Failures (an unknown repo, a revision upstream does not have, a file that fails its
hash) are listed in the report; the rest of the watch list still syncs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable

from mirror.audit.actor import SCHEDULED
from mirror.audit.log import AuditLog
from mirror.caller import ANONYMOUS, Caller
from mirror.catalog.meta import MetaCatalog
from mirror.catalog.repos import RepoCatalog
from mirror.config import SyncConfig, SyncRepo
from mirror.flock import FileLock
from mirror.resolve.files import Files
from mirror.resolve.fetcher import Fetcher
from mirror.resolve.metadata import Metadata
from mirror.sync.fetch import ProgressFn, fetch_all
from mirror.sync.plan import Planner, RepoPlan

log = logging.getLogger("mirror.sync")


@dataclass
class RepoReport:
    plan: RepoPlan
    files_fetched: int = 0
    bytes_fetched: int = 0
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.plan.errors

    def to_json(self, dry_run: bool) -> dict[str, Any]:
        p = self.plan
        out: dict[str, Any] = {
            "repo": p.key.repo_id,
            "repo_type": p.key.repo_type,
            "revisions": {r.revision: r.commit for r in p.revisions},
            "revisions_updated": [r.revision for r in p.revisions if r.updated],
            "files_fetched": self.files_fetched,
            "bytes_fetched": self.bytes_fetched,
            "bytes_reused": p.reused_bytes,
            "errors": p.errors + self.failed,
        }
        if dry_run:
            out["plan"] = [
                {"path": t.entry.path, "commit": t.commit, "size": t.entry.size, "identity": t.entry.identity} for t in p.fetch
            ]
            out["files_to_fetch"] = len(p.fetch)
            out["bytes_to_fetch"] = p.fetch_bytes
        return out


@dataclass
class SyncReport:
    repos: list[RepoReport]
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.repos)

    @property
    def failures(self) -> list[str]:
        return [e for r in self.repos for e in r.plan.errors + r.failed]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "repos": [r.to_json(self.dry_run) for r in self.repos],
            "files_fetched": sum(r.files_fetched for r in self.repos),
            "bytes_fetched": sum(r.bytes_fetched for r in self.repos),
            "bytes_reused": sum(r.plan.reused_bytes for r in self.repos),
        }


def summary_line(report: SyncReport) -> str:
    """One line for cron mail and logs."""
    j = report.to_json()
    updated = sum(len(r["revisions_updated"]) for r in j["repos"])
    failed = len(report.failures)
    return (
        f"sync: {len(j['repos'])} repos, {updated} revisions updated, {j['files_fetched']} files fetched "
        f"({j['bytes_fetched']} bytes), {j['bytes_reused']} bytes reused" + (f", {failed} failures" if failed else "")
    )


class Syncer:
    def __init__(
        self,
        metadata: Metadata,
        files: Files,
        fetcher: Fetcher,
        repos: RepoCatalog,
        counters: MetaCatalog,
        config: SyncConfig,
        lock: FileLock,
        audit: AuditLog | None = None,
    ) -> None:
        self.audit = audit  # the scheduled rounds are audited like `mirror sync` runs
        self.metadata = metadata
        self.files = files
        self.fetcher = fetcher
        self.repos = repos
        self.counters = counters
        self.config = config
        self.lock = lock

    async def run(
        self,
        *,
        repos: Iterable[SyncRepo] | None = None,
        caller: Caller = ANONYMOUS,
        dry_run: bool = False,
        concurrency: int = 4,
        progress: ProgressFn | None = None,
    ) -> SyncReport:
        """Sync `repos` (default: the config's watch list) and report what happened."""
        specs = list(self.config.repos if repos is None else repos)
        planner = Planner(self.metadata, self.files, self.repos, caller)
        reports = [RepoReport(await planner.plan(spec)) for spec in specs]
        if dry_run:
            return SyncReport(reports, dry_run=True)
        tasks = [t for r in reports for t in r.plan.fetch]
        result = await fetch_all(self.files, self.fetcher, tasks, caller, concurrency=concurrency, progress=progress)
        owner = {id(t): r for r in reports for t in r.plan.fetch}
        for t in result.fetched:
            rep = owner[id(t)]
            rep.files_fetched += 1
            rep.bytes_fetched += t.entry.size
        for t, why in result.failed:
            owner[id(t)].failed.append(f"{t.key}@{t.commit[:12]} {t.entry.path}: {why}")
        await self.counters.flush()
        return SyncReport(reports)

    async def forever(self, interval: float) -> None:
        """The daemon's scheduled sync (`[sync] interval` seconds apart). A round is
        skipped when a CLI sync holds the lock; errors are logged and the loop goes on."""
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.lock.held_async():
                    report = await self.run()
                log.info("%s", summary_line(report))
                for failure in report.failures:
                    log.warning("sync: %s", failure)
                if self.audit is not None:
                    self.audit.record(SCHEDULED, "sync.run", "watch list", "ok" if report.ok else "error",
                                      repos=[str(r.plan.key) for r in report.repos][:100],
                                      files_fetched=sum(r.files_fetched for r in report.repos),
                                      bytes_fetched=sum(r.bytes_fetched for r in report.repos),
                                      failures=len(report.failures))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop must survive any one round
                log.warning("scheduled sync skipped: %s", getattr(exc, "message", exc))
