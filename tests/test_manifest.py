"""Signed manifests (manifest.py, keys.py): canonical bytes, and every way a manifest can
be tampered with or re-encoded is a BadSignature (threat-model T8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror.errors import BadSignature
from mirror.keys import NodeKey
from mirror.manifest import ChunkRef, Manifest, parse

IDENTITY = "sha256:" + "ab" * 32


def chunk(i: int, length: int) -> ChunkRef:
    return ChunkRef(f"{i:02x}" * 32, length)


@pytest.fixture
def key(tmp_path: Path) -> NodeKey:
    d = tmp_path / "keys"
    d.mkdir()
    return NodeKey.load_or_create(d)


@pytest.fixture
def man(key: NodeKey) -> Manifest:
    return Manifest(IDENTITY, 3000, (chunk(1, 1000), chunk(2, 1500), chunk(3, 500))).signed(key)


def test_canonical_bytes_and_round_trip(man: Manifest, key: NodeKey) -> None:
    body = man.canonical()
    assert body == (
        b"model-mirror manifest v1\n" + IDENTITY.encode() + b"\n3000\n3\n"
        + b"".join(f"{c.chunk_id} {c.length}\n".encode() for c in man.chunks)
    )
    again = parse(body, man.signer, man.signature)
    assert again == man and again.canonical() == body
    again.verify({key.public_hex}, IDENTITY)
    assert man.offsets() == [0, 1000, 2500]


def test_empty_and_sha1_manifests_round_trip(key: NodeKey) -> None:
    for m in (Manifest(IDENTITY, 0, ()), Manifest("sha1:" + "0f" * 20, 7, (chunk(9, 7),))):
        s = m.signed(key)
        parsed = parse(s.canonical(), s.signer, s.signature)
        assert parsed == s
        parsed.verify({key.public_hex}, m.identity)


def _replace_line(body: bytes, index: int, new: str) -> bytes:
    lines = body.decode().split("\n")
    lines[index] = new
    return "\n".join(lines).encode()


def test_tampered_chunk_length_is_rejected(man: Manifest, key: NodeKey) -> None:
    # One length changed: the lengths no longer add up to the size.
    body = _replace_line(man.canonical(), 4, f"{man.chunks[0].chunk_id} 1001")
    with pytest.raises(BadSignature):
        parse(body, man.signer, man.signature).verify({key.public_hex}, IDENTITY)
    # Two lengths changed so that they still add up: only the signature catches it.
    body = _replace_line(body, 5, f"{man.chunks[1].chunk_id} 1499")
    tampered = parse(body, man.signer, man.signature)
    assert sum(c.length for c in tampered.chunks) == tampered.size
    with pytest.raises(BadSignature, match="does not verify"):
        tampered.verify({key.public_hex}, IDENTITY)


def test_tampered_chunk_id_or_size_is_rejected(man: Manifest, key: NodeKey) -> None:
    swapped = Manifest(man.identity, man.size, (chunk(7, 1000),) + man.chunks[1:], man.signer, man.signature)
    with pytest.raises(BadSignature):
        swapped.verify({key.public_hex}, IDENTITY)
    reordered = Manifest(man.identity, man.size, (man.chunks[1], man.chunks[0], man.chunks[2]), man.signer, man.signature)
    with pytest.raises(BadSignature):
        reordered.verify({key.public_hex}, IDENTITY)


def test_tampered_signature_is_rejected(man: Manifest, key: NodeKey) -> None:
    sig = bytearray(man.signature)
    sig[10] ^= 1
    bad = Manifest(man.identity, man.size, man.chunks, man.signer, bytes(sig))
    with pytest.raises(BadSignature):
        bad.verify({key.public_hex}, IDENTITY)
    with pytest.raises(BadSignature):
        Manifest(man.identity, man.size, man.chunks, man.signer, b"").verify({key.public_hex}, IDENTITY)


def test_untrusted_signer_is_rejected(man: Manifest, key: NodeKey, tmp_path: Path) -> None:
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = NodeKey.load_or_create(other_dir)
    by_other = Manifest(man.identity, man.size, man.chunks).signed(other)
    by_other.verify({other.public_hex}, IDENTITY)  # valid in itself
    with pytest.raises(BadSignature, match="not trusted"):
        by_other.verify({key.public_hex}, IDENTITY)
    # Claiming a trusted signer with the other key's signature does not help either.
    forged = Manifest(man.identity, man.size, man.chunks, key.public_hex, by_other.signature)
    with pytest.raises(BadSignature):
        forged.verify({key.public_hex}, IDENTITY)
    with pytest.raises(BadSignature):
        Manifest(man.identity, man.size, man.chunks, "zz" * 32, man.signature).verify({"zz" * 32}, IDENTITY)


def test_wrong_expected_identity_is_rejected(man: Manifest, key: NodeKey) -> None:
    with pytest.raises(BadSignature):
        man.verify({key.public_hex}, "sha256:" + "cd" * 32)
    # A manifest re-labelled with another identity no longer verifies.
    relabelled = Manifest("sha256:" + "cd" * 32, man.size, man.chunks, man.signer, man.signature)
    with pytest.raises(BadSignature):
        relabelled.verify({key.public_hex}, "sha256:" + "cd" * 32)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b.replace(b"\n", b"\r\n"),
        lambda b: b + b"\n",
        lambda b: b[:-1],
        lambda b: b.replace(b" 1000\n", b" 01000\n"),
        lambda b: b.replace(b" 1000\n", b" +1000\n"),
        lambda b: b.replace(b" 1000\n", b"  1000\n"),
        lambda b: b.replace(b"\n3000\n", b"\n3_000\n"),
        lambda b: b.replace(b"\n3\n", b"\n03\n"),
        lambda b: b.replace(b"01" * 32, b"01" * 31 + b"0A"),
        lambda b: b.replace(b"sha256:", b"SHA256:"),
        lambda b: b.replace(b"manifest v1", b"manifest v2"),
        lambda b: b.replace(b"\n3\n", b"\n4\n"),
        lambda b: b.replace(b" 1000\n", " ١٠٠٠\n".encode()),
        lambda b: b"\xef\xbb\xbf" + b,
    ],
)
def test_non_canonical_encodings_are_rejected(man: Manifest, mangle) -> None:  # type: ignore[no-untyped-def]
    body = mangle(man.canonical())
    assert body != man.canonical()
    with pytest.raises(BadSignature):
        parse(body, man.signer, man.signature)


def test_key_file_is_private_and_stable(tmp_path: Path) -> None:
    d = tmp_path / "k"
    d.mkdir()
    first = NodeKey.load_or_create(d)
    assert (d / "node.key").stat().st_mode & 0o777 == 0o600
    assert (d / "node.pub").read_text().strip() == first.public_hex
    assert NodeKey.load_or_create(d).public_hex == first.public_hex
