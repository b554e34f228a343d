"""huggingface_hub's on-disk tree listings: `trees/<commit>.json` in a cache's repo folder
(or `<local_dir>/.cache/huggingface/trees/` for `local_dir` downloads).

Format (huggingface_hub `_tree_cache.py`, `format_version` 1):

    {"format_version": 1,
     "files": {"config.json": {"size": 519, "blob_id": "<git sha1>"},
               "model.safetensors": {"size": 1234, "blob_id": "<git sha1 of the LFS pointer>",
                                     "lfs_sha256": "<sha256>", "lfs_size": 1234, "xet_hash": "<hex>"}}}

`snapshot_download` writes the commit's complete recursive listing there, so it is what
makes an imported revision's listing complete. It is also a trap for a client moved onto
the mirror: with `hf_xet` installed, huggingface_hub skips the HEAD request for a file
whose entry carries a `xet_hash` and asks `{endpoint}/api/.../xet-read-token/<commit>`
directly, which the mirror refuses (it serves files over HTTP only). Removing the
`xet_hash` fields sends that client back to the HEAD request, which the mirror answers.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

FORMAT_VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_SHA1 = re.compile(r"[0-9a-f]{40}", re.ASCII)
_XET_KEYS = ("xet_hash", "xetHash")


@dataclass(frozen=True, slots=True)
class TreeEntry:
    size: int
    blob_id: str
    lfs_sha256: str | None = None

    @property
    def etag(self) -> str:
        """The name huggingface_hub gives the file's blob."""
        return self.lfs_sha256 or self.blob_id


def read_tree(path: Path) -> dict[str, TreeEntry] | None:
    """The listing in a tree cache file, or None if absent, unknown or malformed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION or not isinstance(data.get("files"), dict):
            return None
        out: dict[str, TreeEntry] = {}
        for name, info in data["files"].items():
            size, blob_id, lfs = info["size"], info["blob_id"], info.get("lfs_sha256")
            if not isinstance(name, str) or not name or not _SHA1.fullmatch(str(blob_id)):
                return None
            if lfs is not None and not _SHA256.fullmatch(str(lfs)):
                return None
            if lfs is not None:
                size = info.get("lfs_size", size)
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                return None
            out[name] = TreeEntry(size, str(blob_id), str(lfs) if lfs is not None else None)
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def tree_files(root: Path) -> list[Path]:
    """Every tree cache file under an HF cache dir, a repo folder or a `local_dir`."""
    dirs = [root / "trees", root / ".cache" / "huggingface" / "trees"]
    if root.is_dir():
        dirs += sorted(d / "trees" for d in root.iterdir() if d.is_dir() and "--" in d.name)
    return sorted(f for d in dirs if d.is_dir() for f in d.glob("*.json") if f.is_file())


def xet_count(path: Path) -> int:
    """How many entries of a tree cache file carry a Xet hash (0 if unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, dict):
            return 0
        return sum(1 for info in files.values() if isinstance(info, dict) and any(info.get(k) for k in _XET_KEYS))
    except (OSError, ValueError):
        return 0


def strip_xet(path: Path) -> int:
    """Remove the Xet hashes from a tree cache file (rewritten atomically, the rest kept);
    return how many entries had one."""
    data = json.loads(path.read_text(encoding="utf-8"))
    n = 0
    for info in data.get("files", {}).values():
        if isinstance(info, dict) and any(k in info for k in _XET_KEYS):
            n += 1
            for k in _XET_KEYS:
                info.pop(k, None)
    if n == 0:
        return 0
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n
