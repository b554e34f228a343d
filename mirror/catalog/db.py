"""The SQLite connection: WAL mode, foreign keys, busy timeout, migrations at open.

One `Database` per process holds one aiosqlite connection (its own thread). Statements
of concurrent coroutines are serialised by an asyncio lock around each unit of work, so a
transaction never interleaves with another's statements. Several processes may open the
same file: WAL lets readers run beside one writer, and `busy_timeout` makes writers wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any, AsyncIterator, Iterable, Iterator

import aiosqlite

from mirror.catalog.migrations import MIGRATIONS
from mirror.errors import StorageError


class Database:
    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> "Database":
        pending = aiosqlite.connect(str(path), isolation_level=None, timeout=30.0)
        try:
            conn = await pending
        except sqlite3.Error as exc:
            # aiosqlite has queued its worker thread's stop; let it finish while this loop
            # runs, or it reports to a closed loop with a traceback (a CLI exits right away).
            worker = getattr(pending, "_thread", None)
            if worker is not None:
                await asyncio.get_running_loop().run_in_executor(None, worker.join, 5.0)
            raise StorageError(f"cannot open catalog {path}: {exc}") from None
        conn.row_factory = sqlite3.Row
        db = cls(conn, path)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=FULL")
            await conn.execute("PRAGMA foreign_keys=ON")
            await conn.execute("PRAGMA busy_timeout=30000")
            await db._migrate()
        except BaseException:
            # A refused schema (or a failed migration) must not leak the connection thread.
            await conn.close()
            raise
        return db

    async def _migrate(self) -> None:
        async with self._lock:
            # BEGIN IMMEDIATE so two processes starting at once do not both migrate.
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                cur = await self._conn.execute("PRAGMA user_version")
                (version,) = await cur.fetchone()  # type: ignore[misc]
                if version > len(MIGRATIONS):
                    raise StorageError(f"{self.path}: catalog schema {version} is newer than this build")
                for n in range(version, len(MIGRATIONS)):
                    await _run_script(self._conn, MIGRATIONS[n])
                    await self._conn.execute(f"PRAGMA user_version={n + 1}")
                await self._conn.execute("COMMIT")
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        await self._conn.close()

    # --- units of work ---------------------------------------------------------------

    async def _begin(self, statement: str) -> None:
        """Start a transaction (the lock held). A statement runs to its end in the
        connection's thread even when the task awaiting it is cancelled (a node closing
        cancels ingests): a cancelled BEGIN must still be rolled back before the lock is
        released, or the next one fails with "cannot start a transaction within a
        transaction"."""
        begin = asyncio.ensure_future(self._conn.execute(statement))
        try:
            with _disk_errors():
                await asyncio.shield(begin)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await begin
                await self._conn.execute("ROLLBACK")
            raise

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT), rolled back on error. A
        full or failing disk surfaces as StorageError, with nothing committed."""
        async with self._lock:
            await self._begin("BEGIN IMMEDIATE")
            try:
                with _disk_errors():
                    yield self._conn
            except BaseException:
                try:
                    await asyncio.shield(self._conn.execute("ROLLBACK"))
                except (sqlite3.Error, asyncio.CancelledError):
                    pass  # SQLite rolled back by itself (a full disk aborts the transaction)
                raise
            else:
                with _disk_errors():
                    await self._conn.execute("COMMIT")

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[aiosqlite.Connection]:
        """A read transaction (a deferred BEGIN): its reads see one state of the catalog,
        and, in WAL mode, writers of other processes are not held up meanwhile."""
        async with self._lock:
            await self._begin("BEGIN")
            try:
                with _disk_errors():
                    yield self._conn
            finally:
                with contextlib.suppress(sqlite3.Error, asyncio.CancelledError):
                    await asyncio.shield(self._conn.execute("ROLLBACK"))

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        async with self._lock:
            with _disk_errors():
                cur = await self._conn.execute(sql, tuple(params))
                rows = await cur.fetchall()
                await cur.close()
            return list(rows)

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        async with self._lock:
            with _disk_errors():
                cur = await self._conn.execute(sql, tuple(params))
                row = await cur.fetchone()
                await cur.close()
            return row

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        async with self._lock:
            with _disk_errors():
                await self._conn.execute(sql, tuple(params))

    async def ping(self) -> None:
        """One trivial read through the connection's thread: the catalog answers."""
        await self.fetchone("SELECT count(*) FROM sqlite_master")

    async def integrity_check(self) -> list[str]:
        rows = await self.fetchall("PRAGMA integrity_check")
        problems = [r[0] for r in rows if r[0] != "ok"]
        rows = await self.fetchall("PRAGMA foreign_key_check")
        problems += [f"foreign key: {tuple(r)}" for r in rows]
        return problems


_DISK_ERRORS = ("full", "disk i/o", "readonly", "read-only", "unable to open")


@contextlib.contextmanager
def _disk_errors() -> Iterator[None]:
    """SQLite's words for a full, failing or read-only disk become StorageError (one
    line for the CLI, 507 at the edge); other SQLite errors stay bugs."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc).lower()
        if any(word in text for word in _DISK_ERRORS):
            raise StorageError(f"catalog: {exc}") from None
        raise


async def _run_script(conn: aiosqlite.Connection, script: str) -> None:
    # executescript() would COMMIT the open transaction; run statement by statement (a
    # statement ends at a ';' that completes it: a trigger body holds several).
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n\t;"):
                await conn.execute(buf)
            buf = ""
    if buf.strip(" \n\t;"):
        raise ValueError("migration script ends inside a statement")
