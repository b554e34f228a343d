"""Import an existing huggingface_hub cache directory without downloading anything.

The cache looks like this (huggingface_hub `file_download.py`):

    <cache>/models--org--name/              (datasets--..., spaces--...)
      blobs/<etag>                          file contents; etag = sha256 (LFS) or git blob sha1
      blobs/<etag>.incomplete               an interrupted download: skipped
      refs/<name>                           text: the commit a branch/tag pointed at
      snapshots/<commit>/<path>             symlinks to ../../blobs/<etag>

What is imported, and why only that:
- every blob, verified against its name by `Ingestor.ingest_path` (sha256 for 64-hex
  names, git blob sha1 for 40-hex names); a blob that fails is skipped and listed. This
  is what makes later pulls and requests free of file transfers.
- refs, with `checked_at` set to the ref file's mtime (when huggingface_hub last learned
  it), so the resolver does not take them as fresh.
- no commit listings: a snapshot holds only the files that were downloaded, and neither it
  nor `trees/<commit>.json` carries directory oids or the repo info the resolver serves with
  a commit, so a listing built offline would be incomplete. The resolver asks upstream
  for the listing on first use (metadata only, a few KB) and finds every content stored.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mirror.errors import IntegrityError, UsageError
from mirror.model import RepoKey
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mirror.node import Node as Services

log = logging.getLogger("mirror.import")

_REPO_DIR = re.compile(r"(models|datasets|spaces)--(.+)")
_SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_SHA1 = re.compile(r"[0-9a-f]{40}", re.ASCII)


@dataclass
class HfImportReport:
    repos: list[str] = field(default_factory=list)
    blobs_imported: int = 0
    bytes_imported: int = 0
    blobs_already_stored: int = 0
    refs: int = 0
    skipped: list[str] = field(default_factory=list)


def default_cache_dir(env: dict[str, str] | None = None) -> Path:
    """HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub (as huggingface_hub)."""
    env = dict(os.environ) if env is None else env
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    home = Path(env.get("HF_HOME") or Path(env.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface").expanduser()
    return home / "hub"


def identity_of_blob(name: str) -> str | None:
    if _SHA256.fullmatch(name):
        return f"sha256:{name}"
    if _SHA1.fullmatch(name):
        return f"sha1:{name}"
    return None


async def import_hf_cache(svc: Services, root: Path, progress: Callable[[int, int], None] | None = None) -> HfImportReport:
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory (is it a huggingface_hub cache?)")
    rep = HfImportReport()
    repos = []
    for d in sorted(root.iterdir()):
        m = _REPO_DIR.fullmatch(d.name)
        if m and d.is_dir():
            repos.append((RepoKey(m.group(1)[:-1], m.group(2).replace("--", "/")), d))
    if not repos:
        raise UsageError(f"{root}: no models--*, datasets--* or spaces--* folders (not a huggingface_hub cache?)")
    blobs = [(key, b) for key, d in repos for b in sorted((d / "blobs").glob("*")) if b.is_file()]
    total = sum(b.stat().st_size for _k, b in blobs)
    done = 0
    for key, d in repos:
        rep.repos.append(str(key))
        await _import_refs(svc, key, d / "refs", rep)
    for key, blob in blobs:
        size = blob.stat().st_size
        await _import_blob(svc, key, blob, size, rep)
        done += size
        if progress is not None:
            progress(done, total)
    return rep


async def _import_blob(svc: Services, key: RepoKey, blob: Path, size: int, rep: HfImportReport) -> None:
    where = f"{key} {blob.name}"
    if blob.name.endswith(".incomplete"):
        rep.skipped.append(f"{where}: incomplete download")
        return
    identity = identity_of_blob(blob.name)
    if identity is None:
        rep.skipped.append(f"{where}: not a blob name")
        return
    existing = await svc.catalog.content.get_manifest(identity)
    if existing is not None and all(svc.store.has(c.chunk_id) for c in existing.chunks):
        rep.blobs_already_stored += 1
        return
    try:
        await svc.ingestor.ingest_path(blob, identity)
    except IntegrityError as exc:
        rep.skipped.append(f"{where}: {exc.message}")
        log.warning("skipping %s: %s", where, exc.message)
        return
    rep.blobs_imported += 1
    rep.bytes_imported += size


async def _import_refs(svc: Services, key: RepoKey, refs_dir: Path, rep: HfImportReport) -> None:
    if not refs_dir.is_dir():
        return
    repo = None
    for f in sorted(p for p in refs_dir.rglob("*") if p.is_file()):
        sha = f.read_text(errors="replace").strip()
        if not _SHA1.fullmatch(sha):
            rep.skipped.append(f"{key} ref {f.name}: not a commit sha")
            continue
        if repo is None:
            repo = await svc.catalog.repos.repo_id(key)
            assert repo is not None
        name = f.relative_to(refs_dir).as_posix()
        known = await svc.catalog.repos.get_ref(repo, name)
        mtime = f.stat().st_mtime
        if known is not None and known[1] >= mtime:
            continue  # the mirror learned this ref more recently than the cache did
        await svc.catalog.repos.set_ref(repo, name, sha, checked_at=mtime)
        rep.refs += 1
