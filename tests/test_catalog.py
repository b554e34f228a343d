"""The SQLite catalog (catalog/db.py, content.py, meta.py): migrations, WAL, several
connections, and the content and meta facts written in durability order."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mirror.catalog import Catalog
from mirror.catalog.migrations import MIGRATIONS
from mirror.clock import FakeClock
from mirror.keys import NodeKey
from mirror.manifest import ChunkRef, Manifest
from mirror.store.chunkstore import PutResult


def _pragma(path: Path, name: str) -> object:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


async def test_migrations_applied_once_and_wal_on(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    cat = await Catalog.open(path)
    await cat.close()
    assert _pragma(path, "user_version") == len(MIGRATIONS)
    assert _pragma(path, "journal_mode") == "wal"
    # Re-opening applies nothing again (a second CREATE TABLE would fail) and keeps data.
    cat = await Catalog.open(path)
    try:
        await cat.meta.trust("aa" * 32, "peer")
    finally:
        await cat.close()
    cat = await Catalog.open(path)
    try:
        assert await cat.meta.trusted() == {"aa" * 32: "peer"}
    finally:
        await cat.close()
    assert _pragma(path, "user_version") == len(MIGRATIONS)


async def test_two_catalogs_on_one_file_in_one_process(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    a = await Catalog.open(path)
    b = await Catalog.open(path)
    try:
        await a.content.add_chunks([PutResult("11" * 32, 100, 60, 2, True)])
        await b.content.add_chunks([PutResult("22" * 32, 200, 200, 0, True)])
        assert set(await a.content.chunk_rows()) == {"11" * 32, "22" * 32}
        assert set(await b.content.chunk_rows()) == {"11" * 32, "22" * 32}
        await a.meta.trust("bb" * 32)
        assert "bb" * 32 in await b.meta.trusted()
    finally:
        await a.close()
        await b.close()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    from mirror.errors import StorageError

    path = tmp_path / "catalog.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    conn.close()
    try:
        cat = await Catalog.open(path)
    except StorageError as exc:
        assert "newer" in str(exc)
    else:
        await cat.close()
        raise AssertionError("a catalog from a newer build was opened")


async def test_manifests_chunks_and_stats(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    key = NodeKey.load_or_create(keys)
    clock = FakeClock()
    path = tmp_path / "catalog.db"
    cat = await Catalog.open(path, clock)
    try:
        c1, c2, c3 = "01" * 32, "02" * 32, "03" * 32
        await cat.content.add_chunks([PutResult(c1, 1000, 700, 2, True), PutResult(c2, 500, 500, 0, True)])
        # A second row for a known chunk changes nothing.
        await cat.content.add_chunks([PutResult(c1, 1000, 999, 1, False), PutResult(c3, 300, 100, 1, True)])
        assert (await cat.content.chunk_rows())[c1] == (1000, 700, 2)

        m1 = Manifest("sha256:" + "aa" * 32, 1500, (ChunkRef(c1, 1000), ChunkRef(c2, 500))).signed(key)
        m2 = Manifest("sha256:" + "bb" * 32, 2300, (ChunkRef(c1, 1000), ChunkRef(c3, 300), ChunkRef(c1, 1000))).signed(key)
        await cat.content.put_manifest(m1)
        await cat.content.put_manifest(m2)
        st = await cat.content.stats()
        assert (st.files, st.logical_bytes, st.chunks) == (2, 3800, 3)
        assert (st.unique_raw_bytes, st.stored_bytes, st.referenced_raw_bytes) == (1800, 1300, 3800)
        assert st.dedup_ratio == 3800 / 1800 and st.compression_ratio == 1300 / 1800
        assert sorted(await cat.content.manifests_using(c1)) == sorted([m1.identity, m2.identity])
        assert await cat.content.stored_share([c1, c2, "ff" * 32]) == 1500

        cat.content.forget(m1.identity)  # from SQLite, not the in-memory cache
        assert await cat.content.get_manifest(m1.identity) == m1
        assert [m.identity for m in await cat.content.iter_manifests()] == [m1.identity, m2.identity]

        await cat.content.delete_manifest(m1.identity)
        assert await cat.content.get_manifest(m1.identity) is None
        assert await cat.content.manifests_using(c2) == []  # its chunk list went with it
        await cat.content.delete_chunk_rows([c2])
        assert set(await cat.content.chunk_rows()) == {c1, c3}
        assert await cat.db.integrity_check() == []
    finally:
        await cat.close()
    # Each manifest change was logged with a rising serial.
    conn = sqlite3.connect(path)
    try:
        log = conn.execute("SELECT serial, kind, key FROM changelog ORDER BY serial").fetchall()
    finally:
        conn.close()
    assert [(k, key_) for _s, k, key_ in log] == [
        ("manifest", "sha256:" + "aa" * 32), ("manifest", "sha256:" + "bb" * 32), ("manifest-deleted", "sha256:" + "aa" * 32)
    ]
    assert [s for s, _k, _key in log] == sorted({s for s, _k, _key in log})


async def test_counters_are_batched_until_flush(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    cat = await Catalog.open(path)
    try:
        cat.meta.bump("served_bytes", 100)
        cat.meta.bump("served_bytes", 23)
        assert await cat.meta.counters() == {"served_bytes": 123}
        assert _count_rows(path, "counters") == 0  # nothing written yet
        await cat.meta.flush()
        assert _count_rows(path, "counters") == 1
        cat.meta.bump("served_bytes", 7)
        assert await cat.meta.counters() == {"served_bytes": 130}
    finally:
        await cat.close()  # flushes
    cat = await Catalog.open(path)
    try:
        assert await cat.meta.counters() == {"served_bytes": 130}
    finally:
        await cat.close()


def _count_rows(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()
