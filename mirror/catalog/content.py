"""Catalog facts about stored content: chunks, manifests, and their statistics.

    chunks(id PK, raw_len, stored_len, codec, created_at)
    manifests(identity PK, size, chunk_count, body, signer, signature, created_at)
    manifest_chunks(identity, seq, chunk_id, offset, length)   index on chunk_id

Rows are written in the durability order of design.md §4: a chunk row only after the
chunk file is durable, a manifest (with its chunk list) only after all its chunk rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from mirror.catalog.db import Database
from mirror.manifest import Manifest, parse
from mirror.store.chunkstore import PutResult


@dataclass(frozen=True, slots=True)
class StoreStats:
    files: int
    logical_bytes: int
    chunks: int
    unique_raw_bytes: int
    stored_bytes: int
    referenced_raw_bytes: int

    @property
    def dedup_ratio(self) -> float:
        """Logical bytes per unique raw byte (>= 1 when content is shared)."""
        return self.referenced_raw_bytes / self.unique_raw_bytes if self.unique_raw_bytes else 1.0

    @property
    def compression_ratio(self) -> float:
        """Stored bytes per unique raw byte (< 1 when compression pays)."""
        return self.stored_bytes / self.unique_raw_bytes if self.unique_raw_bytes else 1.0


class ContentCatalog:
    def __init__(self, db: Database, now: Callable[[], float]) -> None:
        self.db = db
        self._now = now
        self._manifests: dict[str, Manifest] = {}

    async def add_chunks(self, results: Iterable[PutResult]) -> None:
        rows = [(r.chunk_id, r.raw_len, r.stored_len, r.codec, self._now()) for r in results]
        if not rows:
            return
        async with self.db.transaction() as c:
            await c.executemany(
                "INSERT INTO chunks(id, raw_len, stored_len, codec, created_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT(id) DO NOTHING",
                rows,
            )

    async def put_manifest(self, man: Manifest) -> None:
        offsets = man.offsets()
        async with self.db.transaction() as c:
            await c.execute("DELETE FROM manifest_chunks WHERE identity = ?", (man.identity,))
            await c.execute(
                "INSERT OR REPLACE INTO manifests(identity, size, chunk_count, body, signer, signature, created_at) "
                "VALUES (?,?,?,?,?,?,?)",
                (man.identity, man.size, len(man.chunks), man.canonical(), man.signer, man.signature, self._now()),
            )
            await c.executemany(
                "INSERT INTO manifest_chunks(identity, seq, chunk_id, offset, length) VALUES (?,?,?,?,?)",
                [(man.identity, i, ch.chunk_id, off, ch.length) for i, (ch, off) in enumerate(zip(man.chunks, offsets))],
            )
            await c.execute("INSERT INTO changelog(at, kind, key) VALUES (?, 'manifest', ?)", (self._now(), man.identity))
        self._manifests[man.identity] = man

    async def get_manifest(self, identity: str) -> Manifest | None:
        man = self._manifests.get(identity)
        if man is not None:
            return man
        row = await self.db.fetchone("SELECT body, signer, signature FROM manifests WHERE identity = ?", (identity,))
        if row is None:
            return None
        man = parse(bytes(row["body"]), row["signer"], bytes(row["signature"]))
        self._manifests[identity] = man
        return man

    def forget(self, identity: str) -> None:
        self._manifests.pop(identity, None)

    async def delete_manifest(self, identity: str) -> None:
        async with self.db.transaction() as c:
            await c.execute("DELETE FROM manifests WHERE identity = ?", (identity,))
            await c.execute("INSERT INTO changelog(at, kind, key) VALUES (?, 'manifest-deleted', ?)", (self._now(), identity))
        self._manifests.pop(identity, None)

    async def manifest_row(self, identity: str) -> tuple[Manifest, float] | None:
        """The manifest as stored now, and when it was written, read from the database
        (not the in-memory cache): `verify` re-reads a row before it acts on it."""
        row = await self.db.fetchone(
            "SELECT body, signer, signature, created_at FROM manifests WHERE identity = ?", (identity,)
        )
        if row is None:
            return None
        return parse(bytes(row["body"]), row["signer"], bytes(row["signature"])), float(row["created_at"])

    async def delete_manifest_if(self, identity: str, created_at: float) -> bool:
        """Delete the manifest only if its row is still the one written at `created_at`
        (an ingest that re-stored it since wrote a new row, which stays)."""
        async with self.db.transaction() as c:
            cur = await c.execute("DELETE FROM manifests WHERE identity = ? AND created_at = ?", (identity, created_at))
            gone = cur.rowcount > 0
            if gone:
                await c.execute("INSERT INTO changelog(at, kind, key) VALUES (?, 'manifest-deleted', ?)", (self._now(), identity))
        self._manifests.pop(identity, None)
        return gone

    async def iter_manifests(self) -> list[Manifest]:
        rows = await self.db.fetchall("SELECT body, signer, signature FROM manifests ORDER BY identity")
        return [parse(bytes(r["body"]), r["signer"], bytes(r["signature"])) for r in rows]

    async def chunk_rows(self) -> dict[str, tuple[int, int, int]]:
        rows = await self.db.fetchall("SELECT id, raw_len, stored_len, codec FROM chunks")
        return {r["id"]: (r["raw_len"], r["stored_len"], r["codec"]) for r in rows}

    async def delete_chunk_rows(self, ids: Iterable[str]) -> None:
        async with self.db.transaction() as c:
            await c.executemany("DELETE FROM chunks WHERE id = ?", [(i,) for i in ids])

    async def manifests_using(self, chunk_id: str) -> list[str]:
        rows = await self.db.fetchall("SELECT DISTINCT identity FROM manifest_chunks WHERE chunk_id = ?", (chunk_id,))
        return [r["identity"] for r in rows]

    async def stats(self) -> StoreStats:
        m = await self.db.fetchone("SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS b FROM manifests")
        c = await self.db.fetchone("SELECT COUNT(*) AS n, COALESCE(SUM(raw_len),0) AS r, COALESCE(SUM(stored_len),0) AS s FROM chunks")
        ref = await self.db.fetchone("SELECT COALESCE(SUM(length), 0) AS r FROM manifest_chunks")
        assert m is not None and c is not None and ref is not None
        return StoreStats(m["n"], m["b"], c["n"], c["r"], c["s"], ref["r"])

    async def stored_share(self, chunk_ids: Iterable[str]) -> int:
        """Raw bytes of the given chunks that already have a chunk row."""
        ids = list(chunk_ids)
        total = 0
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            row = await self.db.fetchone(
                f"SELECT COALESCE(SUM(raw_len), 0) AS r FROM chunks WHERE id IN ({','.join('?' * len(part))})", part
            )
            total += row["r"] if row else 0
        return total
