"""Releases: the registry. A release records, once and for good, which commit of a repo
a semantic version is: who made it and when, the training parameters, the datasets it
was trained on (lineage, each pinned to a commit), free metadata and a note.

A release name resolves like a tag in every Hub route (table.py). Releases are immutable
(a trigger refuses any UPDATE); one can be deleted only while no alias names it (another
trigger), and its commit stays pinned for the lifecycle while it exists.
"""

from __future__ import annotations

import json
import math
from typing import Any

from mirror.caller import Caller
from mirror.catalog.channels import ChannelCatalog, Release
from mirror.channels.aliases import Channels
from mirror.channels.names import release_version, version_key
from mirror.channels.table import AliasTable
from mirror.clock import Clock
from mirror.errors import BadRequest, Conflict, MirrorError, RevisionNotFound
from mirror.model import RepoKey
from mirror.admin.revisions import parse_spec

_MAX_JSON = 64 << 10


class Releases:
    def __init__(self, catalog: ChannelCatalog, channels: Channels, table: AliasTable, clock: Clock) -> None:
        self.catalog = catalog
        self.channels = channels
        self.table = table
        self.clock = clock

    async def create(
        self, key: RepoKey, name: str, revision: str, caller: Caller, *, params: dict[str, Any] | None = None,
        datasets: list[str] | tuple[str, ...] = (), meta: dict[str, Any] | None = None, note: str = "",
        force: bool = False,
    ) -> Release:
        self.channels.refuse_if_following()
        version = release_version(name)
        params, meta = _json_object(params or {}, "params"), _json_object(meta or {}, "meta")
        if len(note) > 4000:
            raise BadRequest("--note is limited to 4000 characters")
        target = await self.channels.target(key, revision, caller)
        if await self.catalog.alias(target.repo, name) is not None:
            raise Conflict(f"{name!r} is an alias of {key}; a release cannot take an alias's name")
        existing = await self.catalog.release(target.repo, name)
        if existing is not None:
            raise Conflict(f"release {name} of {key} exists (commit {existing.commit[:12]}, {existing.author}); "
                           f"releases are immutable: create a new version")
        await self.channels.check_shadow(key, name, caller, force)
        lineage = [await self._dataset(d, caller) for d in datasets]
        rel = Release(target.repo, name, version, target.commit, caller.actor, self.clock.now(), params,
                      tuple(lineage), meta, note)
        await self.catalog.create_release(rel)
        if self.channels.keep_hot is not None:
            await self.channels.keep_hot(rel.repo, rel.commit)
        self.channels.audit.record(caller.actor, "release.create", f"{key}:{name}", commit=rel.commit)
        await self.table.changed()
        return rel

    async def _dataset(self, spec: str, caller: Caller) -> str:
        """'org/data@rev' -> 'org/data@<commit>' (lineage names commits, not branches)."""
        if "@" not in spec:
            raise BadRequest(f"--dataset {spec!r}: name the dataset's revision, as org/data@REV")
        key, rev = parse_spec(spec if spec.startswith("datasets/") else f"datasets/{spec}", "dataset")
        try:
            target = await self.channels.target(key, rev, caller)
        except (RevisionNotFound, MirrorError) as exc:
            raise BadRequest(f"--dataset {spec}: cannot resolve it to a commit ({exc.message})") from None
        return f"{key.repo_id}@{target.commit}"

    async def get(self, key: RepoKey, name: str) -> Release:
        rel = await self.catalog.release(await self.channels.repo(key), name)
        if rel is None:
            raise RevisionNotFound(f"{key} has no release {name!r} (mirror release list {key})")
        return rel

    async def list_releases(self, key: RepoKey) -> list[Release]:
        """Newest version first (semver precedence)."""
        rels = await self.catalog.releases(await self.channels.repo(key))
        return sorted(rels, key=lambda r: version_key(r.version), reverse=True)

    async def delete(self, key: RepoKey, name: str, caller: Caller) -> Release:
        self.channels.refuse_if_following()
        rel = await self.get(key, name)
        await self.catalog.delete_release(rel.repo, name)
        self.channels.audit.record(caller.actor, "release.delete", f"{key}:{name}", commit=rel.commit)
        await self.table.changed()
        return rel

    async def aliases_of(self, rel: Release) -> list[str]:
        rows = await self.catalog.aliases(rel.repo)
        return [a.name for a in rows if rel.name in (a.release, a.canary_release) or rel.commit in (a.commit, a.canary)]


def _json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"{what} is not plain JSON: {exc}") from None
    if len(text) > _MAX_JSON:
        raise BadRequest(f"{what} is limited to {_MAX_JSON // 1024} KiB of JSON")
    return value


def parse_param(text: str) -> tuple[str, Any]:
    """'lr=3e-4' -> ('lr', 0.0003); 'optimizer=adamw' -> ('optimizer', 'adamw'). A value
    that reads as JSON is kept as that JSON value, else as the string."""
    k, sep, v = text.partition("=")
    if not sep or not k.strip():
        raise BadRequest(f"--param {text!r} must look like name=value")
    try:
        value: Any = json.loads(v)
        if isinstance(value, float) and not math.isfinite(value):
            value = v
    except ValueError:
        value = v
    return k.strip(), value

