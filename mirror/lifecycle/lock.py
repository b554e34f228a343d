"""One lifecycle operation (archive, thaw, evict, gc) at a time, across processes: an
exclusive `flock` on `locks/lifecycle.lock`. The daemon's periodic job skips a round
when the lock is held; the CLI reports `LockBusy`."""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Iterator

from mirror.errors import LockBusy
from mirror.store.layout import Layout


@contextlib.contextmanager
def lifecycle_lock(layout: Layout) -> Iterator[None]:
    fd = os.open(layout.lock_path("lifecycle"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockBusy("another lifecycle operation (archive, thaw, gc) is running") from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
