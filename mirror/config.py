"""Configuration: typed, frozen, validated once.

One frozen dataclass per TOML table, defaults next to the fields (settings.py). Sources, lowest first:
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
from typing import Any, Mapping

from mirror.s3.url import S3Config, check_config  # [store] backend/url, [archive] url, [s3]
from mirror.errors import ConfigError
# The tables' classes live in settings.py, the parsers in units.py; re-exported here,
# where callers have always found them.
from mirror.settings import TABLES as _TABLES
from mirror.settings import (ArchiveConfig, AuthConfig, CacheConfig, ChannelsConfig, Config, LifecycleConfig,
                             LifecycleValues, PeersConfig, PolicyConfig, ServerConfig, StoreConfig, SyncConfig,
                             SyncRepo, UpstreamConfig)
from mirror.units import Watermark, parse_duration, parse_size

__all__ = ["ArchiveConfig", "AuthConfig", "CacheConfig", "ChannelsConfig", "Config", "ConfigError", "LifecycleConfig",
           "LifecycleValues", "PeersConfig", "PolicyConfig", "S3Config", "ServerConfig", "StoreConfig", "SyncConfig",
           "SyncRepo", "UpstreamConfig", "Watermark", "parse_duration", "parse_size"]

log = logging.getLogger("mirror.config")


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

