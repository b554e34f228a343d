"""The catalog: every fact about repos and content, in SQLite. Every SQL statement of the
project lives in this package.

`Catalog` groups the per-noun parts (`repos`, `content`, `meta`, `api`, `pins`, `usage`, `changes`,
`tokens`, `audit`, `scans`, `channels`, `channel_copy`, `versions`, `tallies`) over one `Database`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mirror.catalog.apicache import ApiCache
from mirror.catalog.audit import AuditCatalog
from mirror.catalog.changes import ChangeCatalog
from mirror.catalog.channel_copy import ChannelCopy
from mirror.catalog.channels import ChannelCatalog
from mirror.catalog.content import ContentCatalog, StoreStats
from mirror.catalog.db import Database
from mirror.catalog.lifecycle import LifecycleCatalog
from mirror.catalog.meta import MetaCatalog
from mirror.catalog.pins import PinCatalog
from mirror.catalog.quarantine import ScanCatalog
from mirror.catalog.repos import RepoCatalog, RepoRow
from mirror.catalog.tallies import TallyCatalog
from mirror.catalog.tokens import TokenCatalog
from mirror.catalog.usage import UsageCatalog
from mirror.catalog.versions import VersionCatalog
from mirror.clock import Clock, SystemClock
from mirror.errors import StorageError

__all__ = ["Catalog", "StoreStats", "RepoRow"]

log = logging.getLogger("mirror.catalog")


class Catalog:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self.repos = RepoCatalog(db, clock.now, clock.monotonic)
        self.content = ContentCatalog(db, clock.now)
        self.meta = MetaCatalog(db, clock.now)
        self.api = ApiCache(db, clock.now)
        self.lifecycle = LifecycleCatalog(db, clock.now)
        self.pins = PinCatalog(db, clock.now)
        self.usage = UsageCatalog(db)
        self.changes = ChangeCatalog(db, clock.now)
        self.tokens = TokenCatalog(db, clock.now)
        self.audit = AuditCatalog(db, clock.now)
        self.scans = ScanCatalog(db, clock.now)
        self.channels = ChannelCatalog(db, clock.now)
        self.channel_copy = ChannelCopy(db, clock.now)
        self.versions = VersionCatalog(db, clock.now)
        self.tallies = TallyCatalog(db)

    @classmethod
    async def open(cls, path: Path, clock: Clock | None = None) -> "Catalog":
        return cls(await Database.open(path), clock or SystemClock())

    async def close(self) -> None:
        """Flush batched records and close. Records a full disk refuses are dropped
        with one log line (access times and counters; nothing that serving needs)."""
        try:
            await self.meta.flush()
        except StorageError as exc:
            log.warning("closing the catalog without its last access records: %s", exc.message)
        finally:
            await self.db.close()
