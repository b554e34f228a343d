"""The peer protocol, version 1: what mirror nodes send each other. The one file that
defines the wire format; a change of any shape here raises `VERSION` (and the path
prefix with it), so nodes of two versions refuse each other instead of misreading.

Every request is signed by the sender's node key (Ed25519, keys.py). Headers:

    X-Mirror-Peer-Key        sender's public key, 64 hex
    X-Mirror-Peer-Time       unix seconds, integer
    X-Mirror-Peer-Nonce      32 hex (16 random bytes), never reused
    X-Mirror-Peer-Signature  128 hex: signature of `request_signing_bytes(...)`

The signed bytes bind the method, the Host the sender addressed, the path with its
query, the sha256 of the body, the time, the nonce and the audience (the public key of
the node it is meant for; empty only for `hello`, which a node sends before it knows
the peer's key and which reveals nothing): a request cannot be replayed to another
node, at another path, with another body, outside the skew window, or twice.

JSON answers are signed by the responder over the request's nonce and the body's sha256
(`response_signing_bytes`), with the same header names: the asker knows the answer comes
from the peer it trusts, for this request. Streamed answers (chunks, a followed fill) are
not signed: their bytes are checked against content ids (blake3 per chunk, the file's
sha256) instead.

Endpoints (all under `PREFIX`; JSON bodies at most `MAX_BODY` bytes):

    GET  /hello                      {"protocol", "public_key", "url", "serial", "time"}
    POST /have                       {"identities": [id...], "chunks": [cid...]}
                                     -> {"identities": {id: {"state": "stored"} |
                                            {"state": "filling", "written": n}},
                                         "chunks": [cid held...]}
    GET  /manifest/<identity>        canonical manifest bytes (manifest.py); headers
                                     X-Mirror-Manifest-Signer, X-Mirror-Manifest-Signature
    POST /chunks                     {"ids": [cid...]} (at most MAX_BATCH)
                                     -> a stream of chunk records (below)
    POST /fill                       {"repo_type", "repo_id", "commit", "path", "oid",
                                      "size", "lfs_sha256", "start"}
                                     -> raw file bytes [start, size) as the responder's
                                        own fill of that file grows (409 when the
                                        responder is itself following a peer for it)
    GET  /changes?since=N&limit=M    {"serial", "changes": [{"serial", "kind", ...}],
                                      "more": bool}
    GET  /revision?repo_type&repo_id&commit
                                     {"repo": {"private", "gated"}, "info", "files": [...]}
    GET  /ref?repo_type&repo_id&revision
                                     {"commit", "checked_at"}
    GET  /channels?after=E&releases=S
                                     a page of the responder's releases and aliases
                                     (issue 11; a follower of `[channels] authority`
                                     asks its authority; channels/page.py):
                                     {"follows": the responder's own authority or "",
                                      "event": E', "release_serial": S', "more": bool,
                                      "events": [{"repo_type", "repo_id", "id", "name",
                                        "at", "actor", "action", "from", "to", "canary",
                                        "weight", "reason", "detail"}],
                                      "releases": [{"repo_type", "repo_id", "name",
                                        "version", "commit", "author", "created_at",
                                        "params", "datasets", "meta", "note"}],
                                      "aliases": [{"repo_type", "repo_id", "name",
                                        "commit", "release", "canary", "canary_release",
                                        "weight", "plan", "salt", "started_at", "next_at",
                                        "failures", "holding", "updated_at"}] | null,
                                      "index": [{"repo_type", "repo_id", "name",
                                        "commit"}] | null}
                                     events: alias history with id > E, oldest first;
                                     releases: those created after changelog serial S;
                                     both within a byte budget (at least one row); ask
                                     again from (E', S') while "more". The last page
                                     ("more" false) holds every alias and the index of
                                     every release, as of E'. Repos are named by type
                                     and id, never by a node's row ids.

A chunk record is `id (32 bytes) | length (u32, big endian) | frame` with the frame as
stored (codec.py: no re-compression); length `ABSENT` and no frame when the responder
does not hold that chunk. Records come in the order asked.
"""

from __future__ import annotations

import hashlib
import re
import struct

from mirror.model import REPO_TYPES, RepoKey

VERSION = 1
PREFIX = f"/_peer/v{VERSION}"
TAG = f"model-mirror peer v{VERSION}"

H_KEY = "X-Mirror-Peer-Key"
H_TIME = "X-Mirror-Peer-Time"
H_NONCE = "X-Mirror-Peer-Nonce"
H_SIG = "X-Mirror-Peer-Signature"
H_MANIFEST_SIGNER = "X-Mirror-Manifest-Signer"
H_MANIFEST_SIG = "X-Mirror-Manifest-Signature"

MAX_BODY = 1 << 20
MAX_BATCH = 64
MAX_HAVE = 4096

RECORD = struct.Struct(">32sI")
ABSENT = 0xFFFFFFFF

KEY_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)
CHUNK_RE = KEY_RE  # a chunk id (blake3) has the shape of a key: 64 hex
COMMIT_RE = re.compile(r"[0-9a-f]{40}", re.ASCII)
REPO_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?", re.ASCII)
NONCE_RE = re.compile(r"[0-9a-f]{32}", re.ASCII)
SIG_RE = re.compile(r"[0-9a-f]{128}", re.ASCII)
TIME_RE = re.compile(r"[0-9]{1,12}", re.ASCII)


def repo_key(repo_type: object, repo_id: object) -> RepoKey:
    """A repo named in a peer message, checked; ValueError when malformed."""
    if repo_type not in REPO_TYPES or not isinstance(repo_id, str) or not REPO_ID_RE.fullmatch(repo_id) or ".." in repo_id:
        raise ValueError("malformed repo")
    return RepoKey(str(repo_type), repo_id)


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def request_signing_bytes(method: str, host: str, path_qs: str, body: bytes, timestamp: int, nonce: str, audience: str) -> bytes:
    return "\n".join([TAG + " request", method.upper(), host.lower(), path_qs, body_digest(body), str(timestamp), nonce,
                      "to " + audience, ""]).encode()


def response_signing_bytes(nonce: str, body: bytes) -> bytes:
    return "\n".join([TAG + " response", nonce, body_digest(body), ""]).encode()


def chunk_record(chunk_id: str, frame: bytes | None) -> bytes:
    """The head of one record (the frame follows it when not None)."""
    return RECORD.pack(bytes.fromhex(chunk_id), ABSENT if frame is None else len(frame))
