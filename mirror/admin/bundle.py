"""The bundle file: revisions carried to an air-gapped mirror, signed by the node key.

Format version 1 (all integers big-endian):

    magic     b"MMBUNDLE" + u16 version (= 1)
    records   u8 kind + u64 length + payload, in this order:
      kind 1  header, once, first: UTF-8 JSON
                {"format": 1, "created_at": <float>, "signer": <pubkey hex>,
                 "since": <sha256 hex of the previous bundle file> | null,
                 "repos": [{"repo_type", "repo_id", "private", "gated",
                            "refs": {<name>: <commit>},
                            "commits": [{"sha", "info": <repo info at the commit>,
                                         "files": [<tree entries as the Hub lists them>]}]}],
                 "manifests": [{"identity", "size", "chunks": [[<chunk id>, <raw length>], ...]}],
                 "chunks": [<ids of the chunk records that follow, in order>]}
      kind 2  chunk, zero or more: 32-byte chunk id + the chunk's store frame (codec.py:
              a 16-byte header and the raw, zstd or grouped payload)
      kind 3  trailer, once, last: 32-byte Ed25519 public key + 64-byte signature of
              b"model-mirror bundle v1\\n" + sha256(every byte before the trailer record)

The manifests list every file content the revisions name; the chunk records carry only
the chunks the importer lacks: all of them, or with `--since PREV` all but those PREV
carried (the importer must have imported PREV, and refuses otherwise). An importer
accepts a bundle only when the signer is a trusted key, every chunk decodes to its id
(blake3), and every file rebuilt from chunks hashes to its upstream identity; it verifies
into temp files and publishes nothing from a refused bundle.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from mirror.errors import BadSignature

MAGIC = b"MMBUNDLE"
VERSION = 1
HEADER, CHUNK, TRAILER = 1, 2, 3
SIGNING_CONTEXT = b"model-mirror bundle v1\n"
_REC = struct.Struct(">BQ")
_MAX_HEADER = 256 << 20
_MAX_CHUNK = 64 << 20  # far above the 4 MiB chunk ceiling plus a frame header


class BundleWriter:
    """Writes records and hashes every byte; `finish` appends the signed trailer."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.hasher = hashlib.sha256()
        self._write(MAGIC + struct.pack(">H", VERSION))

    def _write(self, data: bytes) -> None:
        self.fh.write(data)
        self.hasher.update(data)

    def header(self, obj: dict[str, Any]) -> None:
        body = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
        self._write(_REC.pack(HEADER, len(body)))
        self._write(body)

    def chunk(self, chunk_id: str, frame: bytes) -> None:
        self._write(_REC.pack(CHUNK, 32 + len(frame)))
        self._write(bytes.fromhex(chunk_id))
        self._write(frame)

    def finish(self, public_key: bytes, sign: Any) -> None:
        signature = sign(SIGNING_CONTEXT + self.hasher.digest())
        self.fh.write(_REC.pack(TRAILER, 96) + public_key + signature)


@dataclass(frozen=True, slots=True)
class Record:
    kind: int
    payload: bytes


class BundleReader:
    """Reads records in order while hashing them; `digest` is the hash of everything read
    before the trailer. Structural problems raise BadSignature (the bundle is refused)."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.hasher = hashlib.sha256()
        head = self._read(len(MAGIC) + 2, "magic")
        if head[: len(MAGIC)] != MAGIC:
            raise BadSignature("not a model-mirror bundle")
        (version,) = struct.unpack(">H", head[len(MAGIC):])
        if version != VERSION:
            raise BadSignature(f"bundle format {version} is not supported (this build reads {VERSION})")
        self.hasher.update(head)

    def _read(self, n: int, what: str) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise BadSignature(f"bundle is truncated (in {what})")
        return data

    def next(self) -> Record:
        raw = self._read(_REC.size, "record header")
        kind, length = _REC.unpack(raw)
        limit = {HEADER: _MAX_HEADER, CHUNK: _MAX_CHUNK, TRAILER: 96}.get(kind)
        if limit is None or length > limit or (kind == TRAILER and length != 96) or (kind == CHUNK and length <= 32):
            raise BadSignature(f"bundle has a malformed record (kind {kind}, length {length})")
        payload = self._read(length, "record")
        if kind == TRAILER:
            if self.fh.read(1):
                raise BadSignature("bundle has bytes after its signature")
        else:
            self.hasher.update(raw)
            self.hasher.update(payload)
        return Record(kind, payload)

    @property
    def digest(self) -> bytes:
        return self.hasher.digest()


def read_header(path: str) -> dict[str, Any]:
    """The header of a bundle (for `--since`; not a verification)."""
    with open(path, "rb") as fh:
        rec = BundleReader(fh).next()
    if rec.kind != HEADER:
        raise BadSignature(f"{path}: bundle does not start with a header")
    return parse_header(rec.payload)


def parse_header(payload: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadSignature("bundle header is not JSON") from None
    if not isinstance(obj, dict) or obj.get("format") != VERSION:
        raise BadSignature("bundle header has the wrong format")
    for key, typ in (("repos", list), ("manifests", list), ("chunks", list)):
        if not isinstance(obj.get(key), typ):
            raise BadSignature(f"bundle header lacks '{key}'")
    return obj


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()
