"""`mirror export`: write the given revisions into one signed bundle (format in bundle.py).

Every file of every revision must be cached (a bundle is for sites that cannot fetch
the rest). With `since`, chunks the previous bundle carried are left out.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mirror.admin.bundle import BundleWriter, file_sha256, read_header
from mirror.admin.revisions import local_commit
from mirror.errors import EntryNotFound, RevisionNotFound
from mirror.catalog import Catalog
from mirror.clock import Clock
from mirror.keys import NodeKey
from mirror.manifest import Manifest
from mirror.model import RepoKey
from mirror.store.chunkstore import ChunkStore


@dataclass(frozen=True, slots=True)
class ExportReport:
    revisions: int
    files: int
    manifests: int
    chunks: int
    chunks_omitted: int
    bytes: int


class Exporter:
    def __init__(self, catalog: Catalog, store: ChunkStore, key: NodeKey, clock: Clock, executor: Executor) -> None:
        self.catalog = catalog
        self.store = store
        self.key = key
        self.clock = clock
        self.executor = executor

    async def run(
        self,
        specs: list[tuple[RepoKey, str | None]],
        out: Path,
        *,
        since: Path | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> ExportReport:
        catalog = self.catalog
        repos: dict[RepoKey, dict[str, Any]] = {}
        manifests: dict[str, Manifest] = {}
        n_files = 0
        for key, rev in specs:
            repo, commit = await local_commit(catalog, key, rev)
            listing = await catalog.repos.get_listing(repo, commit)
            info = await catalog.repos.commit_info(repo, commit)
            if listing is None or info is None:
                raise RevisionNotFound(f"{key}@{commit[:12]}: metadata not cached (pull it first)")
            row = await catalog.repos.get_repo(key)
            assert row is not None
            entry = repos.setdefault(key, {"repo_type": key.repo_type, "repo_id": key.repo_id, "private": row.private,
                                           "gated": row.gated, "refs": {}, "commits": []})
            refs = await catalog.repos.refs_of(repo)
            entry["refs"].update({name: sha for name, sha in refs.items() if sha == commit})
            if any(c["sha"] == commit for c in entry["commits"]):
                continue
            missing = []
            for e in listing.values():
                if e.kind != "file":
                    continue
                n_files += 1
                man = await catalog.content.get_manifest(e.identity)
                if man is None or not all(self.store.has(c.chunk_id) for c in man.chunks):
                    missing.append(e.path)
                else:
                    manifests[man.identity] = man
            if missing:
                raise EntryNotFound(f"{key}@{commit[:12]}: {len(missing)} files are not cached, e.g. {missing[0]} (pull it first)")
            entry["commits"].append({"sha": commit, "info": info, "files": [e.to_hub() for e in listing.values()]})

        chunk_ids = list(dict.fromkeys(c.chunk_id for m in manifests.values() for c in m.chunks))
        omitted: set[str] = set()
        since_id = None
        if since is not None:
            prev = read_header(str(since))
            omitted = {c for c in prev["chunks"] if isinstance(c, str)}
            since_id = file_sha256(str(since))
        carried = [c for c in chunk_ids if c not in omitted]
        header = {
            "format": 1,
            "created_at": self.clock.now(),
            "signer": self.key.public_hex,
            "since": since_id,
            "repos": list(repos.values()),
            "manifests": [{"identity": m.identity, "size": m.size, "chunks": [[c.chunk_id, c.length] for c in m.chunks]}
                          for m in manifests.values()],
            "chunks": carried,
        }
        loop = asyncio.get_running_loop()
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                w = BundleWriter(fh)
                w.header(header)
                total = sum(self.store.stored_len(c) for c in carried)
                done = 0
                for cid in carried:
                    frame = await loop.run_in_executor(self.executor, self.store.read_frame, cid)
                    w.chunk(cid, frame)
                    done += len(frame)
                    if progress is not None:
                        progress(done, total)
                w.finish(self.key.public_bytes, self.key.sign)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return ExportReport(sum(len(r["commits"]) for r in repos.values()), n_files, len(manifests), len(carried),
                            len(chunk_ids) - len(carried), out.stat().st_size)
