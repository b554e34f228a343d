"""Durable file writes: the one place that calls fsync.

`DurableFS.write_atomic` is the recipe every stored object follows: write a temp file in
the same file system, fsync it, rename it into place, fsync the directory. A reader sees
either nothing or the whole file. Any failed fsync fails the object (threat-model T24):
the temp is removed and the error raised; fsync is never retried on the same fd.

Tests substitute a subclass that fails the k-th write or fsync (threat-model H4).
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

from mirror import crashpoints
from mirror.errors import StorageError


class DurableFS:
    def write_atomic(self, final: Path, data: bytes | memoryview, tmp_dir: Path) -> bool:
        """Store `data` at `final` atomically and durably. Returns False (and writes
        nothing) when `final` already exists: objects are immutable and content-named."""
        if final.exists():
            return False
        tmp = self.stage(data, tmp_dir, final.name)
        published = self.publish(tmp, final)
        self.fsync_dir(final.parent)
        crashpoints.hit("dir.fsynced")
        return published

    def stage(self, data: bytes | memoryview, tmp_dir: Path, name: str) -> Path:
        """Write `data` to a new fsynced temp file in `tmp_dir`; return its path."""
        tmp = tmp_dir / f"{name[:64]}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                self.write_all(fd, data)
                crashpoints.hit("chunk.tmp_written")
                self.fsync(fd)
                crashpoints.hit("chunk.fsynced")
            finally:
                os.close(fd)
        except OSError as exc:
            _unlink_quiet(tmp)
            raise StorageError(f"cannot write {name[:16]}: {os.strerror(exc.errno or errno.EIO)}") from None
        except BaseException:
            _unlink_quiet(tmp)
            raise
        return tmp

    def publish(self, tmp: Path, final: Path) -> bool:
        """Rename a staged temp into place (the caller fsyncs `final.parent` after a
        batch). If `final` exists already, drop the temp and return False."""
        if final.exists():
            _unlink_quiet(tmp)
            return False
        try:
            self.makedirs(final.parent)
            os.replace(tmp, final)
        except OSError as exc:
            _unlink_quiet(tmp)
            raise StorageError(f"cannot publish {final.name[:16]}: {os.strerror(exc.errno or errno.EIO)}") from None
        crashpoints.hit("chunk.renamed")
        return True

    def discard(self, tmp: Path) -> None:
        _unlink_quiet(tmp)

    def write_all(self, fd: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def makedirs(self, path: Path) -> None:
        """Create `path` and its missing parents, each made durable in its parent. A
        directory that another thread created meanwhile is fsynced in its parent too, as
        that thread may not have done so yet."""
        if path.is_dir():
            return
        missing = []
        p = path
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            try:
                os.mkdir(d)
            except FileExistsError:
                pass
            self.fsync_dir(d.parent)


def _unlink_quiet(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def process_alive(pid: int) -> bool:
    """True when a process with this pid exists (temp files carry their writer's pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_temps(tmp_dir: Path) -> int:
    """Remove temp files left by interrupted writes of processes that are gone (temps
    carry their writer's pid, so a CLI run never removes a live daemon's temps). A
    staged chunk is never referenced before it is published, so dropping it is safe."""
    removed = 0
    for name in os.listdir(tmp_dir):
        if _writer_alive(name):
            continue
        try:
            os.unlink(tmp_dir / name)
            removed += 1
        except OSError:
            pass
    return removed


def _writer_alive(name: str) -> bool:
    parts = name.split(".")
    if len(parts) < 4 or not parts[-3].isdigit():
        return False
    pid = int(parts[-3])
    return pid != os.getpid() and process_alive(pid)


def probe_writable(tmp_dir: Path) -> None:
    """Write, fsync and remove a tiny temp file in `tmp_dir` (named like every temp, so
    a crash in between leaves nothing `remove_dead_temps` keeps); `StorageError` says
    why the volume takes no writes (full, read-only, gone)."""
    tmp = tmp_dir / f"probe.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"ok\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"{tmp_dir} is not writable: {os.strerror(exc.errno or errno.EIO)}") from None
    finally:
        _unlink_quiet(tmp)
