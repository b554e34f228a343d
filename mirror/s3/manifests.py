"""Signed manifests in a shared bucket: how one node tells the others what a file is made of.

When a node stores a file's manifest (Ingestor.adopt, after every chunk it names is in
the bucket), it also writes the manifest, signed with its node key, to
`manifests/<algo>/<hex>` (mirror/s3/layout.py), create-only: the first node's copy
stays, a later node's put finds it and changes nothing. A node that misses the file
reads it back (the bucket origin, mirror/s3/origin.py) and verifies it like a peer's.

Object body, format 1 (ASCII):

    model-mirror signed manifest 1
    <signer: 64 hex, an Ed25519 public key>
    <signature: 128 hex, over the canonical bytes>
    <the canonical manifest bytes, mirror/manifest.py>

`decode` is strict (any other bytes raise BadSignature) and checks nothing about trust:
the reader calls `Manifest.verify(trusted, identity)` and compares the size.

Publishing is best effort and off the caller's path (`publish_soon`, in a worker
thread): a bucket that cannot be written costs only the other nodes a trip upstream,
and the manifest is written again the next time the file is stored by any node.
"""

from __future__ import annotations

import logging
import re
import threading
from concurrent import futures
from concurrent.futures import Executor, Future

from mirror.errors import BadSignature, MirrorError
from mirror.manifest import Manifest, parse
from mirror.s3.client import S3Client
from mirror.s3.layout import manifest_key

log = logging.getLogger("mirror.s3")

HEADER = b"model-mirror signed manifest 1\n"
MAX_MANIFEST = 16 << 20  # like a peer's (peers/client.py)
_SIGNER = re.compile(rb"([0-9a-f]{64})\n([0-9a-f]{128})\n", re.ASCII)
# Publications queued at most; past it a manifest is not published (costs a fetch upstream).
_MAX_PENDING = 1000


def encode(man: Manifest) -> bytes:
    if not man.signer or not man.signature:
        raise ValueError(f"manifest {man.identity} is not signed")
    return HEADER + f"{man.signer}\n{man.signature.hex()}\n".encode("ascii") + man.canonical()


def decode(body: bytes) -> Manifest:
    """The manifest in an object's body, signature not yet checked. BadSignature when
    the body is not exactly format 1."""
    if not body.startswith(HEADER):
        raise BadSignature("not a signed manifest object (format 1)")
    m = _SIGNER.match(body, len(HEADER))
    if m is None:
        raise BadSignature("signed manifest object: malformed signer or signature")
    return parse(body[m.end():], m.group(1).decode("ascii"), bytes.fromhex(m.group(2).decode("ascii")))


class BucketManifests:
    def __init__(self, client: S3Client, executor: Executor | None = None) -> None:
        """`executor` runs `publish_soon`'s writes (None: they run in the caller)."""
        self.client = client
        self.executor = executor
        self._pending: set[Future[bool]] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BucketManifests({self.client.url})"

    def publish(self, man: Manifest) -> bool:
        """Write the signed manifest create-only; False when one is there already.
        Raises BucketWriteFailed."""
        return self.client.put(manifest_key(man.identity), encode(man), create=True)

    def publish_soon(self, man: Manifest) -> None:
        """`publish` in the executor; a failure is logged, never raised."""
        if self.executor is None:
            self._publish_logged(man)
            return
        with self._lock:
            if len(self._pending) >= _MAX_PENDING:
                log.warning("not publishing the manifest of %s to %s: %d publications pending", man.identity,
                            self.client.url, len(self._pending))
                return
            fut = self.executor.submit(self._publish_logged, man)
            self._pending.add(fut)
        fut.add_done_callback(self._done)

    def _done(self, fut: "Future[bool]") -> None:
        with self._lock:
            self._pending.discard(fut)

    def wait(self, timeout: float = 30.0) -> None:
        """Wait for the queued publications (tests, and closing the node)."""
        with self._lock:
            pending = list(self._pending)
        futures.wait(pending, timeout)  # failures were logged where they happened

    def _publish_logged(self, man: Manifest) -> bool:
        try:
            return self.publish(man)
        except MirrorError as exc:
            log.warning("cannot publish the manifest of %s to the bucket: %s", man.identity, exc.message)
            return False

    def fetch(self, identity: str) -> Manifest | None:
        """The manifest the bucket holds for `identity` (signature NOT checked: the
        caller verifies it against its trusted keys), or None when there is none.
        Raises BucketUnavailable, BadSignature for a malformed or oversized object."""
        got = self.client.get(manifest_key(identity), 0, MAX_MANIFEST + 1)
        if got is None:
            return None
        if got.size > MAX_MANIFEST:
            raise BadSignature(f"manifest object of {identity} is {got.size} bytes, more than any manifest")
        return decode(got.data)
