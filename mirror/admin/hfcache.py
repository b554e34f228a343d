"""Import an existing huggingface_hub cache directory without downloading anything, so
that a mirror seeded from it lists and serves those revisions offline.

The cache looks like this (huggingface_hub `file_download.py`, `_tree_cache.py`):

    <cache>/models--org--name/              (datasets--..., spaces--...)
      blobs/<etag>                          file contents; etag = sha256 (LFS) or git blob sha1
      blobs/<etag>.incomplete               an interrupted download: skipped
      refs/<name>                           text: the commit a branch/tag pointed at
      snapshots/<commit>/<path>             symlinks to ../../blobs/<etag>
      trees/<commit>.json                   the commit's complete listing (snapshot_download)

What is imported, in this order (each step only uses what the previous one stored):
1. every blob, verified against its name by `Ingestor.ingest_path` (sha256 for 64-hex
   names, git blob sha1 for 40-hex names); a blob that fails is skipped and listed.
2. per commit in `snapshots/`: the file listing and a repo info at that commit, so the
   Hub routes (repo info, tree, paths-info, resolve) answer offline. The listing comes
   from `trees/<commit>.json` when it is there and agrees with the snapshot (complete);
   otherwise from the snapshot's symlinks (path -> blob; an LFS file's git oid is that
   of its standard LFS pointer), which holds only the files that were downloaded. Such a
   listing is marked incomplete (`mirrorImport.complete = false` in the info): offline it
   is served as it is, and the first repo info upstream gives for that commit replaces
   the info and drops the listing, so the commit is listed upstream again
   (`RepoCatalog.set_commit_info`). A commit the mirror already lists (from upstream or a
   bundle) is left alone; an incomplete import is merged with a new one.
3. refs, with `checked_at` set to the ref file's mtime (when huggingface_hub last learned
   it), so the resolver asks upstream again whenever it can.

Visibility: the cache does not say whether a repo is private or gated. A repo the mirror
already knows keeps its flags; a new one is served like a public repo until upstream
says otherwise. Importing a cache is the administrator's grant (threat-model T17).

Limit: a request by full commit sha uses the imported info and listing as they are (the
resolver trusts a commit's cached answers), so while upstream is reachable, a file the
partial snapshot did not hold is not found at that sha until a request by branch name
(or `mirror pull`) has refreshed the commit.

Tree caches whose entries carry a Xet hash are listed in the report (hftrees.py): the
client that owns the cache would ask the mirror for a Xet token; `mirror doctor --fix`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mirror.admin import hftrees
from mirror.catalog.repos import IMPORT_MARK, is_partial_import
from mirror.errors import IntegrityError, UsageError
from mirror.ingest import git_blob_sha1
from mirror.model import FileEntry, RepoKey
from mirror.resolve.metadata import with_directories
from mirror.catalog.repos import RepoCatalog
from mirror.ingest import Ingestor

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
    revisions: int = 0
    partial_revisions: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    xet_tree_caches: list[str] = field(default_factory=list)


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


# --- listings and repo info ------------------------------------------------------------------


def _snapshot(d: Path, sha: str, rep: HfImportReport) -> dict[str, str]:
    """path -> blob name, for every file of snapshots/<sha> that links into blobs/."""
    base = d / "snapshots" / sha
    out: dict[str, str] = {}
    for p in sorted(base.rglob("*")):
        if p.is_dir():
            continue
        rel = p.relative_to(base).as_posix()
        target = Path(os.readlink(p)) if p.is_symlink() else None
        if target is None or target.parent.name != "blobs" or not (d / "blobs" / target.name).is_file():
            rep.skipped.append(f"{d.name} {sha[:12]} {rel}: not a link to a blob")
            continue
        out[rel] = target.name
    return out


def _from_snapshot(d: Path, files: dict[str, str], stored: set[str]) -> list[FileEntry]:
    entries = []
    for path, blob in files.items():
        if blob not in stored:
            continue  # a bad blob's size cannot be trusted; it is not served either
        size = (d / "blobs" / blob).stat().st_size
        if _SHA256.fullmatch(blob):
            pointer = lfs_pointer(blob, size)
            entries.append(FileEntry(path, "file", git_blob_sha1(pointer), size, blob, len(pointer)))
        elif _SHA1.fullmatch(blob):
            entries.append(FileEntry(path, "file", blob, size))
    return entries


def _from_tree(tree: dict[str, hftrees.TreeEntry]) -> list[FileEntry]:
    out = []
    for path, e in tree.items():
        pointer = len(lfs_pointer(e.lfs_sha256, e.size)) if e.lfs_sha256 else None
        out.append(FileEntry(path, "file", e.blob_id, e.size, e.lfs_sha256, pointer))
    return out


def _from_info(info: dict[str, Any]) -> list[FileEntry] | None:
    """The listing in an upstream repo info fetched with `blobs=true`, if it has one."""
    out = []
    for s in info.get("siblings") or []:
        lfs = s.get("lfs") if isinstance(s.get("lfs"), dict) else None
        size, oid = s.get("size"), s.get("blobId")
        if not isinstance(s.get("rfilename"), str) or not isinstance(size, int) or not _SHA1.fullmatch(str(oid)):
            return None
        sha = str(lfs.get("sha256") or "") if lfs else ""
        out.append(FileEntry(s["rfilename"], "file", str(oid), size, sha or None, lfs.get("pointerSize") if lfs else None))
    return out or None


def _info(key: RepoKey, sha: str, entries: list[FileEntry], private: bool, gated: str, complete: bool) -> dict[str, Any]:
    """Repo info at `sha` as the Hub gives it with `blobs=true`, from the listing."""
    siblings = []
    for e in sorted(entries, key=lambda e: e.path):
        s: dict[str, Any] = {"rfilename": e.path, "size": e.size, "blobId": e.oid}
        if e.lfs_sha256:
            s["lfs"] = {"size": e.size, "sha256": e.lfs_sha256, "pointerSize": e.lfs_pointer or 0}
        siblings.append(s)
    info: dict[str, Any] = {"id": key.repo_id, "sha": sha, "private": private, "gated": gated or False,
                            "disabled": False, "siblings": siblings,
                            IMPORT_MARK: {"source": "huggingface_hub cache", "complete": complete}}
    if key.repo_type == "model":
        info["modelId"] = key.repo_id
    return info


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The standard Git LFS pointer file, whose git blob sha1 is the file's oid upstream."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class HfCacheImporter:
    """`mirror import-hf-cache` (module docstring: what is imported and how)."""

    def __init__(self, ingestor: Ingestor, repos: RepoCatalog) -> None:
        self.ingestor = ingestor
        self.repos = repos

    async def run(self, root: Path, progress: Callable[[int, int], None] | None = None) -> HfImportReport:
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
        stored: set[str] = set()  # blob names whose content the store now holds
        for key, blob in blobs:
            size = blob.stat().st_size
            if await self._import_blob(key, blob, size, rep):
                stored.add(blob.name)
            done += size
            if progress is not None:
                progress(done, total)
        for key, d in repos:
            rep.repos.append(str(key))
            await self._import_revisions(key, d, stored, rep)
            await self._import_refs(key, d / "refs", rep)
            rep.xet_tree_caches += [str(f) for f in hftrees.tree_files(d) if hftrees.xet_count(f)]
        return rep

    async def _import_blob(self, key: RepoKey, blob: Path, size: int, rep: HfImportReport) -> bool:
        where = f"{key} {blob.name}"
        if blob.name.endswith(".incomplete"):
            rep.skipped.append(f"{where}: incomplete download")
            return False
        identity = identity_of_blob(blob.name)
        if identity is None:
            rep.skipped.append(f"{where}: not a blob name")
            return False
        if await self.ingestor.complete_manifest(identity) is not None:
            rep.blobs_already_stored += 1
            return True
        try:
            await self.ingestor.ingest_path(blob, identity)
        except IntegrityError as exc:
            rep.skipped.append(f"{where}: {exc.message}")
            log.warning("skipping %s: %s", where, exc.message)
            return False
        rep.blobs_imported += 1
        rep.bytes_imported += size
        return True

    async def _import_revisions(self, key: RepoKey, d: Path, stored: set[str], rep: HfImportReport) -> None:
        snaps = d / "snapshots"
        commits = sorted(c.name for c in snaps.iterdir() if c.is_dir() and _SHA1.fullmatch(c.name)) if snaps.is_dir() else []
        if not commits:
            return
        repos = self.repos
        rid = await repos.repo_id(key)
        row = await repos.get_repo(key)
        assert rid is not None and row is not None
        for sha in commits:
            known = await repos.commit_info(rid, sha)
            merged: dict[str, FileEntry] = {}
            partial = known is not None and is_partial_import(json.dumps(known))
            if known is not None and not partial:
                if await repos.get_listing(rid, sha) is not None:
                    continue  # listed from upstream, a bundle or a complete import: authoritative
                from_info = _from_info(known)
                if from_info is not None:
                    await repos.put_listing(rid, sha, with_directories(from_info))
                    rep.revisions += 1
                continue  # upstream's info stays; without its listing the resolver lists upstream
            if partial:  # an earlier incomplete import: keep what it listed
                merged = {p: e for p, e in ((await repos.get_listing(rid, sha)) or {}).items() if e.kind == "file"}
            files = _snapshot(d, sha, rep)
            tree = hftrees.read_tree(d / "trees" / f"{sha}.json")
            complete = tree is not None and all(p in tree and tree[p].etag == b for p, b in files.items())
            if tree is not None and not complete:
                rep.skipped.append(f"{key} {sha[:12]}: trees/{sha}.json disagrees with the snapshot; not used")
            entries = _from_tree(tree) if complete and tree is not None else _from_snapshot(d, files, stored)
            merged.update({e.path: e for e in entries})
            if not merged:
                continue
            info = _info(key, sha, list(merged.values()), row.private, row.gated, complete)
            await repos.put_listing(rid, sha, with_directories(list(merged.values())), info)
            rep.revisions += 1
            if not complete:
                rep.partial_revisions.append(f"{key}@{sha}")

    async def _import_refs(self, key: RepoKey, refs_dir: Path, rep: HfImportReport) -> None:
        if not refs_dir.is_dir():
            return
        repo = None
        for f in sorted(p for p in refs_dir.rglob("*") if p.is_file()):
            sha = f.read_text(errors="replace").strip()
            if not _SHA1.fullmatch(sha):
                rep.skipped.append(f"{key} ref {f.name}: not a commit sha")
                continue
            if repo is None:
                repo = await self.repos.repo_id(key)
                assert repo is not None
            name = f.relative_to(refs_dir).as_posix()
            known = await self.repos.get_ref(repo, name)
            mtime = f.stat().st_mtime
            if known is not None and known[1] >= mtime:
                continue  # the mirror learned this ref more recently than the cache did
            await self.repos.set_ref(repo, name, sha, checked_at=mtime)
            rep.refs += 1
