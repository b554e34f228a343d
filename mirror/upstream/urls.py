"""Upstream URL paths for each Hub operation (hf-protocol.md §0, §1, §2)."""

from __future__ import annotations

from urllib.parse import quote

from mirror.model import RepoKey


def api(key: RepoKey, *rest: str) -> str:
    tail = "".join(f"/{r}" for r in rest)
    return f"/api/{key.repo_type}s/{key.repo_id}{tail}"


def info(key: RepoKey, revision: str | None) -> str:
    return api(key) if not revision else api(key, "revision", quote(revision, safe=""))


def tree(key: RepoKey, revision: str, path: str = "") -> str:
    base = api(key, "tree", quote(revision, safe=""))
    return base + (f"/{quote(path, safe='')}" if path else "")


def resolve(key: RepoKey, revision: str, path: str) -> str:
    prefix = "" if key.repo_type == "model" else f"/{key.repo_type}s"
    return f"{prefix}/{key.repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"


def quote_rev(revision: str) -> str:
    return quote(revision, safe="")
