"""The running node: every component `open_node` (node.py, the composition root) built,
as one value, and what the node does over its lifetime: the daemon's background tasks
(`start_background`), telling peers where it is (`announce`), the periodic flush of
batched records, and an orderly close that cancels and awaits every task before the
catalog and the worker pools close. Nothing here constructs a component.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType

from mirror.admin.bundle_import import BundleImporter
from mirror.admin.export import Exporter
from mirror.admin.hfcache import HfCacheImporter
from mirror.audit.log import AuditLog
from mirror.auth.gate import Gate
from mirror.auth.tokens import TokenStore
from mirror.auth.totp import Totp
from mirror.catalog import Catalog
from mirror.channels.aliases import Channels
from mirror.channels.canary import CanaryController
from mirror.channels.follow import Follower
from mirror.channels.releases import Releases
from mirror.channels.webhook import Webhook
from mirror.channels.metrics import VersionMetrics
from mirror.clock import Clock
from mirror.config import Config
from mirror.errors import MirrorError, StorageError
from mirror.ingest import Ingestor
from mirror.keys import NodeKey
from mirror.lifecycle.archive import Archiver
from mirror.lifecycle.evict import Evictor
from mirror.lifecycle.gc import Collector
from mirror.lifecycle.job import LifecycleJob
from mirror.obs.metrics import Metrics
from mirror.obs.wrappers import MeteredFiles
from mirror.peers.auth import PeerAuth, TrustStore
from mirror.peers.client import PeerClient
from mirror.peers.discovery import Discovery
from mirror.peers.membership import Peers
from mirror.peers.replicate import Replicator
from mirror.peers.service import PeerService
from mirror.resolve.access import Access
from mirror.resolve.files import Files
from mirror.resolve.fetcher import Fetcher
from mirror.resolve.metadata import Metadata
from mirror.resolve.passthrough import Passthrough
from mirror.scan.quarantine import Quarantine
from mirror.scheduler import Scheduler
from mirror.s3.manifests import BucketManifests
from mirror.s3.refs import RefPublisher
from mirror.store.chunkstore import ChunkStore
from mirror.store.layout import Layout
from mirror.store.leases import LeaseTable
from mirror.store.packs import PackStore
from mirror.store.s3packs import S3PackStore
from mirror.store.reader import ChunkReader
from mirror.store.space import SpaceGuard
from mirror.sync.run import Syncer
from mirror.ui.dashboard import Dashboard
from mirror.ui.history import TrafficHistory
from mirror.verify import Verifier
from mirror.upstream.client import HubClient

log = logging.getLogger("mirror")

# Seconds between batched writes of access times and counters (never one per request).
FLUSH_INTERVAL = 2.0


@dataclass
class Node:
    config: Config
    clock: Clock
    layout: Layout
    store: ChunkStore
    packs: PackStore | S3PackStore
    catalog: Catalog
    key: NodeKey
    executor: ThreadPoolExecutor
    write_executor: ThreadPoolExecutor
    leases: LeaseTable
    ingestor: Ingestor
    reader: ChunkReader
    scheduler: Scheduler
    # Lifecycle and admin.
    archiver: Archiver
    evictor: Evictor
    collector: Collector
    lifecycle: LifecycleJob
    bundles: BundleImporter
    exporter: Exporter
    hfcache: HfCacheImporter
    verifier: Verifier
    # Serving (upstream session opened by `open_node(..., online=True)`).
    hub: HubClient
    access: Access
    metadata: Metadata
    space: SpaceGuard
    fetcher: Fetcher
    files: Files
    passthrough: Passthrough
    syncer: Syncer
    # Peers (the peer client's session is opened with the upstream one).
    trust: TrustStore
    peer_client: PeerClient
    peers: Peers
    peer_auth: PeerAuth
    peer_service: PeerService
    replicator: Replicator  # `mirror sync --from`
    discovery: Discovery
    audit: AuditLog
    # Access control.
    tokens: TokenStore
    totp: Totp
    gate: Gate
    quarantine: Quarantine
    # Releases and channels.
    releases: Releases
    channels: Channels
    webhook: Webhook
    version_metrics: VersionMetrics
    canary: CanaryController
    follower: Follower | None  # with `[channels] authority`: copies the authority's channels
    # The web dashboard: its read model and the traffic sampler behind its chart.
    history: TrafficHistory
    dashboard: Dashboard
    # What the HTTP edge serves files through: `files`, wrapped when metrics are on.
    http_files: Files | MeteredFiles
    metrics: Metrics | None = None
    # [store] backend = "s3": what this node tells the nodes sharing its bucket.
    bucket_manifests: BucketManifests | None = None
    bucket_refs: RefPublisher | None = None
    online: bool = False

    async def __aenter__(self) -> "Node":
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    def start_background(self) -> None:
        """The daemon's background work: the access flush, the sync schedule and the
        lifecycle schedule (`fetcher.recover()` is awaited before serving)."""
        self.scheduler.spawn(self._flush_loop(), name="flush")
        if self.config.sync.interval > 0:
            self.scheduler.spawn(self.syncer.forever(self.config.sync.interval), name="sync")
        interval = self.archiver.policy.interval
        if interval > 0:
            self.scheduler.spawn(self.lifecycle.forever(interval), name="lifecycle")
        self.scheduler.spawn(self.peers.forever(), name="peers")
        if self.follower is not None:
            self.scheduler.spawn(self.follower.forever(), name="channels-follow")  # the authority decides canaries
        else:
            self.scheduler.spawn(self.canary.forever(), name="canary")
        self.scheduler.spawn(self.history.forever(), name="traffic-history")
        if self.config.channels.webhook:
            self.scheduler.spawn(self.webhook.forever(), name="webhook")
        if self.bucket_refs is not None:
            self.scheduler.spawn(self._publish_refs(), name="bucket-refs")

    async def _publish_refs(self) -> None:
        """At start: tell the nodes sharing the bucket what this node references."""
        try:
            await self.bucket_refs.publish_full()  # type: ignore[union-attr]
        except MirrorError as exc:
            log.warning("cannot publish this node's references to the bucket: %s (again at the next gc)", exc.message)

    def announce(self, url: str) -> None:
        """Tell peers how to reach this node (the bound address, known after listen)."""
        url = self.config.peers.advertise_url.rstrip("/") or url
        self.peers.self_url = url
        self.peer_service.url = url
        if self.config.peers.discovery:
            self.scheduler.spawn(self.discovery.start(url), name="discovery")

    async def _flush_loop(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await self.catalog.meta.flush()
                await self.audit.flush()
                await self.tokens.flush()
                await self.version_metrics.flush()
                if failing:
                    log.info("access records are written again")
                failing = False
            except StorageError as exc:
                if not failing:  # one line per episode, not one every two seconds
                    log.warning("cannot write access records (%s); will retry", exc.message)
                failing = True
            except Exception:
                log.exception("flushing access records failed; will retry")

    async def close(self) -> None:
        try:
            await self.scheduler.close()
            await self.discovery.close()  # after the scheduler: its start task is over
            await self.webhook.close()
            try:
                await self.audit.close()
            except Exception:
                log.exception("cannot write the last audit records")
            try:
                await self.version_metrics.flush()
            except StorageError as exc:
                log.warning("closing without the last per-version traffic counts: %s", exc.message)
            except Exception:
                log.exception("cannot write the last per-version traffic counts")
            if self.online:
                await self.hub.close()
                await self.peer_client.close()
        finally:
            if self.bucket_manifests is not None:  # queued publications finish (bounded)
                await asyncio.to_thread(self.bucket_manifests.wait, 10.0)
            if self.bucket_refs is not None:
                await asyncio.to_thread(self.bucket_refs.flush, 10.0)
            await self.catalog.close()
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.write_executor.shutdown(wait=True, cancel_futures=True)
