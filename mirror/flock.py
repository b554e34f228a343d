"""Inter-process file locks (fcntl.flock): the one lock helper of the project.

A lock belongs to the open file description, so it is released when its holder exits or
is killed, however it dies: a crashed cron run or daemon never leaves a stale lock. Used
for `mirror sync` runs, lifecycle operations (archive, thaw, evict, GC) and the spool of
each cache fill, so a CLI run and the daemon on one data directory never collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from pathlib import Path
from typing import AsyncIterator, Iterator

from mirror.errors import LockBusy


class FileLock:
    def __init__(self, path: Path, what: str) -> None:
        """`what` names the holder's activity for the LockBusy message."""
        self.path = path
        self.what = what

    def acquire(self, *, record_pid: bool = False, shared: bool = False) -> int:
        """Take the lock without waiting; return the fd that holds it (give it back to
        `release`). Creates the file if needed. Raises LockBusy when another open file
        description holds it (exclusively, for a `shared` request: any number of shared
        holders at once, and no exclusive one meanwhile)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            if not shared:
                raise
            # A read-only store can still be read under the lock: flock works on a
            # read-only descriptor.
            fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockBusy(f"{self.what}{self._holder()}") from None
        except BaseException:
            os.close(fd)
            raise
        if record_pid:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def release(self, fd: int, *, clear_pid: bool = False) -> None:
        try:
            if clear_pid:
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        fd = self.acquire()
        try:
            yield
        finally:
            self.release(fd)

    @contextlib.asynccontextmanager
    async def held_async(self, *, wait: bool = False, poll: float = 0.2) -> AsyncIterator[None]:
        """Hold the lock for the body, recording this pid in the file; with `wait`, poll
        until it is free instead of raising LockBusy."""
        while True:
            try:
                fd = self.acquire(record_pid=True)
                break
            except LockBusy:
                if not wait:
                    raise
                await asyncio.sleep(poll)
        try:
            yield
        finally:
            self.release(fd, clear_pid=True)

    def _holder(self) -> str:
        try:
            pid = self.path.read_text().strip()
        except OSError:
            return ""
        return f" (pid {pid})" if pid.isdigit() else ""
