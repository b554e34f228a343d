"""The node's Ed25519 signing key and the set of keys it trusts.

The private key is generated on first start into `keys/node.key` (PKCS#8 PEM, mode 0600)
and refused if group- or world-readable. A key is named by its public key in hex.
Trusted peer/bundle keys live in the catalog; this module only signs and verifies.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mirror.errors import BadSignature, ConfigError


class NodeKey:
    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_bytes = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def public_hex(self) -> str:
        return self.public_bytes.hex()

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def derive(self, purpose: bytes, length: int = 32) -> bytes:
        """A secret key for `purpose`, derived from the node key (HKDF-SHA256): secrets
        sealed with it are unreadable without keys/node.key (mode 0600)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        raw = self._private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                          serialization.NoEncryption())
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=b"model-mirror " + purpose).derive(raw)

    @classmethod
    def load_or_create(cls, key_dir: Path) -> "NodeKey":
        path = key_dir / "node.key"
        if path.exists():
            mode = stat.S_IMODE(os.stat(path).st_mode)
            if mode & 0o077:
                raise ConfigError(f"{path}: node key is readable by others (mode {mode:o}); run chmod 600")
            try:
                key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            except ValueError:
                raise ConfigError(f"{path}: not a PEM private key") from None
            if not isinstance(key, Ed25519PrivateKey):
                raise ConfigError(f"{path}: not an Ed25519 key")
            return cls(key)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        tmp = key_dir / "node.key.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if another process created it meanwhile
        except FileExistsError:
            os.unlink(tmp)
            return cls.load_or_create(key_dir)
        os.unlink(tmp)
        node = cls(key)
        (key_dir / "node.pub").write_text(node.public_hex + "\n")
        return node


def verify(public_hex: str, signature: bytes, data: bytes) -> None:
    """Raise BadSignature unless `signature` is `public_hex`'s signature of `data`."""
    try:
        pub = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))
    except ValueError:
        raise BadSignature(f"malformed public key {public_hex[:16]}") from None
    try:
        pub.verify(signature, data)
    except InvalidSignature:
        raise BadSignature(f"signature by {public_hex[:16]} does not verify") from None


def parse_public_key(text: str) -> str:
    t = text.strip().lower()
    if len(t) != 64 or any(c not in "0123456789abcdef" for c in t):
        raise ConfigError("a public key is 64 hex characters (see `mirror keys show`)")
    return t
