"""The settings' shape: one frozen dataclass per TOML table of the config file, its
defaults next to its fields, and `Config`, the tables together. Loading, environment
overrides and the checks across keys live in config.py, which re-exports these classes
(callers import them from there). `config.example.toml` documents every key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirror.errors import ConfigError
from mirror.s3.url import S3Config  # [s3]: with the S3 URL rules
from mirror.units import Watermark, parse_duration


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8090
    # Public base URL clients use (for absolute Link headers); empty = from the request.
    public_url: str = ""
    # Concurrent streaming responses before new cold fetches are shed with 429.
    max_cold_fetches: int = 64
    access_log: bool = True
    # Log records as "text" lines, or "json": one JSON object per line for every record,
    # the access line's fields (request_id, group, status, bytes, ...) as keys.
    log_format: str = "text"
    # TLS: a PEM certificate (chain) and its key; both or neither. TLS 1.2 at least.
    tls_cert: str = ""
    tls_key: str = ""
    # Client address allowlist (CIDRs), checked before anything else; empty = everyone.
    allow: tuple[str, ...] = ()
    # A separate listener for the admin routes ("host:port" or "unix:/path"); "" = the
    # admin routes are served on the main listener.
    admin_listen: str = ""
    # `GET /metrics` (Prometheus) and the wrappers that feed it; false = neither exists.
    metrics: bool = True


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    url: str = "https://huggingface.co"
    connect_timeout: float = 10.0
    # Longest silence between two bytes of an upstream body.
    read_timeout: float = 30.0
    # Deadline for one metadata request.
    metadata_timeout: float = 20.0
    max_redirects: int = 5
    # Redirect targets on loopback/private addresses are refused unless allowed here
    # (tests point the upstream at 127.0.0.1).
    allow_private_redirects: bool = False
    max_concurrent: int = 16
    # Retries of a dropped file body (each resumes with Range).
    max_resumes: int = 5
    # A file holding a Hub token (mode 0600) used upstream only for repos an admin
    # granted (`mirror grant`); "" = none (each caller's own token is passed through).
    service_token_file: str = ""


@dataclass(frozen=True, slots=True)
class StoreConfig:
    data_dir: str = "./data"
    compression: bool = True
    # Worker threads for chunking, hashing, compression and decompression.
    workers: int = 2
    # Free space kept on the data volume: a fill starts only when the file fits (spool
    # and chunks) above it; below it, misses stream from upstream uncached.
    min_free: str = "1G"
    # Where chunks live: "local" (files under data_dir) or "s3" (the bucket at `url` is
    # the durable store; data_dir keeps the catalog, the keys and a read-through cache
    # of at most `cache_size` bytes of chunks). Connection settings: [s3].
    backend: str = "local"
    url: str = ""
    cache_size: str = "20G"


@dataclass(frozen=True, slots=True)
class ArchiveConfig:
    # "s3://bucket/prefix": the lifecycle's archive packs go to object storage ("" = the
    # local archive directory, [lifecycle] archive_dir).
    url: str = ""


@dataclass(frozen=True, slots=True)
class CacheConfig:
    # Seconds a branch or tag -> commit answer is trusted before re-checking upstream.
    ref_ttl: float = 300.0
    # Seconds an upstream access check of a gated/private repo is memoised per token.
    auth_ttl: float = 60.0
    # Range requests on an uncached file start a background whole-file fill.
    fill_on_range: bool = True


@dataclass(frozen=True, slots=True)
class SyncRepo:
    repo: str
    repo_type: str = "model"
    revisions: tuple[str, ...] = ("main",)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SyncConfig:
    # Seconds between scheduled syncs inside the daemon; 0 disables.
    interval: float = 0.0
    repos: tuple[SyncRepo, ...] = ()


@dataclass(frozen=True, slots=True)
class PeersConfig:
    # Base URLs of other mirror nodes on the LAN ("http://10.0.0.2:8090").
    nodes: tuple[str, ...] = ()
    # Find peers on the LAN by mDNS/DNS-SD (zeroconf) and announce this node.
    discovery: bool = False
    # Addresses of the interfaces discovery uses ("10.0.0.2", "127.0.0.1"); empty = all.
    discovery_interfaces: tuple[str, ...] = ()
    # The URL peers use to reach this node ("" = http://<server.host>:<port>; discovery
    # needs an address the others can route to when server.host is 0.0.0.0).
    advertise_url: str = ""
    # Public keys (hex) trusted as peers besides those added by `mirror keys trust`;
    # `mirror keys revoke` overrides both.
    trust: tuple[str, ...] = ()
    # Deadline of one small peer request (hello, have, manifest): a dead peer costs this.
    timeout: float = 2.0
    # Longest silence in a peer body (a chunk batch, a followed fill).
    transfer_timeout: float = 15.0
    # Signed requests older or newer than this (seconds) are refused.
    max_skew: float = 30.0
    # Seconds between health checks of a live peer (down peers back off up to 60 s).
    health_interval: float = 5.0
    # Seconds a peer that sent a bad chunk or manifest (or failed 3 times) is not used.
    down_for: float = 60.0
    # Chunks per batch request, and batch requests in flight per file.
    batch: int = 8
    parallel: int = 4
    # When upstream is down, a peer's record of a branch or tag is used if it was
    # checked upstream within this many seconds.
    ref_max_age: float = 86400.0


@dataclass(frozen=True, slots=True)
class AuthConfig:
    # Callers without a mirror token may read public repos (a trusted LAN); false = every
    # request needs a mirror token (mirror token create).
    anonymous_read: bool = True
    # Repo globs ("org/*", "org/model", "datasets/org/*") never proxied: 403 for everyone.
    deny: tuple[str, ...] = ()
    # When set, only repos matching one of these globs are proxied at all.
    allow: tuple[str, ...] = ()
    # Namespaces served only from local data (imports, sync --from), never asked upstream.
    local_only: tuple[str, ...] = ()
    # State-changing admin requests over HTTP also need a current TOTP code (X-Mirror-OTP).
    admin_totp: bool = False
    # Auditors may download file bytes too (default: metadata, releases and audit only).
    auditor_files: bool = False
    # Callers without a mirror token may see the web dashboard (/ui): everything an
    # auditor sees there, audit events included. Default: admins and auditors only.
    anonymous_ui: bool = False


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    # Refuse upstream commits younger than this for repos not seen before ("0" = off),
    # e.g. "7d": a quarantine period for new upstream artifacts.
    min_upstream_age: str = "0"
    # Scan pickle-based files (.bin .pt .pth .ckpt .pkl) and check safetensors headers
    # before their first serve; unsafe or unscannable ones are quarantined (scan/).
    scan_pickles: bool = True


@dataclass(frozen=True, slots=True)
class ChannelsConfig:
    # Announce alias changes (rollbacks, promotions, canary steps) to this URL: a JSON
    # POST signed with HMAC-SHA256 (X-Mirror-Signature), retried with backoff.
    webhook: str = ""
    # The HMAC key, in a file readable only by the owner (chmod 600). Required with a
    # webhook.
    webhook_secret_file: str = ""
    # Delivery attempts before an announcement is given up (each failure is logged).
    webhook_attempts: int = 8
    # Seconds per delivery attempt.
    webhook_timeout: float = 10.0
    # Seconds between the canary controller's looks at running canaries (and, on a node
    # that follows an authority, between its pulls of the authority's channels).
    tick: float = 1.0
    # The base URL of the peer node that decides this site's releases and aliases ("" =
    # this node decides its own). A follower copies the authority's releases, aliases
    # and alias history every tick, serves its last copy while the authority is down,
    # and refuses local changes (channels/follow.py). The authority is a peer: its key
    # must be trusted here.
    authority: str = ""


@dataclass(frozen=True, slots=True)
class LifecycleValues:
    """The parsed `[lifecycle]` strings: seconds and watermarks."""

    archive_after: float
    gc_grace: float
    interval: float
    high: Watermark
    low: Watermark


# Not slotted: it keeps its parsed values (`parsed`) beside the fields, which a slotted
# dataclass cannot hold without making them fields (and so TOML keys).
@dataclass(frozen=True)
class LifecycleConfig:
    archive_after: str = "30d"
    keep_revisions: int = 3
    high_watermark: str = "90%"
    low_watermark: str = "80%"
    archive_dir: str = ""
    gc_grace: str = "1h"
    interval: str = "0"
    thaw_after_hits: int = 3

    def __post_init__(self) -> None:
        def parse(key: str, parser: Any) -> Any:
            try:
                return parser(getattr(self, key))
            except ConfigError as exc:
                raise ConfigError(f"key 'lifecycle.{key}': {exc.message}") from None

        high, low = parse("high_watermark", Watermark.parse), parse("low_watermark", Watermark.parse)
        values = LifecycleValues(
            archive_after=parse("archive_after", parse_duration),
            gc_grace=parse("gc_grace", parse_duration),
            interval=parse("interval", parse_duration),
            high=high,
            low=low,
        )
        for key in ("keep_revisions", "thaw_after_hits"):
            if getattr(self, key) < 0:
                raise ConfigError(f"key 'lifecycle.{key}' must be >= 0")
        if (high.percent is not None and low.percent is not None and low.percent > high.percent) or (
            high.size is not None and low.size is not None and low.size > high.size
        ):
            raise ConfigError("key 'lifecycle.low_watermark' must not be above 'lifecycle.high_watermark'")
        object.__setattr__(self, "_parsed", values)

    @property
    def parsed(self) -> LifecycleValues:
        return self._parsed  # type: ignore[attr-defined, no-any-return]


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    peers: PeersConfig = field(default_factory=PeersConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    channels: ChannelsConfig = field(default_factory=ChannelsConfig)
    s3: S3Config = field(default_factory=S3Config)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    source: str = "<defaults>"

    @property
    def data_dir(self) -> Path:
        return Path(self.store.data_dir)


TABLES: dict[str, type] = {
    "server": ServerConfig,
    "upstream": UpstreamConfig,
    "store": StoreConfig,
    "cache": CacheConfig,
    "sync": SyncConfig,
    "lifecycle": LifecycleConfig,
    "peers": PeersConfig,
    "auth": AuthConfig,
    "policy": PolicyConfig,
    "channels": ChannelsConfig,
    "s3": S3Config,
    "archive": ArchiveConfig,
}
