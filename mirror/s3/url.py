"""Where a bucket is and how to reach it: `s3://bucket/prefix` and the `[s3]` settings.

`S3Url.parse("s3://models/mirror")` -> bucket "models", prefix "mirror". Bucket names
follow S3's rules (3-63 characters: lowercase letters, digits, dots and hyphens, starting
and ending with a letter or digit), so a typo is refused at start rather than answered by
a puzzling 400 later. The prefix is "" or "/"-separated segments of letters, digits and
`._-`, none of them "." or ".."; one trailing "/" is dropped. Every object the mirror
writes lives under the prefix (mirror/s3/layout.py names them), so several mirrors (or
other tools) can share a bucket.

The connection settings are the config's `[s3]` table (`S3Config`: endpoint, region,
addressing, credentials_file, timeout, retries), one table for every use of a bucket
(the `[store]` chunk store and the `[archive]` tier): a deployment talks to one object
store. `check_config` validates them with the `[store]` and `[archive]` URLs;
`endpoint_for` builds the endpoint a client is given. Credentials are never settings
(mirror/s3/credentials.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from mirror.errors import ConfigError


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)
_SEGMENT = re.compile(r"[A-Za-z0-9._-]{1,200}", re.ASCII)
_IPV4 = re.compile(r"\d+\.\d+\.\d+\.\d+", re.ASCII)


@dataclass(frozen=True, slots=True)
class S3Config:
    """How to reach object storage, shared by every s3:// URL ([store] url, [archive] url)."""

    # A custom endpoint (MinIO, Ceph RGW, R2): "https://minio.example:9000"; "" = AWS.
    endpoint: str = ""
    # "" = AWS_REGION / AWS_DEFAULT_REGION from the environment, else us-east-1.
    region: str = ""
    # "path" (https://host/bucket/key) or "virtual" (https://bucket.host/key).
    addressing: str = "path"
    # The AWS credentials format, mode 0600; "" = the environment or the instance profile.
    credentials_file: str = ""
    # Seconds per request attempt, and retries of a failed attempt (bounded; s3/client.py).
    timeout: float = 30.0
    retries: int = 4


@dataclass(frozen=True, slots=True)
class S3Url:
    bucket: str
    prefix: str = ""  # "" or "a/b" (no leading or trailing slash)

    @classmethod
    def parse(cls, text: str, key: str = "url") -> "S3Url":
        """Parse `s3://bucket[/prefix]`; ConfigError naming `key` otherwise."""
        if not text.startswith("s3://"):
            raise ConfigError(f"key '{key}' must be an s3:// URL like s3://bucket/prefix, got {text[:100]!r}")
        parts = urlsplit(text)
        if parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
            raise ConfigError(f"key '{key}': an s3:// URL names a bucket and a prefix only (no credentials, "
                              f"port, query or fragment; the endpoint goes in [s3] endpoint)")
        bucket = parts.netloc
        if not _BUCKET.fullmatch(bucket) or ".." in bucket or _IPV4.fullmatch(bucket):
            raise ConfigError(f"key '{key}': {bucket[:70]!r} is not a valid bucket name "
                              f"(3-63 characters: a-z, 0-9, '.', '-')")
        prefix = parts.path.removeprefix("/").removesuffix("/")
        if prefix and not all(_SEGMENT.fullmatch(s) and s not in (".", "..") for s in prefix.split("/")):
            raise ConfigError(f"key '{key}': prefix {prefix[:100]!r} must be '/'-separated names of "
                              f"letters, digits and '._-'")
        return cls(bucket, prefix)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def endpoint_for(settings: S3Config, bucket: str) -> str:
    """The endpoint URL a client is given: a custom endpoint as written for path style;
    with virtual-host style, the bucket becomes the first label of its host
    (https://minio.example -> https://models.minio.example). "" = AWS's default, which
    obstore builds for the region and the addressing."""
    base = settings.endpoint.rstrip("/")
    if not base or settings.addressing == "path":
        return base
    scheme, _, host = base.partition("://")
    if host.startswith(bucket + "."):
        return base
    return f"{scheme}://{bucket}.{host}"


def check_config(backend: str, store_url: str, archive_url: str, s3: S3Config) -> None:
    """ConfigError naming the key when the object-storage settings ([store] backend and
    url, [archive] url, [s3]) cannot work."""
    if backend not in ("local", "s3"):
        raise ConfigError(f"key 'store.backend' must be \"local\" or \"s3\", got {backend[:30]!r}")
    if backend == "s3" and not store_url:
        raise ConfigError("key 'store.backend' = \"s3\" needs 'store.url' (s3://bucket/prefix)")
    if backend == "local" and store_url:
        raise ConfigError("key 'store.url' is used only with store.backend = \"s3\"")
    for key, url in (("store.url", store_url), ("archive.url", archive_url)):
        if url:
            S3Url.parse(url, key)
    if s3.endpoint and not re.fullmatch(r"https?://[^\s/?#@]+/?", s3.endpoint, re.ASCII):
        raise ConfigError(f"key 's3.endpoint' must be a base URL like https://minio.example:9000 "
                          f"(no path or credentials), got {s3.endpoint[:100]!r}")
    if s3.region and not re.fullmatch(r"[a-z0-9-]{1,40}", s3.region, re.ASCII):
        raise ConfigError(f"key 's3.region' must be a region name like eu-west-1, got {s3.region[:50]!r}")
    if s3.addressing not in ("path", "virtual"):
        raise ConfigError(f"key 's3.addressing' must be \"path\" or \"virtual\", got {s3.addressing[:30]!r}")
    if not 0 < s3.timeout <= 3600:
        raise ConfigError("key 's3.timeout' must be in (0, 3600] seconds")
    if not 0 <= s3.retries <= 20:
        raise ConfigError("key 's3.retries' must be 0..20")
