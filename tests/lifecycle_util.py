"""Helpers for the lifecycle tests: a node on a FakeClock, revisions made of real
ingested content, reading a file back, an independent chunk mark, and the CLI as a
subprocess (for kill -9 crash points)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import blake3

from mirror import config as config_mod
from mirror.clock import FakeClock
from mirror.model import FileEntry, RepoKey
from mirror.node import Node, open_node as open_mirror_node
from mirror.store.chunker import cut

DAY = 86400.0


def lifecycle_config(data_dir: Path, **lifecycle: Any) -> config_mod.Config:
    store = {"data_dir": str(data_dir), "compression": lifecycle.pop("compression", False)}
    return config_mod.load(env={}, overrides={"store": store, "lifecycle": lifecycle})


async def open_node(data_dir: Path, clock: FakeClock, **lifecycle: Any) -> Node:
    return await open_mirror_node(lifecycle_config(data_dir, **lifecycle), clock=clock)


def sha(n: int) -> str:
    return hashlib.sha1(str(n).encode()).hexdigest()


async def add_revision(svc: Node, repo_name: str, commit: str, files: dict[str, bytes], ref: str | None = None) -> int:
    """Ingest each content and list it as the files of `commit`."""
    repo = await svc.catalog.repos.repo_id(RepoKey("model", repo_name))
    assert repo is not None
    entries = []
    for path, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        await svc.ingestor.ingest_bytes(data, f"sha256:{digest}")
        oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        entries.append(FileEntry(path, "file", oid, len(data), digest, 134))
    await svc.catalog.repos.put_listing(repo, commit, entries)
    if ref:
        await svc.catalog.repos.set_ref(repo, ref, commit)
    return repo


async def read_file(svc: Node, data: bytes, start: int = 0, end: int | None = None) -> bytes:
    man = await svc.catalog.content.get_manifest("sha256:" + hashlib.sha256(data).hexdigest())
    assert man is not None
    end = man.size if end is None else end
    return b"".join([bytes(p) async for p in svc.reader.iter_range(man.chunks, start, end)])


def chunk_ids(*contents: bytes) -> set[str]:
    """The chunk ids of contents, computed here, independently of the catalog."""
    out = set()
    for data in contents:
        for off, n in cut(data):
            out.add(blake3.blake3(data[off:off + n]).hexdigest())
    return out


def hot_ids(svc: Node) -> set[str]:
    return set(svc.store.iter_ids())


def pack_ids(svc: Node) -> set[str]:
    from mirror.store.packs import read_index

    archive = svc.store.archive
    assert archive is not None
    return {e.chunk_id for n in archive.names() for e in read_index(archive.path(n))}  # type: ignore[attr-defined]


def run_cli(data_dir: Path, *args: str, crash: str | None = None, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
    e.update(env or {})
    if crash:
        e["MIRROR_CRASHPOINT"] = crash
    return subprocess.run(
        [sys.executable, "-m", "mirror", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, env=e, timeout=timeout,
    )


def past_clock(days: float = 90) -> FakeClock:
    """A FakeClock `days` in the real past, so a CLI run on the system clock sees the
    data as that old."""
    return FakeClock(time.time() - days * DAY)
