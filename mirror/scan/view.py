"""Read-only, seekable files over bytes the node already holds, for the scanners.

A scan reads a file where it is: a fill's verified spool (`SpoolView`, positional reads
on its descriptor) or the chunk store (`ManifestView`, the manifest's chunks decoded one
at a time and checked against their ids). No second copy is written and memory stays
bounded: one decoded chunk (4 MiB at most) plus what the scanner asks for.

What the scanner asks for is bounded too. picklescan keeps every opcode of a pickle with
its argument, so a raw pickle holding one huge byte string would be read into memory
whole; a view hands out at most `budget` bytes in all and then fails the scan with
`exceeded` set, which the scanner turns into an "error" verdict (fail closed: a pickle
too big to scan is not served unscanned). A read that asks for more than the file still
holds cannot succeed for a pickle parser (nor for the unpickler: the pickle is
truncated there), so such a read gets at most `_SHORT` bytes instead of the rest of a
multi-gigabyte file. Failures of the storage itself (a missing or rotten chunk, an I/O
error) are kept in `failure`: they are not verdicts, and the scan is retried later.
"""

from __future__ import annotations

import bisect
import io
import os
from typing import Sequence

from mirror.errors import MirrorError
from mirror.manifest import ChunkRef
from mirror.store.chunkstore import ChunkStore

# Bytes one scan may read in all (picklescan may hold about as much in memory).
BUDGET = 256 << 20
# At most this much of a read that runs past the end of the file is returned.
_SHORT = 64 << 10
# Longest line readline returns (pickle text opcodes: GLOBAL, INT, STRING...).
_MAX_LINE = 1 << 20


class BudgetExceeded(Exception):
    """The scan wanted more bytes than its budget."""


class StoreFailure(Exception):
    """The bytes could not be read (kept in `ByteView.failure`)."""


class ByteView(io.RawIOBase):
    """A file of `size` bytes over `_pread(offset, n)`; see the module docstring."""

    def __init__(self, size: int, budget: int = BUDGET) -> None:
        super().__init__()
        self.size = size
        self.budget = budget
        self.given = 0
        self.exceeded = False
        self.failure: BaseException | None = None
        self._pos = 0

    # --- what subclasses provide ---------------------------------------------------------

    def _pread(self, offset: int, n: int) -> bytes:
        raise NotImplementedError

    # --- io.RawIOBase ---------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        pos = base + offset
        if pos < 0:
            raise OSError(22, "negative seek position")
        self._pos = pos
        return pos

    def read(self, n: int | None = -1) -> bytes:
        left = max(0, self.size - self._pos)
        if n is None or n < 0:
            want = left
        elif n > left:
            want = min(left, _SHORT)  # a short read: the caller cannot get what it asked for
        else:
            want = n
        if not want:
            return b""
        data = self._take(self._pos, want)
        self._pos += len(data)
        return data

    def readinto(self, buf: "memoryview | bytearray") -> int:  # type: ignore[override]
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self.read(-1)

    def readline(self, size: int | None = -1) -> bytes:
        limit = _MAX_LINE if size is None or size < 0 else min(size, _MAX_LINE)
        out = bytearray()
        while len(out) < limit and self._pos < self.size:
            n = min(4096, limit - len(out), self.size - self._pos)
            piece = self._take(self._pos, n)
            cut = piece.find(b"\n")
            if cut >= 0:
                piece = piece[: cut + 1]
            out += piece
            self._pos += len(piece)
            if cut >= 0:
                break
        return bytes(out)

    def _take(self, offset: int, n: int) -> bytes:
        if self.given + n > self.budget:
            self.exceeded = True
            raise BudgetExceeded(f"the scan would read more than {self.budget} bytes")
        try:
            data = self._pread(offset, n)
        except (MirrorError, OSError) as exc:
            self.failure = exc
            raise StoreFailure(str(exc)) from exc
        self.given += len(data)
        return data


class SpoolView(ByteView):
    """A fill's spool, by positional reads on a descriptor the view owns and closes
    (the spool may be unlinked meanwhile by its ingest: the descriptor still reads it)."""

    def __init__(self, fd: int, size: int, budget: int = BUDGET) -> None:
        super().__init__(size, budget)
        self.fd = fd

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()

    def _pread(self, offset: int, n: int) -> bytes:
        parts = []
        while n > 0:
            data = os.pread(self.fd, n, offset)
            if not data:
                raise OSError(5, "the spool is shorter than the file")
            parts.append(data)
            offset += len(data)
            n -= len(data)
        return b"".join(parts)


class ManifestView(ByteView):
    """A stored file, chunk by chunk through the store (each chunk checked against its
    blake3 id); the last decoded chunk is kept for the next read."""

    def __init__(self, store: ChunkStore, chunks: Sequence[ChunkRef], size: int, budget: int = BUDGET) -> None:
        super().__init__(size, budget)
        self.store = store
        self.chunks = list(chunks)
        self.offsets: list[int] = []
        pos = 0
        for c in self.chunks:
            self.offsets.append(pos)
            pos += c.length
        self._cached: tuple[int, bytes | memoryview] | None = None

    def _chunk(self, i: int) -> bytes | memoryview:
        if self._cached is None or self._cached[0] != i:
            c = self.chunks[i]
            self._cached = (i, self.store.read(c.chunk_id, c.length))
        return self._cached[1]

    def _pread(self, offset: int, n: int) -> bytes:
        parts = []
        i = bisect.bisect_right(self.offsets, offset) - 1
        while n > 0 and 0 <= i < len(self.chunks):
            raw = self._chunk(i)
            lo = offset - self.offsets[i]
            piece = bytes(memoryview(raw)[lo: lo + n])
            parts.append(piece)
            offset += len(piece)
            n -= len(piece)
            i += 1
        if n > 0:
            raise OSError(5, "the manifest's chunks are shorter than the file")
        return b"".join(parts)
