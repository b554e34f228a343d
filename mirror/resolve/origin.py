"""Origins: where a cache fill gets the bytes of a file it does not hold.

A miss asks an ordered list of origins (built in the composition root, node.py): today
the upstream Hub (`UpstreamOrigin`); next LAN peers, an object-storage tier. Each origin
delivers the bytes it can into the fill's `Sink`, in file order, starting at
`sink.offset` (what earlier origins or an earlier run already delivered). The fill's
followers stream from the sink's spool behind the hold-back whichever origin feeds it.

Verification happens in one place whatever the origin: the sink hashes every byte it
accepts, and the `Fetcher` (resolve/fetcher.py) compares the whole file's digest (sha256,
or the git blob sha1) with the listed identity before a single held-back byte is
released or anything is stored. Where an origin has chunks by id (a peer's signed
manifest), `Sink.write_chunk` also checks each chunk's blake3 before accepting it.

Contract of `Origin.fill(target, sink, caller)`:
- write bytes [sink.offset, target.size) into the sink, in order, as far as it can;
- return when it has nothing more to give (it may have written nothing, or a part: the
  next origin continues from `sink.offset`);
- raise MirrorError when it failed; the Fetcher then asks the next origin, and the
  error of the last origin asked is the fill's error when no origin completed the file.
An origin never writes past `target.size` (the sink refuses it).

After the whole-file check, every origin asked hears the verdict (`judged`): an origin
whose bytes made a file fail its hash (a trusted peer that signed a manifest for other
content: every chunk matches its id, only the file's digest can tell) is not asked
for that content again.
"""

from __future__ import annotations

import errno
import os
from typing import Callable, Protocol, Sequence

from mirror.caller import Caller
from mirror.errors import IntegrityError, StorageError, UpstreamError
from mirror.resolve.spool import FillTarget, SpoolWriter
from mirror.manifest import ChunkRef
from mirror.store.chunkstore import Staged, chunk_id_of


class Sink(Protocol):
    """Where an origin delivers bytes, in file order. Two kinds: a fill's `SpoolSink`
    (kept, followed by any number of clients) and a direct stream's pipe (one client,
    nothing kept: resolve/direct.py)."""

    @property
    def offset(self) -> int:
        """Where the next piece goes: bytes [0, offset) are delivered."""

    async def write(self, piece: bytes) -> None:
        """Append `piece` at `offset`; UpstreamError past the file's size, StorageError
        once the sink cannot take bytes any more."""

    async def write_chunk(self, chunk_id: str, raw: bytes) -> None:
        """Append one chunk after checking its blake3 id (IntegrityError if it differs)."""

    async def drain(self) -> None:
        """Wait until every accepted piece is delivered."""

    @property
    def keeps(self) -> bool:
        """Whether the bytes are kept (a fill) rather than only streamed (a direct stream)."""

    def offer(self, chunks: "tuple[ChunkRef, ...]", staged: "list[Staged]") -> None:
        """The origin delivered the whole file as these chunks, each checked against its
        id and staged as received (a peer's frames): once the file's hash matches, the
        fill may adopt them instead of cutting and compressing its spool again. Only
        called on a sink that `keeps`; the sink then owns the staged temps."""


def check_chunk(chunk_id: str, raw: bytes) -> None:
    """The per-chunk check of bytes an origin gives by chunk id (blake3 of the raw bytes)."""
    if chunk_id_of(raw) != chunk_id:
        raise IntegrityError(f"chunk {chunk_id[:16]} does not match its blake3 id")


class SpoolSink:
    """The write side of one fill: hashes and spools pieces in order, off the loop."""

    def __init__(self, fd: int, hasher: object, offset: int, size: int, on_written: Callable[[int, bytes], None]) -> None:
        self._fd = fd
        self._hasher = hasher
        self._size = size
        self._on_written = on_written
        self._writer: SpoolWriter | None = None
        self._offset = offset
        self._broken: StorageError | None = None
        # Chunks an origin offered for the whole file (see Sink.offer).
        self.offered: tuple[tuple[ChunkRef, ...], list[Staged]] | None = None

    keeps = True

    def offer(self, chunks: "tuple[ChunkRef, ...]", staged: "list[Staged]") -> None:
        self.offered = (chunks, staged)

    @property
    def offset(self) -> int:
        """Where the next piece goes (bytes delivered so far, counting submitted ones)."""
        return self._writer.offset if self._writer is not None else self._offset

    @property
    def broken(self) -> StorageError | None:
        """The write error that made the spool unusable, if one happened."""
        return self._broken

    @property
    def size(self) -> int:
        return self._size

    async def write(self, piece: bytes) -> None:
        """Append `piece` at `offset`. Raises UpstreamError past the file's size, and
        StorageError once a write failed (the spool and its hash are then unusable)."""
        if self._broken is not None:
            raise self._broken
        if self.offset + len(piece) > self._size:
            raise UpstreamError("origin sent more bytes than the file size")
        if self._writer is None:
            self._writer = SpoolWriter(self._fd, self._hasher, self._offset, self._on_written)
        try:
            await self._writer.submit(piece)
        except OSError as exc:
            self._broken = _storage_error(exc)
            raise self._broken from None

    async def write_chunk(self, chunk_id: str, raw: bytes) -> None:
        """Append one chunk after checking it against its id (blake3); a mismatch is
        refused (IntegrityError) and nothing of it is written."""
        check_chunk(chunk_id, raw)
        await self.write(raw)

    async def drain(self) -> None:
        """Wait until every accepted piece is written (bytes that arrived before a
        failure are good: the next origin resumes after them)."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                await writer.drain()
            except OSError as exc:
                self._broken = _storage_error(exc)
                raise self._broken from None
            finally:
                self._offset = writer.retired


def _storage_error(exc: OSError) -> StorageError:
    return StorageError(f"cannot write the spool: {os.strerror(exc.errno or errno.EIO)}")


class Origin(Protocol):
    name: str

    async def fill(self, target: FillTarget, sink: Sink, caller: Caller) -> None:
        """Deliver what this origin has of bytes [sink.offset, target.size) (module
        docstring: the contract)."""

    def judged(self, identity: str, hash_ok: bool) -> None:
        """The whole-file check of `identity` passed or failed; called once per fill or
        direct stream that asked this origin."""


def judge(origins: "Sequence[Origin]", identity: str, hash_ok: bool) -> None:
    for origin in origins:
        origin.judged(identity, hash_ok)
