"""The fake Hub's data model: repos, commits, refs and file blobs, all in memory.

Invariants:
- A commit is immutable once made; its file map is the parent's map updated by the commit's changes.
- A ref is a full git ref name (`refs/heads/main`, `refs/tags/v1`, `refs/pr/3`) mapping to a commit sha.
- A blob is deduplicated by sha256 and is either bytes or a `FileSource` read on demand, so a
  1 GiB benchmark file is hashed once and never held in memory.
- Whether a path is LFS is decided at commit time and travels with the entry to later commits.
Every public method takes `self.lock`, so the test thread may mutate while the server thread reads.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

MiB = 1 << 20
LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".parquet")
HEX40 = re.compile(r"[0-9a-f]{40}")
SHORT_HEX = re.compile(r"[0-9a-f]{7,39}")
BASE_DATE = datetime(2024, 1, 1, tzinfo=UTC)


class HubError(Exception):
    """A Hub-style error: HTTP status, `X-Error-Code` (or None) and message, plus extra headers."""

    def __init__(self, status: int, code: str | None, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})


def hub_date(dt: datetime) -> str:
    """`2024-01-01T00:00:00.000Z`: the only form huggingface_hub's parse_datetime accepts."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FileSource:
    """File content read on demand: `size` plus `read(offset, length) -> bytes`."""

    def __init__(self, size: int, read: Callable[[int, int], bytes]):
        self.size, self._read = size, read

    def read(self, offset: int, length: int) -> bytes:
        return self._read(offset, length)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> FileSource:
        def read(offset: int, length: int) -> bytes:
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read(length)

        return cls(os.path.getsize(path), read)

    @classmethod
    def random(cls, size: int, seed: int = 0) -> FileSource:
        """Deterministic pseudo-random bytes; every 1 MiB block differs (no accidental dedup)."""
        import numpy as np

        base = np.frombuffer(np.random.default_rng(seed).bytes(MiB), dtype=np.uint64)

        def block(i: int) -> bytes:
            key = np.uint64((i * 0x9E3779B97F4A7C15 + seed * 0xBF58476D1CE4E5B9 + 1) % (1 << 64))
            return (base ^ key).tobytes()

        def read(offset: int, length: int) -> bytes:
            end, out = min(offset + length, size), bytearray()
            while offset < end:
                i, skip = divmod(offset, MiB)
                piece = block(i)[skip : skip + end - offset]
                out += piece
                offset += len(piece)
            return bytes(out)

        return cls(size, read)


class Blob:
    """File bytes plus their identities; `sha256` is computed once at construction."""

    def __init__(self, data: bytes | FileSource):
        self.data, self.size = data, (len(data) if isinstance(data, bytes) else data.size)
        self.paths: set[str] = set()
        self._git_sha1: str | None = None
        h = hashlib.sha256()
        for piece in self.chunks(0, self.size, 8 * MiB):
            h.update(piece)
        self.sha256 = h.hexdigest()

    def read(self, offset: int, length: int) -> bytes:
        if isinstance(self.data, bytes):
            return self.data[offset : offset + length]
        return self.data.read(offset, length)

    def chunks(self, start: int, end: int, size: int = MiB) -> Iterator[bytes]:
        while start < end:
            piece = self.read(start, min(size, end - start))
            if not piece:
                raise OSError("file source returned fewer bytes than its size")
            yield piece
            start += len(piece)

    @property
    def git_sha1(self) -> str:
        if self._git_sha1 is None:
            h = hashlib.sha1(b"blob %d\0" % self.size)
            for piece in self.chunks(0, self.size, 8 * MiB):
                h.update(piece)
            self._git_sha1 = h.hexdigest()
        return self._git_sha1


@dataclass(frozen=True, slots=True)
class Entry:
    """A file at a commit: its blob, LFS-ness and git oid (of the pointer file for LFS)."""

    blob: Blob
    lfs: bool
    oid: str
    pointer_size: int = 0

    @property
    def etag(self) -> str:
        return self.blob.sha256 if self.lfs else self.oid

    @property
    def xet_hash(self) -> str:
        return hashlib.sha256(b"xet:" + self.blob.sha256.encode()).hexdigest()


@dataclass(slots=True)
class Commit:
    sha: str
    parent: Commit | None
    title: str
    message: str
    author: str
    date: datetime
    files: dict[str, Entry]
    dirs: dict[str, str] = field(default_factory=dict)  # dir path ("" = root) -> tree oid

    def __post_init__(self) -> None:
        # A directory's oid hashes the (relative path, oid) of every file below it, so it changes
        # exactly when something below it changes.
        hashers = {"": hashlib.sha1()}
        for path in sorted(self.files):
            parts = path.split("/")
            for i in range(len(parts)):
                d = "/".join(parts[:i])
                h = hashers.setdefault(d, hashlib.sha1())
                h.update(f"{path[len(d) + 1 if d else 0:]} {self.files[path].oid}\n".encode())
        self.dirs = {d: h.hexdigest() for d, h in hashers.items()}

    def oid_at(self, path: str) -> str | None:
        entry = self.files.get(path)
        return entry.oid if entry else self.dirs.get(path)

    def history(self) -> Iterator[Commit]:
        c: Commit | None = self
        while c is not None:
            yield c
            c = c.parent

    def last_commit_for(self, path: str) -> Commit:
        """The oldest ancestor reachable without `path` changing: the commit that last touched it."""
        c, oid = self, self.oid_at(path)
        while c.parent is not None and c.parent.oid_at(path) == oid:
            c = c.parent
        return c


@dataclass(slots=True)
class Repo:
    repo_type: str
    repo_id: str
    private: bool = False
    gated: bool | str = False
    readers: set[str] = field(default_factory=set)
    tags: list[str] = field(default_factory=list)
    pipeline_tag: str | None = None
    library_name: str | None = None
    card_data: dict[str, object] = field(default_factory=dict)
    created_at: datetime = BASE_DATE
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # full ref name -> commit sha


def _full_ref(ref: str) -> str:
    return ref if ref.startswith("refs/") else "refs/heads/" + ref


class HubState:
    """The in-memory Hub: repos, tokens and the blob index. Subclassed by `FakeHub`."""

    def __init__(self, *, lfs_threshold: int = 10 * MiB):
        self.lock = threading.RLock()
        self.lfs_threshold = lfs_threshold
        self.tokens: dict[str, str] = {}  # token -> user name
        self._repos: dict[tuple[str, str], Repo] = {}
        self._blobs: dict[str, Blob] = {}  # sha256 -> blob
        self._counter = 0

    # -- mutation (safe from any thread) --------------------------------------------------

    def create_repo(self, repo_id: str, *, repo_type: str = "model", private: bool = False,
                    gated: bool | str = False, readers: tuple[str, ...] | set[str] = (),
                    tags: list[str] | None = None, pipeline_tag: str | None = None,
                    library_name: str | None = None, card_data: dict[str, object] | None = None) -> Repo:
        """Create (or update the flags of) a repo. `readers` are tokens allowed past private/gated."""
        with self.lock:
            repo = self._repos.get((repo_type, repo_id))
            if repo is None:
                self._counter += 1
                repo = Repo(repo_type, repo_id, created_at=BASE_DATE + timedelta(minutes=self._counter))
                self._repos[(repo_type, repo_id)] = repo
            repo.private, repo.gated = private, gated
            repo.readers |= set(readers)
            repo.tags = list(tags or [])
            repo.pipeline_tag, repo.library_name = pipeline_tag, library_name
            repo.card_data = dict(card_data or {})
            return repo

    def add_token(self, token: str, user: str = "fakeuser") -> None:
        with self.lock:
            self.tokens[token] = user

    def grant(self, repo_id: str, token: str, *, repo_type: str = "model") -> None:
        with self.lock:
            self._repo(repo_type, repo_id).readers.add(token)

    def commit(self, repo_id: str, files: Mapping[str, bytes | FileSource | None], *,
               repo_type: str = "model", branch: str = "main", message: str = "Update files",
               author: str = "fakeuser", date: datetime | None = None) -> str:
        """Commit `files` (None deletes) on `branch`, creating the repo if needed; returns the sha.
        `date` (default: a fixed day in 2024) is the commit's date, as `lastModified` shows it.

        A branch that does not exist yet starts from `main`'s head (an orphan if there is none).
        Hashing happens outside the lock, so committing a big FileSource does not stall the server.
        """
        blobs = {p: None if d is None else Blob(d) for p, d in files.items()}
        for path, blob in blobs.items():
            if blob is not None and not self._is_lfs(path, blob):
                blob.git_sha1  # noqa: B018 - hash now, outside the lock
        with self.lock:
            repo = self._repos.get((repo_type, repo_id)) or self.create_repo(repo_id, repo_type=repo_type)
            head = repo.refs.get(_full_ref(branch)) or repo.refs.get("refs/heads/main")
            parent = repo.commits[head] if head else None
            tree = dict(parent.files) if parent else {}
            for path, blob in blobs.items():
                if blob is None:
                    tree.pop(path, None)
                    continue
                blob = self._blobs.setdefault(blob.sha256, blob)
                blob.paths.add(path)
                tree[path] = self._entry(path, blob)
            self._counter += 1
            listing = "".join(f"{p}\0{e.oid}\n" for p, e in sorted(tree.items()))
            seed = f"{parent.sha if parent else ''}\n{branch}\n{message}\n{self._counter}\n{listing}"
            sha = hashlib.sha1(seed.encode()).hexdigest()
            date = date or BASE_DATE + timedelta(days=1, minutes=self._counter)
            title, _, body = message.partition("\n")
            repo.commits[sha] = Commit(sha, parent, title, body.strip(), author, date, tree)
            repo.refs[_full_ref(branch)] = sha
            return sha

    def _is_lfs(self, path: str, blob: Blob) -> bool:
        return path.endswith(LFS_SUFFIXES) or blob.size >= self.lfs_threshold

    def _entry(self, path: str, blob: Blob) -> Entry:
        if not self._is_lfs(path, blob):
            return Entry(blob, False, blob.git_sha1)
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{blob.sha256}\nsize {blob.size}\n"
        return Entry(blob, True, git_blob_sha1(pointer.encode()), len(pointer))

    def set_ref(self, repo_id: str, ref: str, sha: str, *, repo_type: str = "model") -> None:
        """Point `ref` (a branch name or a full `refs/...` name) at `sha`, creating or moving it."""
        with self.lock:
            repo = self._repo(repo_type, repo_id)
            repo.refs[_full_ref(ref)] = self.resolve(repo, sha).sha

    def create_branch(self, repo_id: str, branch: str, revision: str = "main", *, repo_type: str = "model") -> None:
        self.set_ref(repo_id, "refs/heads/" + branch, revision, repo_type=repo_type)

    def tag(self, repo_id: str, tag: str, revision: str = "main", *, repo_type: str = "model") -> None:
        self.set_ref(repo_id, "refs/tags/" + tag, revision, repo_type=repo_type)

    def create_pr_ref(self, repo_id: str, n: int, revision: str, *, repo_type: str = "model") -> None:
        self.set_ref(repo_id, f"refs/pr/{n}", revision, repo_type=repo_type)

    # -- reading ---------------------------------------------------------------------------

    def head(self, repo_id: str, ref: str = "main", *, repo_type: str = "model") -> str:
        with self.lock:
            return self.resolve(self._repo(repo_type, repo_id), ref).sha

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise KeyError(f"no such {repo_type} repo: {repo_id}")
        return repo

    def blob_by_sha256(self, sha256: str) -> Blob | None:
        return self._blobs.get(sha256)

    def resolve(self, repo: Repo, rev: str) -> Commit:
        """A branch, tag, full ref, full sha or unique short sha -> commit, else RevisionNotFound."""
        for ref in (rev, "refs/heads/" + rev, "refs/tags/" + rev):
            if ref.startswith("refs/") and ref in repo.refs:
                return repo.commits[repo.refs[ref]]
        if HEX40.fullmatch(rev) and rev in repo.commits:
            return repo.commits[rev]
        if SHORT_HEX.fullmatch(rev):
            found = [c for s, c in repo.commits.items() if s.startswith(rev)]
            if len(found) == 1:
                return found[0]
        raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")

    def lookup(self, repo_type: str, repo_id: str, token: str | None, rev: str | None = None,
               *, content: bool = False) -> tuple[Repo, Commit | None]:
        """Access check, then revision. Private and unknown repos are indistinguishable.

        Gated repos expose metadata (info, tree, refs) to anyone, like the Hub; `content=True`
        (file bytes) requires a reader token.
        """
        with self.lock:
            repo = self._repos.get((repo_type, repo_id))
            if repo is None or (repo.private and token not in repo.readers):
                raise HubError(401 if token is None else 404, "RepoNotFound",
                               "Repository not found. Make sure the repo id is right and you are authenticated.")
            if content and repo.gated and token not in repo.readers:
                raise HubError(401 if token is None else 403, "GatedRepo",
                               f"Access to {repo_type} {repo_id} is restricted. You must have access to it "
                               "and be authenticated to access it.")
            return repo, (self.resolve(repo, rev) if rev is not None else None)
