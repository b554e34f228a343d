"""Which chunk backend a config asks for (`[store] backend`): chunk files under the data
dir, or a bucket (the durable store) behind a bounded read-through cache of chunk files;
and where the lifecycle's archive packs live (`[archive] url`): a local directory or a
bucket. Called once each, by the composition root (node.py)."""

from __future__ import annotations

from pathlib import Path

from mirror.config import Config
from mirror.s3.client import S3Client
from mirror.s3.credentials import Credentials
from mirror.s3.url import S3Url
from mirror.store.backend import ChunkBackend
from mirror.store.cached import CachedBackend
from mirror.store.layout import Layout
from mirror.store.localfs import LocalBackend
from mirror.store.packs import PackStore
from mirror.store.s3backend import S3Backend
from mirror.store.s3packs import S3PackStore
from mirror.units import parse_size


def chunk_backend(config: Config, layout: Layout, credentials: Credentials | None) -> ChunkBackend:
    """`[store] backend`: chunk files under the data dir, or a bucket (the durable store)
    behind a read-through cache of at most `[store] cache_size` bytes in the data dir."""
    local = LocalBackend(layout)
    if config.store.backend != "s3":
        return local
    client = S3Client(S3Url.parse(config.store.url, "store.url"), config.s3, credentials=credentials)
    return CachedBackend(S3Backend(client), local, parse_size(config.store.cache_size))


def archive_tier(config: Config, layout: Layout, credentials: Credentials | None, node_key: str) -> PackStore | S3PackStore:
    """`[archive] url`: packs in a bucket (staged in the data dir's tmp/, their indexes
    cached in pack-index/, owned by the node `node_key`), else in `[lifecycle]
    archive_dir` or the data dir's archive/."""
    if config.archive.url:
        client = S3Client(S3Url.parse(config.archive.url, "archive.url"), config.s3, credentials=credentials)
        return S3PackStore(client, layout.tmp, layout.pack_index, node_key)
    return PackStore(Path(config.lifecycle.archive_dir) if config.lifecycle.archive_dir else layout.archive)
