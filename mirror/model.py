"""Value objects shared by every layer (pure: no I/O, no aiohttp)."""

from __future__ import annotations

from dataclasses import dataclass

REPO_TYPES = ("model", "dataset", "space")


@dataclass(frozen=True, slots=True)
class RepoKey:
    repo_type: str  # model | dataset | space
    repo_id: str  # "name" or "namespace/name", canonical as upstream spells it

    def __str__(self) -> str:
        prefix = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        return f"{prefix}{self.repo_id}"


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One entry of a commit's tree, as the Hub lists it."""

    path: str
    kind: str  # "file" | "directory"
    oid: str  # git blob sha1 (files) or tree sha (directories)
    size: int = 0
    lfs_sha256: str | None = None
    lfs_pointer: int | None = None

    @property
    def identity(self) -> str:
        """The content identity: sha256 for LFS files, git blob sha1 otherwise."""
        if self.lfs_sha256:
            return f"sha256:{self.lfs_sha256}"
        return f"sha1:{self.oid}"

    @property
    def etag(self) -> str:
        return self.lfs_sha256 or self.oid

    def to_hub(self) -> dict[str, object]:
        if self.kind == "directory":
            return {"type": "directory", "oid": self.oid, "size": 0, "path": self.path}
        out: dict[str, object] = {"type": "file", "oid": self.oid, "size": self.size, "path": self.path}
        if self.lfs_sha256:
            out["lfs"] = {"oid": self.lfs_sha256, "size": self.size, "pointerSize": self.lfs_pointer or 0}
        return out
