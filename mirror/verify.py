"""`mirror verify`: re-hash every chunk (hot files and archived chunks, read back from
their packs), check every manifest's signature and chunks, and check the catalog
database. With `repair`, bad chunks are quarantined and manifests
that can no longer be rebuilt are dropped (the next request fetches them again).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from mirror.errors import BadSignature, ChunkMissing, CorruptChunk
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mirror.node import Node as Services


@dataclass
class VerifyReport:
    chunks_checked: int = 0
    manifests_checked: int = 0
    bad_chunks: list[str] = field(default_factory=list)
    missing_chunks: list[str] = field(default_factory=list)
    bad_manifests: list[str] = field(default_factory=list)
    db_problems: list[str] = field(default_factory=list)
    quarantined: int = 0
    dropped_manifests: int = 0

    @property
    def ok(self) -> bool:
        return not (self.bad_chunks or self.missing_chunks or self.bad_manifests or self.db_problems)


async def verify(svc: Services, *, repair: bool = False) -> VerifyReport:
    rep = VerifyReport()
    loop = asyncio.get_running_loop()
    rep.db_problems = await svc.catalog.db.integrity_check()

    def check_chunk(cid: str) -> str | None:
        try:
            svc.store.read(cid, verify=True)
        except CorruptChunk as exc:
            return str(exc)
        except ChunkMissing:
            return None
        return None

    ids = await loop.run_in_executor(None, lambda: list(svc.store.iter_ids()))
    bad: set[str] = set()
    batch = 32
    for i in range(0, len(ids), batch):
        part = ids[i:i + batch]
        results = await asyncio.gather(*(loop.run_in_executor(svc.executor, check_chunk, c) for c in part))
        for cid, err in zip(part, results):
            rep.chunks_checked += 1
            if err is not None:
                bad.add(cid)
                rep.bad_chunks.append(cid)
    present = set(ids)
    # Archived chunks: each recorded location must be in a pack on disk and hash right.
    archived = await svc.catalog.lifecycle.archived()
    packs = await svc.catalog.lifecycle.packs()
    archive = svc.store.archive
    for cid in sorted(set(archived) - present):
        rep.chunks_checked += 1
        name = packs.get(archived[cid].pack, ("", 0))[0]
        frame = archive.read_frame(cid) if archive is not None else None
        if frame is None:
            rep.missing_chunks.append(cid)
            rep.db_problems.append(f"archived chunk {cid[:16]} is in no pack on disk (catalog says {name or 'a missing pack'})")
            continue
        err = await loop.run_in_executor(svc.executor, check_chunk, cid)
        if err is not None:
            bad.add(cid)
            rep.bad_chunks.append(cid)
        else:
            present.add(cid)
    trusted = set(await svc.catalog.meta.trusted())
    drop: list[str] = []
    for man in await svc.catalog.content.iter_manifests():
        rep.manifests_checked += 1
        try:
            man.verify(trusted)
        except BadSignature:
            rep.bad_manifests.append(man.identity)
            drop.append(man.identity)
            continue
        missing = [c.chunk_id for c in man.chunks if c.chunk_id not in present]
        rep.missing_chunks += [c for c in missing if c not in rep.missing_chunks]
        if missing or any(c.chunk_id in bad for c in man.chunks):
            drop.append(man.identity)
    if repair:
        for cid in bad:
            if svc.store.quarantine(cid):
                rep.quarantined += 1
        await svc.catalog.content.delete_chunk_rows(bad | set(rep.missing_chunks))
        for identity in drop:
            await svc.catalog.content.delete_manifest(identity)
            rep.dropped_manifests += 1
    return rep
