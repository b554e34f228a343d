"""Domain errors of model-mirror.

Every error the daemon or the CLI can report is a subclass of `MirrorError`. Each class
carries the HTTP status and the Hub `X-Error-Code` it maps to, and the CLI exit code, as
class attributes: one table, read by the HTTP error middleware and by the CLI. Nothing
here imports aiohttp; lower layers raise, the edges render.
"""

from __future__ import annotations


class MirrorError(Exception):
    """Base of every expected failure. `str(err)` is a one-line message for a human."""

    status: int = 500
    error_code: str | None = None
    exit_code: int = 1

    def __init__(self, message: str, **headers: str) -> None:
        super().__init__(message)
        self.message = message
        # Extra response headers (for example X-Repo-Commit on EntryNotFound).
        self.headers: dict[str, str] = dict(headers)


# --- configuration and usage -------------------------------------------------------


class ConfigError(MirrorError):
    """A config file, environment override or flag is invalid."""

    exit_code = 2


class UsageError(MirrorError):
    """A CLI invocation is malformed."""

    exit_code = 2


# --- request validation -------------------------------------------------------------


class BadRequest(MirrorError):
    """Malformed input from a client (bad repo id, path, revision, range...)."""

    status = 400
    error_code = "BadRequest"


class RangeNotSatisfiable(MirrorError):
    """A Range header that cannot be satisfied for a file of `size` bytes."""

    status = 416

    def __init__(self, size: int) -> None:
        super().__init__(f"requested range not satisfiable (size {size})", **{"Content-Range": f"bytes */{size}"})
        self.size = size


# --- Hub-level not-found and access errors ------------------------------------------


class RepoNotFound(MirrorError):
    status = 404
    error_code = "RepoNotFound"


class RevisionNotFound(MirrorError):
    status = 404
    error_code = "RevisionNotFound"


class EntryNotFound(MirrorError):
    status = 404
    error_code = "EntryNotFound"


class GatedRepo(MirrorError):
    status = 403
    error_code = "GatedRepo"


class Unauthorized(MirrorError):
    status = 401
    error_code = "RepoNotFound"


class InvalidToken(MirrorError):
    """A mirror token (mm_...) that is malformed, unknown, expired or revoked."""

    status = 401
    error_code = "InvalidToken"

    def __init__(self, message: str, *, code: str = "InvalidToken") -> None:
        super().__init__(message)
        self.error_code = code


class AccessDenied(MirrorError):
    """The caller's role or grants do not allow this action (or a repo rule refuses it).

    `X-Mirror-Error-Code` always names the mirror's reason. `X-Error-Code` does too,
    except for a refused repo read, where it says `GatedRepo` (`hub_code`): that is the
    403 code Hub clients understand, so `hf_hub_download` raises with the mirror's message
    instead of reporting a connection problem."""

    status = 403
    error_code = "AccessDenied"
    exit_code = 3

    def __init__(self, message: str, *, status: int = 403, code: str = "AccessDenied", hub_code: str | None = None) -> None:
        super().__init__(message, **{"X-Mirror-Error-Code": code})
        self.status = status
        self.error_code = hub_code or code


class XetNotSupported(MirrorError):
    status = 400
    error_code = "XetNotSupported"


# --- upstream and load ----------------------------------------------------------------


class UpstreamError(MirrorError):
    """Upstream answered badly (5xx, malformed) and nothing usable is cached."""

    status = 502


class UpstreamUnavailable(UpstreamError):
    """Upstream could not be reached or timed out, and nothing usable is cached."""

    status = 504


class LocalOnly(UpstreamUnavailable):
    """A repo of a local-only namespace ([auth] local_only): never asked upstream."""

    status = 404
    error_code = "RepoNotFound"


class UpstreamCannotConnect(UpstreamUnavailable):
    """No usable connection to upstream: refused, no route, no such host, a connect
    timeout, reset before any answer, or upstream was found so moments ago. Nothing was
    received, so the failure is reported at once: a fill with nothing written fails
    instead of retrying, and its client gets a 502 before its own timeout."""

    status = 502


class BucketUnavailable(UpstreamUnavailable):
    """The object store (an S3 bucket) could not be read: unreachable, timing out, or
    answering errors after the bounded retries of mirror/s3/client.py. A read that gets
    this may go to another origin; a write to the bucket raises StorageError instead."""


class RedirectRefused(UpstreamCannotConnect):
    """Upstream redirected to a target the mirror's redirect policy refuses to connect
    to (threat-model T12). Retrying gets the same redirect."""


class UpstreamRejected(MirrorError):
    """Upstream answered a 4xx that is not a not-found, auth or rate-limit answer (400,
    405, 409, 422, ...): the request itself is wrong, so the client gets upstream's own
    status and message rather than a 502."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = code


class Overloaded(MirrorError):
    """The mirror sheds load; clients retry after `retry_after` seconds."""

    status = 429

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, **{"Retry-After": str(retry_after)})


# --- integrity and storage ------------------------------------------------------------


class IntegrityError(MirrorError):
    """Bytes do not match their expected hash (a chunk, a file, a manifest signature)."""

    status = 502


class HashMismatch(IntegrityError):
    def __init__(self, what: str, expected: str, actual: str) -> None:
        super().__init__(f"{what}: hash mismatch (expected {expected}, got {actual})")
        self.expected = expected
        self.actual = actual


class CorruptChunk(IntegrityError):
    def __init__(self, chunk_id: str, reason: str) -> None:
        super().__init__(f"chunk {chunk_id[:16]}: {reason}")
        self.chunk_id = chunk_id


class BadSignature(IntegrityError):
    """A manifest or bundle signature does not verify, or binds other content."""


class PeerError(MirrorError):
    """A peer did not deliver: unreachable, timed out, an error status, a broken body.
    The fill goes on with the next peer or upstream."""

    status = 502
    error_code = "PeerFailed"

    def __init__(self, message: str, *, peer_status: int = 0) -> None:
        super().__init__(message)
        # The peer's HTTP status when it answered with an error (0: no answer).
        self.peer_status = peer_status


class PeerRefused(MirrorError):
    """A peer request that is unsigned, stale, replayed, badly signed, or from a key
    this node does not trust (401), or revoked (403)."""

    status = 401
    error_code = "PeerAuthFailed"

    def __init__(self, message: str, *, status: int = 401, code: str = "PeerAuthFailed") -> None:
        super().__init__(message)
        self.status = status
        self.error_code = code


class AddressNotAllowed(MirrorError):
    """The caller's address is outside `[server] allow` (checked before anything else)."""

    status = 403
    error_code = "AddressNotAllowed"


class ChunkMissing(MirrorError):
    status = 500

    def __init__(self, chunk_id: str) -> None:
        super().__init__(f"chunk {chunk_id[:16]} is missing from the store")
        self.chunk_id = chunk_id


class StorageError(MirrorError):
    """The disk refused a write (ENOSPC, EIO, fsync failure)."""

    status = 507


class BucketWriteFailed(StorageError):
    """A write to the object store (an S3 bucket) failed after the bounded retries of
    mirror/s3/client.py. Not a full disk: freeing local space (SpaceGuard.relieve) does
    not help, so the fill's callers skip it."""


class LockBusy(MirrorError):
    """Another process holds an exclusive lock."""

    exit_code = 0


# --- policy: quarantine and curation (issue 10 item 7) ---------------------------------


class Quarantined(MirrorError):
    """A file whose content a scan found unsafe (or could not scan) and no admin has
    released (`mirror quarantine release`)."""

    status = 403
    error_code = "FileQuarantined"


class ScanPending(MirrorError):
    """A file that must be scanned before its first byte is served is still being
    fetched or scanned: retry after `retry_after` seconds (huggingface_hub retries a 429
    on its own)."""

    status = 429
    error_code = "FileBeingScanned"

    def __init__(self, message: str, retry_after: int = 2) -> None:
        super().__init__(message, **{"Retry-After": str(retry_after)})


class CommitTooNew(MirrorError):
    """`[policy] min_upstream_age` refuses an upstream commit younger than that for a
    repo this mirror has not seen before."""

    status = 403
    error_code = "CommitTooNew"


# --- releases and channels (issue 11) --------------------------------------------------


class Conflict(MirrorError):
    """A change refused by the state it would change: a release that exists (releases
    are immutable), a release an alias still names, a name that shadows an upstream
    branch or tag, a canary on an alias that has one."""

    status = 409
    error_code = "Conflict"
    exit_code = 1


class AliasNotFound(MirrorError):
    status = 404
    error_code = "RevisionNotFound"
