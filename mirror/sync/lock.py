"""An exclusive inter-process lock on a file under `locks/` (fcntl.flock).

The lock belongs to the open file description, so it is released when the holder exits
or is killed, however it dies: a crashed cron run never leaves a stale lock behind.
The holder writes its pid into the file so a second run can say who holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from pathlib import Path
from typing import AsyncIterator

from mirror.errors import LockBusy


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


@contextlib.asynccontextmanager
async def exclusive(path: Path, what: str, *, wait: bool = False, poll: float = 0.2) -> AsyncIterator[None]:
    """Hold the lock at `path` for the body. Raise `LockBusy` ("<what> is already
    running") when another process holds it, or wait for it when `wait` is set."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while not _try_lock(fd):
            if not wait:
                raise LockBusy(f"{what} is already running{_holder(path)}")
            await asyncio.sleep(poll)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
