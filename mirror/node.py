"""The composition root: builds every component of a node from its config.

`open_node` is the only place that constructs components (the `Node` it returns, with its
background tasks and its close, is mirror/runtime.py); each receives exactly the
collaborators it uses as constructor arguments, and nothing builds its own clients. The
daemon (app.py) and every CLI command (cli/common.py `node_for`) open a node the same
way; the daemon then starts the node's background tasks. A `Node` is an async context
manager: closing it cancels and awaits every background task (its `Scheduler`), closes
the upstream session, flushes and closes the catalog, and stops the worker pools.

The wiring, in dependency order (arrows: "is given to"):

    layout -> LocalBackend, PackStore (or S3PackStore, [archive] url) -> ChunkStore -> Ingestor, ChunkReader
      ([store] backend = "s3": S3Client -> S3Backend, LocalBackend -> CachedBackend -> ChunkStore;
       S3Client -> BucketManifests, RefPublisher -> Ingestor (on_stored); BucketOrigin first
       in `origins`; RefPublisher, BucketCollector -> SharedGc -> Collector)
    Catalog (repos, content, meta, api, lifecycle, pins) -> everything that keeps facts
    HubClient -> Access -> Metadata -> Files;  HubClient -> UpstreamOrigin
    catalog.scans, ChunkStore, AuditLog -> Quarantine -> Files (scans before first serve)
    TrustStore -> PeerClient -> Peers -> PeerOrigin;  TrustStore -> PeerAuth;  Peers -> Discovery
    origins [PeerOrigin, UpstreamOrigin] -> Fetcher (fills) -> Files, Syncer
    Files, Fetcher, PeerOrigin -> PeerService (what peers are answered)
    PeerClient, TrustStore, ChunkStore, Ingestor -> FileCopier -> Replicator (sync --from)
    Archiver, Evictor, Collector -> LifecycleJob
    ChannelCatalog -> AliasTable -> Metadata (aliases and releases resolve before refs)
    AliasTable, Metadata, UpstreamNames(Passthrough) -> Channels -> Releases, CanaryController
    Catalog (audit), NodeKey -> AuditLog -> everything that audits (lifecycle, verify, CLI commands)
    catalog.channels (the outbox), the [channels] HMAC key -> Webhook (the daemon delivers)
    catalog.versions -> VersionMetrics (reported values, traffic per version: HTTP edge, gates)
    Metrics (`observe`, the daemon with [server] metrics) -> wrappers (obs/wrappers.py) around
        ChunkStore (the reader's), UpstreamOrigin, the Hub session and Files (the HTTP edge's)

A later issue adds a component here and nowhere else: a peer origin goes into `origins`
before upstream, an S3 backend replaces `LocalBackend`, a metrics wrapper wraps a
component before it is handed on.

Two thread pools: `executor` (`store.workers` threads) does the CPU work of the store
(hashing, compression, decompression, verification) for ingest and reads alike;
`write_executor` (`WRITE_THREADS`) only writes and fsyncs chunk temp files, so that
waiting for the disk never holds a CPU worker.

Opening runs startup recovery: temp files of interrupted writes are removed (a staged
chunk is never referenced before it is published, so dropping it is always safe).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from mirror.admin.bundle_import import BundleImporter
from mirror.admin.export import Exporter
from mirror.admin.hfcache import HfCacheImporter
from mirror.audit.log import AuditLog
from mirror.auth.gate import Gate
from mirror.auth.policy import RepoPolicy
from mirror.auth.tokens import TokenStore
from mirror.auth.totp import Totp
from mirror.catalog import Catalog
from mirror.channels.aliases import Channels
from mirror.channels.canary import CanaryController
from mirror.channels.follow import Follower
from mirror.channels.releases import Releases
from mirror.channels.shadow import UpstreamNames
from mirror.channels.table import AliasTable
from mirror.channels.webhook import Webhook
from mirror.channels.metrics import VersionMetrics
from mirror.clock import Clock, SystemClock
from mirror.config import Config, parse_duration, parse_size
from mirror.manifest import Manifest
from mirror.flock import FileLock
from mirror.ingest import Ingestor
from mirror.keys import NodeKey
from mirror.lifecycle.archive import Archiver
from mirror.lifecycle.evict import Evictor
from mirror.lifecycle.gc import Collector
from mirror.lifecycle.job import LifecycleJob
from mirror.lifecycle.policy import Policy
from mirror.obs.collectors import NodeCollector
from mirror.obs.figures import CatalogFigures
from mirror.obs.metrics import Metrics
from mirror.obs.wrappers import MeteredFiles, TimedChunks, VerdictOrigin, upstream_trace
from mirror.peers.auth import PeerAuth, TrustStore
from mirror.peers.client import PeerClient
from mirror.peers.copier import FileCopier
from mirror.peers.discovery import Discovery
from mirror.peers.membership import Peers
from mirror.peers.origin import PeerOrigin
from mirror.peers.records import PeerRecords
from mirror.peers.replicate import Replicator
from mirror.peers.service import PeerService
from mirror.resolve.access import Access
from mirror.resolve.files import Files
from mirror.resolve.fetcher import Fetcher
from mirror.resolve.metadata import Metadata
from mirror.resolve.origin import Origin
from mirror.resolve.passthrough import Passthrough
from mirror.resolve.upstream_origin import UpstreamOrigin
from mirror.scan.quarantine import Quarantine
from mirror.runtime import Node
from mirror.scheduler import Scheduler
from mirror.secretfile import read_secret_file, tune_malloc
from mirror.s3.credentials import load_credentials
from mirror.s3.gc import BucketCollector, SharedGc
from mirror.s3.manifests import BucketManifests
from mirror.s3.origin import BucketOrigin
from mirror.s3.refs import RefPublisher
from mirror.store.cached import CachedBackend
from mirror.store.chunkstore import ChunkStore
from mirror.store.fsio import remove_dead_temps
from mirror.store.layout import open_layout
from mirror.store.select import archive_tier, chunk_backend
from mirror.store.leases import LeaseTable
from mirror.store.reader import ChunkReader
from mirror.store.space import SpaceGuard
from mirror.sync.run import Syncer
from mirror.ui.dashboard import Dashboard
from mirror.ui.history import TrafficHistory
from mirror.verify import Verifier
from mirror.upstream.client import HubClient

log = logging.getLogger("mirror")


def _on_stored(manifests: BucketManifests | None, refs: RefPublisher | None) -> "Callable[[Manifest], None] | None":
    """What a stored manifest tells a shared bucket: the manifest, and this node's delta."""
    if manifests is None or refs is None:
        return None

    def stored(man: Manifest) -> None:
        refs.note(man)
        manifests.publish_soon(man)
    return stored

# Concurrent chunk writes + fsyncs. Measured on this machine's disk, 700 KiB files written
# and fsynced: 590 MB/s from one thread, 850 from two, about 1 GB/s from four and beyond.
WRITE_THREADS = 4


async def open_node(config: Config, *, clock: Clock | None = None, recover_temps: bool = True, online: bool = False,
                    observe: bool = False) -> Node:
    """Build a node on `config.store.data_dir`. `online` opens the upstream session
    (the daemon, `pull`, `sync`); offline commands never talk to the Hub. `observe`
    builds its metrics and the wrappers that feed them (the daemon's /metrics)."""
    tune_malloc()
    clock = clock or SystemClock()
    # Secrets and settings that can refuse the start are read before anything is opened
    # (a catalog connection or a worker pool left open would keep the process alive).
    service_token = read_secret_file(config.upstream.service_token_file, "upstream.service_token_file")
    webhook_secret = read_secret_file(config.channels.webhook_secret_file, "channels.webhook_secret_file",
                                      what="one HMAC key of at least 16 characters", min_len=16)
    s3_credentials = load_credentials(config.s3.credentials_file)
    layout = open_layout(config.store.data_dir)
    if recover_temps:
        n = remove_dead_temps(layout.tmp)
        if n:
            log.info("recovery: removed %d temp files of interrupted writes", n)
    policy = Policy.from_config(config.lifecycle)
    key = NodeKey.load_or_create(layout.keys)
    packs = archive_tier(config, layout, s3_credentials, key.public_hex)
    backend = chunk_backend(config, layout, s3_credentials)
    store = ChunkStore(backend, layout.tmp, layout.quarantine, archive=packs, compress=config.store.compression)
    # [store] backend = "s3": a bucket other nodes may share (manifests, references, GC).
    bucket = backend.durable.client if isinstance(backend, CachedBackend) else None
    catalog = await Catalog.open(layout.catalog_db, clock)
    try:
        if key.public_hex not in await catalog.meta.trusted():  # no write at each start: a full disk must not stop one
            await catalog.meta.trust(key.public_hex, "this node")
    except BaseException:
        await catalog.close()  # a refused trust write must not leak the catalog's connection
        raise
    executor = ThreadPoolExecutor(max_workers=config.store.workers, thread_name_prefix="store")
    write_executor = ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="store-write")
    leases = LeaseTable()
    scheduler = Scheduler()
    metrics = Metrics() if observe else None
    bucket_manifests = bucket_refs = shared_gc = None
    if bucket is not None:
        bucket_manifests = BucketManifests(bucket, write_executor)
        bucket_refs = RefPublisher(bucket, catalog.lifecycle, key.public_hex, leases, clock, write_executor)
        shared_gc = SharedGc(bucket_refs, BucketCollector(bucket, key.public_hex, clock), executor)
    ingestor = Ingestor(store, catalog.content, key, leases, layout.tmp, executor, write_executor,
                        on_stored=_on_stored(bucket_manifests, bucket_refs))
    reader = ChunkReader(TimedChunks(store, metrics) if metrics else store, executor, leases=leases)

    audit = AuditLog(catalog.audit, key, clock)
    lifecycle_lock = FileLock(layout.lock_path("lifecycle"), "another lifecycle operation (archive, thaw, gc) is running")
    archiver = Archiver(catalog, store, packs, executor, clock, policy, lifecycle_lock, audit)
    evictor = Evictor(catalog, store, clock, policy, lifecycle_lock, audit)
    collector = Collector(catalog, store, packs, leases, clock, policy, lifecycle_lock, audit, shared=shared_gc)

    hub = HubClient(config.upstream, clock, traces=[upstream_trace(metrics)] if metrics else ())
    trust = TrustStore(catalog.meta, config.peers.trust, clock)
    peer_client = PeerClient(key, config.peers, clock)
    peers = Peers(config.peers, peer_client, trust, key.public_hex, clock, layout.peer_state)
    access = Access(hub, catalog.repos, clock, config.cache.auth_ttl, audit)
    aliases = AliasTable(catalog.channels, layout.channels_stamp)
    metadata = Metadata(hub, catalog.repos, clock, config.cache, access,
                        fallback=PeerRecords(peers, peer_client, catalog.repos, clock, config.peers.ref_max_age),
                        min_age=parse_duration(config.policy.min_upstream_age), local=aliases)
    passthrough = Passthrough(hub, catalog.repos, catalog.api, access)
    version_metrics = VersionMetrics(catalog.versions, clock)
    webhook = Webhook(catalog.channels, config.channels, clock, webhook_secret.encode() if webhook_secret is not None else None)
    authority = config.channels.authority.rstrip("/")
    channels = Channels(catalog, aliases, metadata, UpstreamNames(passthrough, catalog.repos), clock, key.public_hex, audit,
                        wake=webhook.wake, announcing=webhook.enabled, keep_hot=archiver.keep_hot,
                        follows=authority)
    follower = None
    if authority:
        peers.add(authority, "static")  # the authority is a peer (its key must be trusted here)
        follower = Follower(authority, peers, peer_client, catalog, aliases, config.channels.tick)
    lifecycle = LifecycleJob(archiver, evictor, collector)
    # Short of space: evict and collect now, whatever the lifecycle schedule.
    space = SpaceGuard(layout.root, parse_size(config.store.min_free), clock,
                       on_low=lambda: scheduler.spawn(lifecycle.relieve(), name="relieve"))
    tokens = TokenStore(catalog.tokens, clock)
    totp = Totp(catalog.tokens, key, clock)
    upstream = UpstreamOrigin(hub, config.upstream.max_resumes)
    peer_origin = PeerOrigin(peers, peer_client, trust, store, catalog.repos, executor, config.peers, ranges=upstream,
                             write_executor=write_executor)
    origins: list[Origin] = [peer_origin, VerdictOrigin(upstream, metrics) if metrics else upstream]
    if bucket_manifests is not None:  # a shared bucket: before peers and upstream
        origins.insert(0, BucketOrigin(bucket_manifests, trust, store, executor))
    fetcher = Fetcher(origins, ingestor, catalog.repos, catalog.meta, layout, scheduler, space, max_fills=config.server.max_cold_fetches)
    # Scans share the store's workers; at most half of them scan at once.
    quarantine = Quarantine(catalog.scans, store, leases, executor, scheduler, audit,
                            enabled=config.policy.scan_pickles, slots=max(1, min(2, config.store.workers // 2)))
    files = Files(metadata, access, fetcher, catalog.content, catalog.meta, store, reader, origins, clock, quarantine)
    releases = Releases(catalog.channels, channels, aliases, clock)
    history = TrafficHistory(catalog.meta, peers, clock)
    node = Node(
        config=config, clock=clock, layout=layout, store=store, packs=packs, catalog=catalog, key=key,
        executor=executor, write_executor=write_executor, leases=leases, ingestor=ingestor, reader=reader,
        scheduler=scheduler,
        archiver=archiver, evictor=evictor, collector=collector,
        lifecycle=lifecycle,
        bundles=BundleImporter(store, ingestor, catalog.repos, catalog.meta),
        exporter=Exporter(catalog, store, key, clock, executor),
        hfcache=HfCacheImporter(ingestor, catalog.repos),
        verifier=Verifier(catalog, store, executor, lifecycle_lock, audit),
        hub=hub, access=access, metadata=metadata, space=space, fetcher=fetcher, files=files,
        passthrough=passthrough,
        syncer=Syncer(metadata, files, fetcher, catalog.repos, catalog.meta, config.sync,
                      FileLock(layout.lock_path("sync"), "sync is already running"), audit),
        trust=trust, peer_client=peer_client, peers=peers,
        peer_auth=PeerAuth(trust, clock, config.peers.max_skew, key.public_hex),
        audit=audit, tokens=tokens, totp=totp, quarantine=quarantine,
        version_metrics=version_metrics,
        canary=CanaryController(catalog, channels, version_metrics, clock, config.channels.tick),
        follower=follower,
        gate=Gate(config.auth, tokens, totp, RepoPolicy(config.auth), catalog.tokens, audit, clock,
                  service_token=service_token),
        peer_service=PeerService(files, fetcher, store, catalog.repos, catalog.changes, peer_origin, key.public_hex,
                                 catalog.channel_copy, follows=authority),
        replicator=Replicator(peer_client, trust, FileCopier(peer_client, trust, store, ingestor, executor, config.peers.batch),
                              ingestor, catalog.repos, catalog.changes, FileLock(layout.lock_path("sync"), "sync is already running")),
        discovery=Discovery(config.peers, peers, key.public_hex),
        channels=channels, releases=releases,
        webhook=webhook,
        history=history,
        dashboard=Dashboard(catalog, channels, releases, version_metrics, peers, audit, evictor, history),
        http_files=MeteredFiles(files, metrics) if metrics else files, metrics=metrics,
        bucket_manifests=bucket_manifests, bucket_refs=bucket_refs,
    )
    if metrics is not None:
        metrics.watch(NodeCollector(metrics, CatalogFigures(catalog, evictor, clock), fetcher, peers))
    if online:
        try:
            await hub.start()
            await peer_client.start()
        except BaseException:
            await node.close()
            raise
        node.online = True
    return node
