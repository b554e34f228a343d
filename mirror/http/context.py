"""What handlers share: the app keys of the components they call (set by app.py, the
only module that knows where components come from), and small response helpers."""

from __future__ import annotations

import re
from typing import Protocol

from aiohttp import web

from mirror.audit.log import AuditLog
from mirror.caller import Caller
from mirror.catalog.meta import MetaCatalog
from mirror.channels.metrics import VersionMetrics
from mirror.config import Config
from mirror.model import FileEntry, RepoKey
from mirror.node import Node
from mirror.resolve.files import Source
from mirror.resolve.metadata import Metadata, Resolved
from mirror.resolve.passthrough import Passthrough


class FileService(Protocol):
    """What the file handlers call (resolve/files.py `Files`, or a wrapper of it)."""

    async def locate(self, key: RepoKey, revision: str, path: str, caller: Caller) -> tuple[Resolved, FileEntry]: ...

    async def open(self, res: Resolved, entry: FileEntry, caller: Caller) -> Source: ...


CONFIG = web.AppKey("config", Config)
METADATA = web.AppKey("metadata", Metadata)
FILES = web.AppKey("files", FileService)
PASSTHROUGH = web.AppKey("passthrough", Passthrough)
COUNTERS = web.AppKey("counters", MetaCatalog)
AUDIT = web.AppKey("audit", AuditLog)
# Per-version traffic: every served file request is counted (hub_files.py).
VERSIONS = web.AppKey("versions", VersionMetrics)
# The whole node, for the admin API only: its handlers are thin calls into components
# (http/admin_*.py), and they reach many of them.
NODE = web.AppKey("node", Node)

_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?", re.ASCII)


def mirror_base(request: web.Request) -> str:
    """The mirror's absolute origin for generated links: `server.public_url` when set,
    else the request's Host if it is a plain host[:port] (never a header's free text),
    with the scheme of the connection (https on a TLS listener)."""
    public = request.app[CONFIG].server.public_url.rstrip("/")
    if public:
        return public
    host = request.host
    if not _HOST.fullmatch(host):
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        host = f"{sock[0]}:{sock[1]}" if sock else "127.0.0.1"
    return f"{request.scheme}://{host}"


def stale_headers(stale: bool) -> dict[str, str]:
    if not stale:
        return {}
    return {"X-Mirror-Stale": "1", "X-HF-Warning": "mirror-stale; upstream unreachable, serving the last known answer"}


def resolved_headers(res: Resolved) -> dict[str, str]:
    """What every answer about one resolved revision carries: the commit actually served
    (`X-Repo-Commit`), the local name that chose it (`X-Mirror-Revision`: an alias, which
    side of its canary, or a release), and the stale mark."""
    h = {"X-Repo-Commit": res.commit}
    if res.via:
        h["X-Mirror-Revision"] = res.via
    h.update(stale_headers(res.stale))
    return h
