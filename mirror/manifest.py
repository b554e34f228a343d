"""Manifests: the signed recipe that rebuilds one file content from chunks.

A manifest is keyed by the upstream identity of the content, `sha256:<hex>` for LFS files
and `sha1:<hex>` (git blob id) for regular files. Its canonical bytes, which are what the
node key signs, are ASCII lines:

    model-mirror manifest v1
    <identity>
    <size>
    <chunk count>
    <chunk id hex> <raw length>      (one line per chunk, in file order)

The signature therefore binds the identity, the size and the exact chunk list; `parse`
accepts only bytes that re-serialise to themselves, so two encodings of one meaning can
never both verify (threat-model T8).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mirror import keys
from mirror.errors import BadSignature

HEADER = "model-mirror manifest v1"
IDENTITY_RE = re.compile(r"(sha256:[0-9a-f]{64}|sha1:[0-9a-f]{40})", re.ASCII)
_LINE_RE = re.compile(r"([0-9a-f]{64}) (0|[1-9][0-9]{0,9})", re.ASCII)
_NUM_RE = re.compile(r"0|[1-9][0-9]{0,15}", re.ASCII)


@dataclass(frozen=True, slots=True)
class ChunkRef:
    chunk_id: str
    length: int


@dataclass(frozen=True, slots=True)
class Manifest:
    identity: str
    size: int
    chunks: tuple[ChunkRef, ...]
    signer: str = ""
    signature: bytes = b""

    def canonical(self) -> bytes:
        lines = [HEADER, self.identity, str(self.size), str(len(self.chunks))]
        lines += [f"{c.chunk_id} {c.length}" for c in self.chunks]
        return ("\n".join(lines) + "\n").encode("ascii")

    def signed(self, key: keys.NodeKey) -> "Manifest":
        return Manifest(self.identity, self.size, self.chunks, key.public_hex, key.sign(self.canonical()))

    def verify(self, trusted: set[str] | frozenset[str], expected_identity: str | None = None) -> None:
        """Raise BadSignature unless signed by a trusted key and self-consistent."""
        if expected_identity is not None and self.identity != expected_identity:
            raise BadSignature(f"manifest is for {self.identity}, not {expected_identity}")
        if sum(c.length for c in self.chunks) != self.size:
            raise BadSignature(f"manifest {self.identity}: chunk lengths do not add up to {self.size}")
        if self.signer not in trusted:
            raise BadSignature(f"manifest {self.identity}: signer {self.signer[:16]} is not trusted")
        keys.verify(self.signer, self.signature, self.canonical())

    def offsets(self) -> list[int]:
        out, pos = [], 0
        for c in self.chunks:
            out.append(pos)
            pos += c.length
        return out


def parse(body: bytes, signer: str = "", signature: bytes = b"") -> Manifest:
    """Parse canonical bytes strictly (the inverse of `Manifest.canonical`)."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise BadSignature("manifest is not ASCII") from None
    lines = text.split("\n")
    if len(lines) < 5 or lines[0] != HEADER or lines[-1] != "":
        raise BadSignature("not a v1 manifest")
    identity, size_s, count_s = lines[1], lines[2], lines[3]
    if not IDENTITY_RE.fullmatch(identity) or not _NUM_RE.fullmatch(size_s) or not _NUM_RE.fullmatch(count_s):
        raise BadSignature("malformed manifest header")
    body_lines = lines[4:-1]
    if len(body_lines) != int(count_s):
        raise BadSignature("manifest chunk count does not match")
    chunks = []
    for line in body_lines:
        m = _LINE_RE.fullmatch(line)
        if not m:
            raise BadSignature("malformed manifest chunk line")
        chunks.append(ChunkRef(m.group(1), int(m.group(2))))
    man = Manifest(identity, int(size_s), tuple(chunks), signer, signature)
    if man.canonical() != body:
        raise BadSignature("manifest bytes are not canonical")
    return man
