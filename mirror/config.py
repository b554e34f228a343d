"""Configuration: typed, frozen, validated once.

One frozen dataclass per TOML table, defaults next to the fields. Sources, lowest first:
the embedded defaults, the TOML file, `MIRROR_<TABLE>_<KEY>` environment variables, then
explicit overrides (CLI flags). Unknown tables or keys and wrong types raise `ConfigError`
naming the key and its source. `config.example.toml` documents every key.

Durations and sizes written as strings (`[lifecycle]`) stay strings for the user, but are
parsed when their table is built: a bad one is a `ConfigError` at load naming the key, and
code reads the parsed values (`LifecycleConfig.parsed`), never the strings.

Environment: a `MIRROR_<TABLE>_<KEY>` whose table exists must name a real key (a typo of
a setting is an error); any other `MIRROR_*` variable belongs to something else and is
ignored with one warning line.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import logging
import math
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mirror.s3.url import S3Config, check_config  # [store] backend/url, [archive] url, [s3]
from mirror.errors import ConfigError
# The parsers live in units.py; re-exported here, where callers have always found them.
from mirror.units import Watermark, parse_duration, parse_size

__all__ = ["Config", "ConfigError", "Watermark", "parse_duration", "parse_size"]

log = logging.getLogger("mirror.config")


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


_TABLES: dict[str, type] = {
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


def _coerce(value: Any, typ: Any, key: str, source: str) -> Any:
    """Check `value` against the annotated type; convert env strings."""
    origin = typing.get_origin(typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return value.lower() in {"1", "true", "yes", "on"}
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().isascii() and value.strip().lstrip("-").isdigit():
            return int(value)
    elif typ is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None and math.isfinite(number):  # nan and inf are not settings
            return number
    elif typ is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key.split(".")[-1] in _STR_OR_NUMBER:
            return str(value)
    elif origin is tuple and typing.get_args(typ)[1:] == (Ellipsis,):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            inner = typing.get_args(typ)[0]
            return tuple(_coerce(v, inner, f"{key}[{i}]", source) for i, v in enumerate(value))
    elif dataclasses.is_dataclass(typ):
        if isinstance(value, dict):
            return _build(typ, value, key, source)
    name = getattr(typ, "__name__", str(typ))
    raise ConfigError(f"{source}: key '{key}' must be {name}, got {type(value).__name__} {value!r}")


# Keys holding durations or sizes that may be written as a bare number in TOML.
_STR_OR_NUMBER = {"archive_after", "high_watermark", "low_watermark", "gc_grace", "interval"}


def _build(cls: type, values: Mapping[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in names:
            raise ConfigError(f"{source}: unknown key '{full}'")
        kwargs[key] = _coerce(value, hints[key], full, source)
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in kwargs:  # for example sync.repos[].repo
            raise ConfigError(f"{source}: '{prefix}' lacks the required key '{f.name}'")
    return _construct(cls, kwargs, source)


def _construct(cls: type, kwargs: Mapping[str, Any], source: str, base: Any = None) -> Any:
    """Build (or, with `base`, replace fields of) a table; a table that parses its own
    values (LifecycleConfig) raises ConfigError naming the key, to which this adds the source."""
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.message}") from None


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """`MIRROR_<TABLE>_<KEY>` variables by table. A variable naming an existing table is
    meant for us, so an unknown key there is an error (a typo must not be silently
    dropped); other `MIRROR_*` names (another tool's MIRROR_URL, say) are ignored, with
    one warning line."""
    out: dict[str, dict[str, Any]] = {}
    foreign: list[str] = []
    for name, value in env.items():
        if not name.startswith("MIRROR_") or name in _ENV_IGNORED:
            continue
        rest = name[len("MIRROR_"):].lower()
        table, _, key = rest.partition("_")
        if table not in _TABLES or not key:
            foreign.append(name)
            continue
        keys = [f.name for f in dataclasses.fields(_TABLES[table])]
        if key not in keys:
            near = difflib.get_close_matches(key, keys, n=1)
            hint = f" (did you mean MIRROR_{table.upper()}_{near[0].upper()}?)" if near else ""
            raise ConfigError(f"environment: {name} names unknown key '{table}.{key}'{hint}")
        out.setdefault(table, {})[key] = value
    if foreign:
        log.warning("ignoring environment %s %s: not MIRROR_<TABLE>_<KEY> of a config table (%s)",
                    "variable" if len(foreign) == 1 else "variables", ", ".join(sorted(foreign)), ", ".join(_TABLES))
    return out


# Environment variables with the MIRROR_ prefix that are not config keys.
_ENV_IGNORED = {"MIRROR_CONFIG", "MIRROR_CRASHPOINT", "MIRROR_TEST_AUDIT", "MIRROR_TOKEN"}


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Load the configuration. `overrides` maps table -> key -> value (CLI flags)."""
    env = os.environ if env is None else env
    merged: dict[str, dict[str, Any]] = {}
    source = "<defaults>"
    if path is None and env.get("MIRROR_CONFIG"):
        path = env["MIRROR_CONFIG"]
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{source}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: invalid TOML: {exc}") from None
        for table, values in raw.items():
            if table not in _TABLES:
                raise ConfigError(f"{source}: unknown table '[{table}]'")
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: '{table}' must be a table")
            merged[table] = dict(values)
    layers = [("environment", _env_overrides(env)), ("command line", overrides or {})]
    built: dict[str, Any] = {}
    for table, cls in _TABLES.items():
        base = _build(cls, merged.get(table, {}), table, source)
        for layer_source, layer in layers:
            if layer.get(table):
                hints = typing.get_type_hints(cls)
                changes = {}
                for key, value in layer[table].items():
                    if key not in hints:
                        raise ConfigError(f"{layer_source}: unknown key '{table}.{key}'")
                    changes[key] = _coerce(value, hints[key], f"{table}.{key}", layer_source)
                base = _construct(cls, changes, layer_source, base)
        built[table] = base
    cfg = Config(**built, source=source)
    _validate(cfg)
    return cfg


def _validate(cfg: Config) -> None:
    src = cfg.source
    if not (0 < cfg.server.port < 65536) and cfg.server.port != 0:
        raise ConfigError(f"{src}: key 'server.port' must be 0..65535, got {cfg.server.port}")
    if not cfg.upstream.url.startswith(("http://", "https://")):
        raise ConfigError(f"{src}: key 'upstream.url' must be an http(s) URL, got {cfg.upstream.url!r}")
    if cfg.cache.ref_ttl < 0:
        raise ConfigError(f"{src}: key 'cache.ref_ttl' must be >= 0")
    if cfg.store.workers < 1:
        raise ConfigError(f"{src}: key 'store.workers' must be >= 1")
    for key in ("min_free", "cache_size"):
        try:
            parse_size(getattr(cfg.store, key))
        except ConfigError as exc:
            raise ConfigError(f"{src}: key 'store.{key}': {exc.message}") from None
    try:
        check_config(cfg.store.backend, cfg.store.url, cfg.archive.url, cfg.s3)
    except ConfigError as exc:
        raise ConfigError(f"{src}: {exc.message}") from None
    for i, repo in enumerate(cfg.sync.repos):
        if repo.repo_type not in ("model", "dataset", "space"):
            raise ConfigError(f"{src}: key 'sync.repos[{i}].repo_type' must be model, dataset or space")
        if not repo.repo.strip() or not repo.revisions:
            raise ConfigError(f"{src}: 'sync.repos[{i}]' needs a repo and at least one revision")
    if cfg.sync.interval < 0:
        raise ConfigError(f"{src}: key 'sync.interval' must be >= 0")
    for key in ("connect_timeout", "read_timeout", "metadata_timeout", "max_concurrent"):
        if getattr(cfg.upstream, key) <= 0:
            raise ConfigError(f"{src}: key 'upstream.{key}' must be > 0")
    for i, url in enumerate(cfg.peers.nodes):
        if not re.fullmatch(r"https?://[^\s/?#]+/?", url, re.ASCII):
            raise ConfigError(f"{src}: key 'peers.nodes[{i}]' must be a base URL like http://10.0.0.2:8090, got {url!r}")
    if cfg.peers.advertise_url and not re.fullmatch(r"https?://[^\s/?#]+/?", cfg.peers.advertise_url, re.ASCII):
        raise ConfigError(f"{src}: key 'peers.advertise_url' must be a base URL like http://10.0.0.2:8090")
    for i, addr in enumerate(cfg.peers.discovery_interfaces):
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise ConfigError(f"{src}: key 'peers.discovery_interfaces[{i}]' must be an interface's IP address "
                              f"like 10.0.0.2, got {addr!r}") from None
    for i, k in enumerate(cfg.peers.trust):
        if not re.fullmatch(r"[0-9a-f]{64}", k, re.ASCII):
            raise ConfigError(f"{src}: key 'peers.trust[{i}]' must be a public key of 64 hex characters (mirror keys show)")
    for key in ("timeout", "transfer_timeout", "max_skew", "health_interval", "down_for", "ref_max_age"):
        if getattr(cfg.peers, key) <= 0:
            raise ConfigError(f"{src}: key 'peers.{key}' must be > 0")
    for key in ("batch", "parallel"):
        if not 1 <= getattr(cfg.peers, key) <= 64:
            raise ConfigError(f"{src}: key 'peers.{key}' must be 1..64")
    if bool(cfg.server.tls_cert) != bool(cfg.server.tls_key):
        raise ConfigError(f"{src}: keys 'server.tls_cert' and 'server.tls_key' go together (both or neither)")
    for i, net in enumerate(cfg.server.allow):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(f"{src}: key 'server.allow[{i}]' must be a CIDR like 10.0.0.0/8, got {net!r}") from None
    if cfg.server.log_format not in ("text", "json"):
        raise ConfigError(f"{src}: key 'server.log_format' must be \"text\" or \"json\", got {cfg.server.log_format!r}")
    if cfg.server.admin_listen and not re.fullmatch(r"unix:/.+|[^\s:/]+:[0-9]{1,5}|\[[0-9a-fA-F:.]+\]:[0-9]{1,5}", cfg.server.admin_listen, re.ASCII):
        raise ConfigError(f"{src}: key 'server.admin_listen' must be host:port or unix:/path, got {cfg.server.admin_listen!r}")
    for key in ("deny", "allow", "local_only"):
        for i, glob in enumerate(getattr(cfg.auth, key)):
            if not re.fullmatch(r"[A-Za-z0-9._*?/\[\]-]{1,200}", glob, re.ASCII):
                raise ConfigError(f"{src}: key 'auth.{key}[{i}]' must be a repo glob like 'org/*', got {glob!r}")
    if cfg.channels.webhook and not re.fullmatch(r"https?://[^\s]+", cfg.channels.webhook, re.ASCII):
        raise ConfigError(f"{src}: key 'channels.webhook' must be an http(s) URL, got {cfg.channels.webhook!r}")
    if cfg.channels.webhook and not cfg.channels.webhook_secret_file:
        raise ConfigError(f"{src}: key 'channels.webhook' needs 'channels.webhook_secret_file' (the HMAC key)")
    if not 1 <= cfg.channels.webhook_attempts <= 100:
        raise ConfigError(f"{src}: key 'channels.webhook_attempts' must be 1..100")
    for key in ("webhook_timeout", "tick"):
        if getattr(cfg.channels, key) <= 0:
            raise ConfigError(f"{src}: key 'channels.{key}' must be > 0")
    if cfg.channels.authority and not re.fullmatch(r"https?://[^\s/?#]+/?", cfg.channels.authority, re.ASCII):
        raise ConfigError(f"{src}: key 'channels.authority' must be a peer's base URL like http://10.0.0.2:8090, "
                          f"got {cfg.channels.authority!r}")
    try:
        parse_duration(cfg.policy.min_upstream_age)
    except ConfigError as exc:
        raise ConfigError(f"{src}: key 'policy.min_upstream_age': {exc.message}") from None
    for table, key in (("upstream", "max_redirects"), ("upstream", "max_resumes"), ("cache", "auth_ttl"),
                       ("server", "max_cold_fetches")):
        if getattr(getattr(cfg, table), key) < 0:
            raise ConfigError(f"{src}: key '{table}.{key}' must be >= 0")

