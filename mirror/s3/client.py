"""`S3Client`: the one wrapper around obstore that everything S3 in the project uses.

Blocking methods (callers run them in worker threads), thread-safe, keys relative to the
URL's prefix (mirror/s3/layout.py names them):

    put(key, data, create=True) -> bool   one PUT; create-only (If-None-Match: *) returns
                                          False, changing nothing, when the key exists
    upload(key, source)                   multipart upload of a large file or stream
                                          (parts of `part_size`, `concurrency` in flight);
                                          overwrites, so only for keys no one else writes
    get(key, offset, length) -> Read|None ranged GET (bytes and the object's whole size)
    head(key) -> ObjectInfo | None
    delete(key)                           idempotent
    list(prefix) -> Iterator[ObjectInfo]  every object under `prefix`, paged

Atomicity: an object is visible whole or not at all (a PUT, or a multipart upload once
completed; a failed multipart upload is aborted by obstore, leaving no object).

Retries and their bounds: obstore's retry layer (Rust `object_store`) retries 5xx answers
(503 SlowDown included), connection errors, dropped connections and timeouts with
exponential backoff and full jitter: first wait up to BACKOFF_FIRST, doubling, each at
most BACKOFF_MAX; at most `[s3] retries` retries; no retry starts later than
RETRY_WINDOW after the first attempt; every attempt is cut at `[s3] timeout` (connect
within min(5 s, timeout)). obstore does not retry a single PUT that timed out (it may
have landed); `put` does, in its own loop with the same backoff and bounds (safe: a
create-only PUT that had landed then finds its own object). Multipart parts are retried
like reads; an upload that fails anyway is aborted and raised (the caller uploads again).
So one call gives up after at most retries + 1 attempts and about RETRY_WINDOW + timeout
seconds. After a call failed that way, the client answers at once with the same error
for COOLDOWN seconds (a down bucket costs one timeout per COOLDOWN, not one per chunk).

Errors, all MirrorError: a failed read (get, head, list) raises BucketUnavailable (an
UpstreamUnavailable: callers may use another origin); a failed write (put, upload,
delete) raises BucketWriteFailed (a StorageError); an absent object is None, not an error. Messages name the
operation, the bucket and the key and the cause (an HTTP status and S3 error code, a
timeout, a refused connection), never a credential: the values of the credentials in
use are scrubbed from anything quoted (tests/test_s3_client.py checks).
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Iterable, Iterator, NamedTuple

import obstore
from obstore.exceptions import AlreadyExistsError, PreconditionError
from obstore.store import S3Store

from mirror.s3.url import S3Config
from mirror.errors import BucketUnavailable, BucketWriteFailed, MirrorError
from mirror.s3.credentials import Credentials
from mirror.s3.url import S3Url, endpoint_for

log = logging.getLogger("mirror.s3")

BACKOFF_FIRST = 0.1  # seconds
BACKOFF_MAX = 2.0
RETRY_WINDOW = 60.0
COOLDOWN = 5.0
PART_SIZE = 8 << 20  # multipart part size (S3 needs >= 5 MiB but for the last part)
LIST_PAGE = 1000

_KEY = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*", re.ASCII)
_STATUS = re.compile(r"status code: (\d{3})(?: ([A-Za-z][A-Za-z ]*[A-Za-z]))?")
_S3CODE = re.compile(r"<Code>([A-Za-z]{1,60})</Code>")
_RETRIES = re.compile(r"after (\d+) retries")
_HTTP_KIND = re.compile(r"HttpError \{\s*kind: (\w+)")  # obstore's cause of a failed exchange


class Read(NamedTuple):
    data: bytes
    size: int  # the whole object's size (the data may be a range of it)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str  # relative to the client's prefix
    size: int
    mtime: float  # seconds since the epoch
    etag: str | None = None


class S3Client:
    def __init__(self, url: S3Url, settings: S3Config, *, credentials: Credentials | None = None,
                 cooldown: float = COOLDOWN) -> None:
        """`settings`: the config's [s3] table (validated at load, mirror/s3/url.py);
        `credentials`: from a credentials file, or None for obstore's default chain."""
        self.url = url
        self.settings = settings
        self.cooldown = cooldown
        self._secrets = credentials.secrets() if credentials is not None else ()
        self._down_until = 0.0
        self._down_error = ""
        self._lock = threading.Lock()
        endpoint = endpoint_for(settings, url.bucket)
        config: dict[str, object] = {"virtual_hosted_style_request": settings.addressing == "virtual"}
        if endpoint:
            config["endpoint"] = endpoint
        if settings.region:
            config["region"] = settings.region
        client_options: dict[str, object] = {
            "timeout": timedelta(seconds=settings.timeout),
            "connect_timeout": timedelta(seconds=min(5.0, settings.timeout)),
            "allow_http": endpoint.startswith("http://"),
            "user_agent": "model-mirror",
        }
        retry_config: dict[str, object] = {
            "max_retries": settings.retries,
            "retry_timeout": timedelta(seconds=RETRY_WINDOW),
            "backoff": {"init_backoff": timedelta(seconds=BACKOFF_FIRST), "max_backoff": timedelta(seconds=BACKOFF_MAX),
                        "base": 2},
        }
        self.store = S3Store(url.bucket, prefix=url.prefix or None, config=config,  # type: ignore[arg-type]
                             client_options=client_options, retry_config=retry_config,  # type: ignore[arg-type]
                             credential_provider=credentials)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"S3Client({self.url})"

    # --- writes ----------------------------------------------------------------------------

    def put(self, key: str, data: bytes | memoryview, *, create: bool = True) -> bool:
        """Store `data` under `key` in one PUT. With `create`, only if the key is absent:
        returns False, changing nothing, when it exists (a retried PUT that had landed
        finds its own object: also False). Raises BucketWriteFailed."""
        self._check_key(key)
        self._not_down("put", key, BucketWriteFailed)
        started = time.monotonic()
        for attempt in range(self.settings.retries + 1):
            try:
                obstore.put(self.store, key, data, mode="create" if create else "overwrite", use_multipart=False)
                break
            except (AlreadyExistsError, PreconditionError):
                return False
            except Exception as exc:
                if create and self._status(exc) == 409:
                    # A concurrent conditional write of the same key (AWS answers 409):
                    # the other writer's object, once there, is the answer.
                    return self._settle_conflict(key, exc)
                # obstore retried 5xx and lost connections; a timeout is retried here.
                timed_out = self._reason(exc).startswith("timed out")
                if (not timed_out or attempt == self.settings.retries
                        or time.monotonic() - started > RETRY_WINDOW):
                    raise self._failed("put", key, exc, BucketWriteFailed) from None
                time.sleep(random.uniform(0, min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** attempt)))
        self._up()
        return True

    def upload(self, key: str, source: Path | IO[bytes] | Iterable[bytes], *, part_size: int = PART_SIZE,
               concurrency: int = 4) -> None:
        """Upload a large object from a file, a binary file object or an iterable of
        byte strings: a multipart upload when larger than `part_size`, visible only once
        complete (aborted on failure). Overwrites: for keys only this writer uses
        (unique names). Raises BucketWriteFailed."""
        self._check_key(key)
        self._not_down("upload", key, BucketWriteFailed)
        try:
            obstore.put(self.store, key, source, chunk_size=part_size, max_concurrency=concurrency)  # type: ignore[arg-type]
        except Exception as exc:
            raise self._failed("upload", key, exc, BucketWriteFailed) from None
        self._up()

    def delete(self, key: str) -> None:
        """Remove the object (no error when it is absent). Raises BucketWriteFailed."""
        self._check_key(key)
        self._not_down("delete", key, BucketWriteFailed)
        try:
            obstore.delete(self.store, key)
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise self._failed("delete", key, exc, BucketWriteFailed) from None
        self._up()

    # --- reads -----------------------------------------------------------------------------

    def get(self, key: str, offset: int = 0, length: int | None = None) -> Read | None:
        """Bytes [offset, offset + length) of the object (to its end when `length` is
        None; fewer at its end; none when `offset` is at or past the end), with the
        object's size; None when it is absent. One GET. Raises BucketUnavailable."""
        self._check_key(key)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("negative offset or length")
        if length == 0:
            info = self.head(key)
            return None if info is None else Read(b"", info.size)
        self._not_down("get", key, BucketUnavailable)
        rng: object = {"offset": offset} if length is None else (offset, offset + length)
        try:
            result = obstore.get(self.store, key, options={"range": rng})  # type: ignore[arg-type]
            data = bytes(result.bytes())
            size = int(result.meta["size"])
        except FileNotFoundError:
            self._up()
            return None
        except Exception as exc:
            if self._status(exc) == 416:  # the range starts at or past the end
                info = self.head(key)
                return None if info is None else Read(b"", info.size)
            raise self._failed("get", key, exc, BucketUnavailable) from None
        self._up()
        return Read(data, size)

    def head(self, key: str) -> ObjectInfo | None:
        """The object's size and time, or None when absent. Raises BucketUnavailable."""
        self._check_key(key)
        self._not_down("head", key, BucketUnavailable)
        try:
            meta = obstore.head(self.store, key)
        except FileNotFoundError:
            self._up()
            return None
        except Exception as exc:
            raise self._failed("head", key, exc, BucketUnavailable) from None
        self._up()
        return _info(meta)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under `prefix` (a key prefix ending at a '/' boundary), paged
        (LIST_PAGE keys per request), in no promised order. Raises BucketUnavailable."""
        if prefix:
            self._check_key(prefix.rstrip("/"))
        self._not_down("list", prefix, BucketUnavailable)
        try:
            for page in obstore.list(self.store, prefix.rstrip("/") or None, chunk_size=LIST_PAGE):
                for meta in page:
                    yield _info(meta)
        except MirrorError:
            raise
        except Exception as exc:
            raise self._failed("list", prefix, exc, BucketUnavailable) from None
        self._up()

    # --- errors ----------------------------------------------------------------------------

    def _settle_conflict(self, key: str, exc: Exception) -> bool:
        for attempt in range(3):
            try:
                if self.head(key) is not None:
                    return False
            except BucketUnavailable:
                break
            time.sleep(0.2 * (attempt + 1))
        raise self._failed("put", key, exc, BucketWriteFailed)

    def reachable(self) -> bool:
        """False while a recent call found the bucket unreachable (COOLDOWN), else True;
        no request."""
        return time.monotonic() >= self._down_until

    def _not_down(self, op: str, key: str, kind: type[MirrorError]) -> None:
        """Fail at once while a recent call found the bucket unreachable (COOLDOWN)."""
        with self._lock:
            if time.monotonic() < self._down_until:
                raise kind(f"{self._where(op, key)}: {self._down_error} (not retried for {self.cooldown:g} s)")

    def _up(self) -> None:
        if self._down_until:
            with self._lock:
                if self._down_until:
                    self._down_until = 0.0
                    log.info("object storage %s answers again", self.url)

    def _failed(self, op: str, key: str, exc: Exception, kind: type[MirrorError]) -> MirrorError:
        reason = self._reason(exc)
        with self._lock:
            if not self._down_until:
                log.warning("object storage %s: %s failed: %s", self.url, op, reason)
            self._down_until = time.monotonic() + self.cooldown
            self._down_error = reason
        return kind(f"{self._where(op, key)}: {reason}")

    def _where(self, op: str, key: str) -> str:
        return f"object storage {op} {self.url}/{key}" if key else f"object storage {op} {self.url}"

    def _reason(self, exc: Exception) -> str:
        """A short cause from obstore's message: the HTTP status and S3 error code, a
        timeout or a connection failure, and the retries made. Never the raw message (it
        may quote a server's answer), and scrubbed of every credential value."""
        text = str(exc)
        m = _STATUS.search(text)
        if m:
            reason = f"HTTP {m.group(1)}" + (f" {m.group(2)}" if m.group(2) else "")
            code = _S3CODE.search(text)
            if code:
                reason += f" ({code.group(1)})"
        elif kind := _HTTP_KIND.search(text):
            reason = {"Timeout": "timed out", "Connect": "cannot connect"}.get(
                kind.group(1), f"connection failed ({kind.group(1).lower()})")
        elif type(exc).__name__ in ("PermissionDeniedError", "UnauthenticatedError"):
            reason = "access denied (check the credentials)"
        else:  # obstore's first line: what failed, without the server's answer
            reason = text.split("\n", 1)[0][:160] or type(exc).__name__
        retries = _RETRIES.search(text)
        if retries:
            reason += f", after {retries.group(1)} retries"
        return _scrub(reason, self._secrets)

    @staticmethod
    def _status(exc: Exception) -> int | None:
        m = _STATUS.search(str(exc))
        return int(m.group(1)) if m else None

    @staticmethod
    def _check_key(key: str) -> None:
        if not _KEY.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
            raise ValueError(f"not an object key: {key[:100]!r}")


def _info(meta: object) -> ObjectInfo:
    m = meta  # obstore's ObjectMeta, a dict
    return ObjectInfo(str(m["path"]), int(m["size"]), m["last_modified"].timestamp(), m.get("e_tag"))  # type: ignore[index, attr-defined]


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for s in secrets:
        text = text.replace(s, "***")
    return text
