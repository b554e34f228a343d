"""One lifecycle operation (archive, thaw, evict, gc) at a time, across processes: an
exclusive `flock` on `locks/lifecycle.lock`. The daemon's periodic job skips a round
when the lock is held; the CLI reports `LockBusy`.

`shared_lifecycle_lock` is the reader's side of the same lock: any number of holders at
once, and none of the operations above meanwhile. `mirror verify` holds it so that no
chunk leaves the store (GC, archive, evict) while it checks what the manifests name.
"""

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


@contextlib.contextmanager
def shared_lifecycle_lock(layout: Layout) -> Iterator[None]:
    """Hold the lifecycle lock shared; `LockBusy` if a lifecycle operation runs now."""
    path = layout.lock_path("lifecycle")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        # A read-only store can still be checked: flock works on a read-only descriptor.
        fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockBusy("a lifecycle operation (archive, thaw, evict, gc) is running") from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
