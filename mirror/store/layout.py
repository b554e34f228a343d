"""The on-disk layout of a data directory: the one place that names files.

    <data_dir>/
      LAYOUT                 "model-mirror layout <LAYOUT_VERSION>\\n"; written once
      catalog.db             SQLite catalog (WAL: catalog.db-wal, catalog.db-shm)
      keys/
        node.key             Ed25519 private key, PKCS#8 PEM, mode 0600
        node.pub             its public key, raw 32 bytes hex
      chunks/
        ab/cd/<id>           one chunk: 16-byte frame header + payload (see codec.py);
                             <id> = 64 hex chars of blake3(raw bytes); ab, cd = id[0:2], id[2:4]
      tmp/                   temp files of in-progress writes; emptied at start
      spool/
        <identity>.part      upstream bytes of a file being fetched (resumable)
        <identity>.meta      JSON: what the spool holds (repo, size, expected hash)
      quarantine/<id>        chunks that failed verification, kept for inspection
      archive/               archive packs of the lifecycle tier (or lifecycle.archive_dir):
        <24 hex>.pack        many chunk frames + index + footer (format: store/packs.py)
        <name>.<pid>.<hex>.tmp  a pack being written; removed once its writer is gone
      pack-index/<name>.idx  with `[archive] url`: the index and footer of each pack in the
                             bucket (store/s3packs.py), a cache rebuilt from the bucket;
                             the packs' temps are then written in tmp/
      locks/                 inter-process lock files (sync, gc, writer)
      peers.json             the daemon's view of its peers (peers/membership.py), for
                             `mirror peers`; rewritten whole, safe to delete

Names below `chunks/`, `spool/` and `quarantine/` are built only from validated hex ids,
never from request strings (threat-model I1): `chunk_path` refuses anything else.

Upgrade rule: `LAYOUT_VERSION` rises whenever a path or a file format here changes. On
start, `open_layout` reads `LAYOUT`; an older version is migrated in place by the
functions in `_MIGRATIONS` (never wiped); a newer one is refused.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from mirror.errors import StorageError

LAYOUT_VERSION = 1

_HEX64 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_IDENTITY = re.compile(r"(sha256:[0-9a-f]{64}|sha1:[0-9a-f]{40})", re.ASCII)


def is_chunk_id(text: str) -> bool:
    return bool(_HEX64.fullmatch(text))


@dataclass(frozen=True, slots=True)
class Layout:
    root: Path

    @property
    def marker(self) -> Path:
        return self.root / "LAYOUT"

    @property
    def catalog_db(self) -> Path:
        return self.root / "catalog.db"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def chunks(self) -> Path:
        return self.root / "chunks"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def pack_index(self) -> Path:
        return self.root / "pack-index"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def peer_state(self) -> Path:
        return self.root / "peers.json"

    @property
    def channels_stamp(self) -> Path:
        """Replaced after every alias or release change (channels/table.py)."""
        return self.root / "channels.stamp"

    def chunk_dir(self, chunk_id: str) -> Path:
        return self.chunks / chunk_id[0:2] / chunk_id[2:4]

    def chunk_path(self, chunk_id: str) -> Path:
        if not is_chunk_id(chunk_id):
            raise ValueError(f"not a chunk id: {chunk_id[:80]!r}")
        return self.chunk_dir(chunk_id) / chunk_id

    def quarantine_path(self, chunk_id: str) -> Path:
        if not is_chunk_id(chunk_id):
            raise ValueError(f"not a chunk id: {chunk_id[:80]!r}")
        return self.quarantine / chunk_id

    def spool_paths(self, identity: str) -> tuple[Path, Path]:
        """(data, meta) spool files for a file identity like 'sha256:<hex>'."""
        if not _IDENTITY.fullmatch(identity):
            raise ValueError(f"not a file identity: {identity[:80]!r}")
        name = identity.replace(":", "-")
        return self.spool / f"{name}.part", self.spool / f"{name}.meta"

    def lock_path(self, name: str) -> Path:
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", name, re.ASCII):
            raise ValueError(f"bad lock name {name!r}")
        return self.locks / f"{name}.lock"


def open_layout(root: str | os.PathLike[str]) -> Layout:
    """Create or check the data directory and return its layout."""
    layout = Layout(Path(root).resolve())
    try:
        layout.root.mkdir(parents=True, exist_ok=True)
        for d in (layout.keys, layout.chunks, layout.tmp, layout.spool, layout.quarantine, layout.archive, layout.locks):
            d.mkdir(exist_ok=True)
        os.chmod(layout.keys, 0o700)
    except OSError as exc:
        raise StorageError(f"cannot prepare data directory {layout.root}: {exc.strerror}") from None
    if layout.marker.exists():
        text = layout.marker.read_text().strip()
        m = re.fullmatch(r"model-mirror layout (\d+)", text)
        if not m:
            raise StorageError(f"{layout.marker}: not a model-mirror data directory marker")
        version = int(m.group(1))
        if version > LAYOUT_VERSION:
            raise StorageError(f"{layout.root}: layout {version} is newer than this build ({LAYOUT_VERSION}); upgrade model-mirror")
        for v in range(version, LAYOUT_VERSION):
            _MIGRATIONS[v](layout)
            layout.marker.write_text(f"model-mirror layout {v + 1}\n")
    else:
        layout.marker.write_text(f"model-mirror layout {LAYOUT_VERSION}\n")
    return layout


# _MIGRATIONS[v] upgrades a layout of version v to v + 1 in place.
_MIGRATIONS: dict[int, object] = {}
