"""The Resolver: the one object the HTTP edge (and `mirror pull`/`sync`) talk to.

It owns the upstream client and wires metadata, access, fills, files and pass-through
calls together; `start`/`close` bound the lifetime of its upstream session and of every
background fill task.
"""

from __future__ import annotations

from mirror.config import Config
from mirror.resolve.access import Access
from mirror.resolve.files import Files
from mirror.resolve.fill import Fetcher
from mirror.resolve.metadata import Metadata
from mirror.resolve.passthrough import Passthrough
from mirror.services import Services
from mirror.upstream.client import HubClient


class Resolver:
    def __init__(self, svc: Services, config: Config) -> None:
        self.svc = svc
        self.config = config
        self.hub = HubClient(config.upstream)
        self.access = Access(self.hub, svc.catalog, svc.clock, config.cache.auth_ttl)
        self.metadata = Metadata(self.hub, svc.catalog, svc.clock, config.cache, self.access)
        self.fetcher = Fetcher(self.hub, svc.ingestor, svc.catalog, svc.layout, config)
        self.files = Files(self.metadata, self.access, self.fetcher, svc.catalog, svc.store, svc.reader, self.hub, config)
        self.passthrough = Passthrough(self.hub, svc.catalog, self.access)

    async def start(self, *, recover: bool = True) -> None:
        await self.hub.start()
        if recover:
            await self.fetcher.recover()

    async def close(self) -> None:
        await self.fetcher.close()
        await self.hub.close()
