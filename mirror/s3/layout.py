"""The names of the objects in a bucket: the one place that names them. Format 1.

Under the URL's prefix (`s3://bucket/<prefix>/`, mirror/s3/url.py):

    FORMAT                   "model-mirror bucket 1\\n": written once (create-only) by the
                             first node that uses the bucket; a node refuses a bucket
                             whose format is newer than its own
    chunks/<ab>/<id>         one chunk frame (16-byte header + payload, store/codec.py),
                             <id> = 64 hex chars of blake3(raw bytes), <ab> = id[0:2].
                             Written create-only (If-None-Match: *), so however many nodes
                             share the bucket a chunk is stored once and never replaced;
                             removed only by the cross-node collector (mirror/s3/gc.py)
    manifests/<algo>/<hex>   the signed manifest of one file content, <algo>:<hex> its
                             identity (sha256:<64 hex> or sha1:<40 hex>); body
                             (mirror/s3/manifests.py): "model-mirror signed manifest 1\n",
                             the signer's public key hex, "\n", the signature hex, "\n",
                             then the canonical manifest bytes (mirror/manifest.py).
                             Written create-only after every chunk it names is stored;
                             the first node's stays; deleted only by the collector
    refs/<node key>/full     what one node references, and what each stored manifest
    refs/<node key>/d<20 d>  added since (mirror/s3/refs.py: the format), written only
                             by that node
    gc/lease                 the collector's lease (mirror/s3/gc.py), create-only
    gc/candidates            chunks and manifests found unreferenced by the last
                             collection, deleted by a later one (mirror/s3/gc.py)
    packs/<24 hex>.pack      one archive pack of the lifecycle tier (`[archive] url`), in
                             the pack format of store/packs.py (PACK_VERSION), uploaded
                             whole (multipart) under a fresh random name, never modified;
                             removed by its node's GC or repack. The packs under a prefix
                             belong to ONE node (its catalog records them; its GC deletes
                             the ones it never recorded): give each node its own prefix
    packs-owner              "model-mirror packs owner 1\n<node key>\n": the node whose
                             packs these are, written create-only by the first node that
                             uploads or deletes a pack under the prefix. Another node
                             refuses to do either there (`claim_packs`), so two nodes
                             given one `[archive] url` cannot collect each other's packs.
                             To hand a prefix to a new node (the old one is gone for
                             good), delete this object with any S3 tool

Names are built only from validated hex ids (threat-model I1); a key any other way is
refused. Names a later format adds (archive packs) go here, with the version raised when an existing name or format changes.

Upgrade rule: BUCKET_FORMAT rises when a name or an object format above changes. Readers
of format N read every format <= N; a node finding a newer FORMAT refuses to write (and
says to upgrade).
"""

from __future__ import annotations

import re

from mirror.errors import ConfigError, StorageError
from mirror.manifest import IDENTITY_RE
from mirror.s3.client import S3Client
from mirror.store.layout import is_chunk_id
from mirror.store.packs import is_pack_name

BUCKET_FORMAT = 1
FORMAT_KEY = "FORMAT"
CHUNKS = "chunks"
MANIFESTS = "manifests"
REFS = "refs"
GC_LEASE = "gc/lease"
GC_CANDIDATES = "gc/candidates"
PACKS = "packs"
PACKS_OWNER = "packs-owner"

_MARKER = re.compile(rb"model-mirror bucket (\d+)\n?")
_NODE_KEY = re.compile(r"[0-9a-f]{64}", re.ASCII)
_OWNER = re.compile(rb"model-mirror packs owner 1\n([0-9a-f]{64})\n?")


def chunk_key(cid: str) -> str:
    if not is_chunk_id(cid):
        raise ValueError(f"not a chunk id: {cid[:80]!r}")
    return f"{CHUNKS}/{cid[0:2]}/{cid}"


def chunk_id_of_key(key: str) -> str | None:
    """The chunk id a key names, or None when it is not a chunk's key."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == CHUNKS and is_chunk_id(parts[2]) and parts[1] == parts[2][0:2]:
        return parts[2]
    return None


def manifest_key(identity: str) -> str:
    if not IDENTITY_RE.fullmatch(identity):
        raise ValueError(f"not a content identity: {identity[:80]!r}")
    algo, hexid = identity.split(":", 1)
    return f"{MANIFESTS}/{algo}/{hexid}"


def identity_of_key(key: str) -> str | None:
    """The identity a manifest's key names, or None when it is not a manifest's key."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == MANIFESTS:
        identity = f"{parts[1]}:{parts[2]}"
        if IDENTITY_RE.fullmatch(identity):
            return identity
    return None


def refs_key(node_key: str) -> str:
    if not _NODE_KEY.fullmatch(node_key):
        raise ValueError(f"not a node key: {node_key[:80]!r}")
    return f"{REFS}/{node_key}"


def node_of_refs_key(key: str) -> str | None:
    parts = key.split("/")
    if len(parts) == 2 and parts[0] == REFS and _NODE_KEY.fullmatch(parts[1]):
        return parts[1]
    return None
def pack_key(name: str) -> str:
    if not is_pack_name(name):
        raise ValueError(f"not a pack name: {name[:80]!r}")
    return f"{PACKS}/{name}"


def pack_name_of_key(key: str) -> str | None:
    """The pack name a key names, or None when it is not a pack's key."""
    parts = key.split("/")
    return parts[1] if len(parts) == 2 and parts[0] == PACKS and is_pack_name(parts[1]) else None


def ensure_format(client: S3Client) -> int:
    """Write the FORMAT marker if the bucket (under its prefix) has none, and return the
    bucket's format. Raises ConfigError when it is newer than this build's or is not a
    marker of ours (the URL points at something this build must not write to), and the
    client's BucketUnavailable / StorageError when the bucket cannot be reached."""
    client.put(FORMAT_KEY, f"model-mirror bucket {BUCKET_FORMAT}\n".encode(), create=True)
    got = client.get(FORMAT_KEY, 0, 64)
    m = _MARKER.fullmatch(got.data) if got is not None else None
    if m is None:
        raise ConfigError(f"{client.url}/{FORMAT_KEY} is not a model-mirror bucket marker")
    version = int(m.group(1))
    if version > BUCKET_FORMAT:
        raise ConfigError(f"{client.url}: bucket format {version} is newer than this build's ({BUCKET_FORMAT}); "
                           f"upgrade model-mirror")
    return version


def claim_packs(client: S3Client, node_key: str) -> None:
    """Make sure the packs under this prefix are `node_key`'s: write the owner marker if
    there is none, then read it. Raises StorageError when another node owns them (or the
    marker is not ours), and the client's BucketUnavailable / StorageError when the
    bucket cannot be reached."""
    if not _NODE_KEY.fullmatch(node_key):
        raise ValueError(f"not a node key: {node_key[:80]!r}")
    client.put(PACKS_OWNER, f"model-mirror packs owner 1\n{node_key}\n".encode(), create=True)
    got = client.get(PACKS_OWNER, 0, 256)
    m = _OWNER.fullmatch(got.data) if got is not None else None
    if m is None:
        raise StorageError(f"{client.url}/{PACKS_OWNER} is not a model-mirror packs owner marker; "
                           f"the archive will not write or delete packs here")
    owner = m.group(1).decode()
    if owner != node_key:
        raise StorageError(f"the archive packs under {client.url} belong to node {owner[:16]}, not this node "
                           f"({node_key[:16]}): give each node its own [archive] url prefix (or, if that node is "
                           f"gone for good, delete {client.url}/{PACKS_OWNER})")
