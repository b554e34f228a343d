"""`mirror import`: verify a bundle completely, then publish it (format in bundle.py).

Phase 1 reads the file once: each chunk frame is decoded strictly, checked against its
id (blake3) and staged as a durable temp file; the trailer's signature must verify over
the hash of everything before it and come from a trusted key. Phase 2 rebuilds every
file content from staged and already-stored chunks and checks it against its upstream
identity (sha256 or git blob sha1). Only then is everything committed through
`Ingestor.adopt` (chunks published, their rows, the manifests re-signed by this node,
which has just verified the bytes itself), and finally repo info, listings and refs. Any refusal discards the temps: nothing from a
refused bundle becomes visible.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mirror import keys
from mirror.admin.bundle import CHUNK, HEADER, SIGNING_CONTEXT, TRAILER, BundleReader, parse_header
from mirror.errors import BadSignature, IntegrityError, UpstreamError
from mirror.ingest import identity_hasher
from mirror.manifest import IDENTITY_RE, ChunkRef, Manifest
from mirror.model import REPO_TYPES, FileEntry, RepoKey
from mirror.catalog.meta import MetaCatalog
from mirror.catalog.repos import RepoCatalog
from mirror.ingest import Ingestor
from mirror.resolve.metadata import parse_entry
from mirror.store.chunkstore import ChunkStore, Staged, chunk_id_of
from mirror.store.codec import Codec

_HEX64 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_SHA1 = re.compile(r"[0-9a-f]{40}", re.ASCII)


@dataclass(frozen=True, slots=True)
class ImportReport:
    signer: str
    revisions: int
    manifests: int
    chunks_new: int
    chunks_carried: int


class BundleImporter:
    def __init__(self, store: ChunkStore, ingestor: Ingestor, repos: RepoCatalog, keys: MetaCatalog) -> None:
        """`keys` answers which signers are trusted."""
        self.store = store
        self.ingestor = ingestor
        self.repos = repos
        self.keys = keys

    async def run(self, path: Path, progress: Callable[[int, int], None] | None = None) -> ImportReport:
        """`progress(done, total)` follows the bundle's bytes read and verified (called
        from a worker thread)."""
        loop = asyncio.get_running_loop()
        staged: dict[str, Staged] = {}
        try:
            header, signer = await loop.run_in_executor(None, _read_and_stage, self.store, path, staged, progress)
            trusted = await self.keys.trusted()
            if signer not in trusted:
                raise BadSignature(f"bundle is signed by {signer[:16]}..., which is not a trusted key (mirror keys trust)")
            manifests = _manifests(header)
            missing = [c.chunk_id for m in manifests for c in m.chunks if c.chunk_id not in staged and not self.store.has(c.chunk_id)]
            if missing:
                raise IntegrityError(f"bundle lacks {len(set(missing))} chunks this store does not have "
                                     "(import the bundle it was made --since first)")
            for man in manifests:
                await loop.run_in_executor(None, _check_file, self.store, man, staged)
            repos = _repos(header, {m.identity for m in manifests})
        except BaseException:
            self.store.discard(list(staged.values()))
            raise
        _stored, results = await self.ingestor.adopt(list(staged.values()), manifests)
        n_rev = 0
        for key, private, gated, refs, commits in repos:
            rid = await self.repos.set_repo_info(key, private=private, gated=gated, info=None)
            for sha, info, entries in commits:
                await self.repos.set_commit_info(rid, sha, info)
                await self.repos.put_listing(rid, sha, entries, info)
                n_rev += 1
            for name, sha in refs.items():
                await self.repos.set_ref(rid, name, sha)
        return ImportReport(signer, n_rev, len(manifests), sum(1 for r in results if r.new), len(results))


def _read_and_stage(store: ChunkStore, path: Path, staged: dict[str, Staged],
                    progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, Any], str]:
    codec = Codec()
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        reader = BundleReader(fh)
        first = reader.next()
        if first.kind != HEADER:
            raise BadSignature("bundle does not start with a header")
        header = parse_header(first.payload)
        expected = [c for c in header["chunks"] if isinstance(c, str) and _HEX64.fullmatch(c)]
        if len(expected) != len(header["chunks"]) or len(set(expected)) != len(expected):
            raise BadSignature("bundle header has a malformed chunk list")
        lengths = {cid: int(n) for m in header["manifests"] for cid, n in m.get("chunks", [])}
        pos = 0
        while True:
            rec = reader.next()
            if rec.kind == TRAILER:
                break
            if rec.kind != CHUNK or pos >= len(expected):
                raise BadSignature("bundle has an unexpected record")
            cid = rec.payload[:32].hex()
            if cid != expected[pos]:
                raise BadSignature("bundle chunk records are out of order")
            pos += 1
            frame = rec.payload[32:]
            try:
                raw = codec.decode(frame, lengths.get(cid))
            except IntegrityError as exc:
                raise IntegrityError(f"bundle chunk {cid[:16]}: {exc.message}") from None
            if chunk_id_of(raw) != cid:
                raise IntegrityError(f"bundle chunk {cid[:16]} does not match its id (blake3)")
            staged[cid] = store.stage_verified(cid, len(raw), frame)
            if progress is not None:
                progress(min(fh.tell(), size), size)
        if pos != len(expected):
            raise BadSignature("bundle is missing chunk records its header lists")
        public, signature = rec.payload[:32], rec.payload[32:]
        keys.verify(public.hex(), signature, SIGNING_CONTEXT + reader.digest)
    if header.get("signer") != public.hex():
        raise BadSignature("bundle header names another signer than its signature")
    return header, public.hex()


def _manifests(header: dict[str, Any]) -> list[Manifest]:
    out = []
    try:
        for m in header["manifests"]:
            identity, size = str(m["identity"]), int(m["size"])
            chunks = tuple(ChunkRef(str(c), int(n)) for c, n in m["chunks"])
            if not IDENTITY_RE.fullmatch(identity) or any(not _HEX64.fullmatch(c.chunk_id) for c in chunks):
                raise ValueError(identity)
            if sum(c.length for c in chunks) != size:
                raise ValueError(identity)
            out.append(Manifest(identity, size, chunks))
    except (KeyError, TypeError, ValueError):
        raise BadSignature("bundle header has a malformed manifest") from None
    return out


def _check_file(store: ChunkStore, man: Manifest, staged: dict[str, Staged]) -> None:
    """Rebuild the file from chunks and check its upstream hash."""
    hasher = identity_hasher(man.identity, man.size)
    codec = Codec()
    for c in man.chunks:
        st = staged.get(c.chunk_id)
        if st is not None and st.tmp is not None:
            raw = codec.decode(st.tmp.read_bytes(), c.length)
        else:
            raw = store.read(c.chunk_id, c.length)
        if len(raw) != c.length:
            raise IntegrityError(f"bundle: chunk {c.chunk_id[:16]} has the wrong length")
        hasher.update(raw)
    if hasher.hexdigest() != man.identity.split(":", 1)[1]:
        raise IntegrityError(f"bundle: file {man.identity} rebuilt from its chunks does not match its hash")


Commits = list[tuple[str, dict[str, Any], list[FileEntry]]]


def _repos(header: dict[str, Any], identities: set[str]) -> list[tuple[RepoKey, bool, str, dict[str, str], Commits]]:
    out = []
    try:
        for r in header["repos"]:
            if r["repo_type"] not in REPO_TYPES:
                raise ValueError("repo type")
            key = RepoKey(r["repo_type"], str(r["repo_id"]))
            commits: Commits = []
            for c in r["commits"]:
                sha = str(c["sha"])
                if not _SHA1.fullmatch(sha) or not isinstance(c["info"], dict) or c["info"].get("sha") != sha:
                    raise ValueError("commit")
                entries = [parse_entry(e) for e in c["files"]]
                if any(e.kind == "file" and e.identity not in identities for e in entries):
                    raise IntegrityError(f"bundle: {key}@{sha[:12]} names a file the bundle does not carry")
                commits.append((sha, c["info"], entries))
            refs = {str(n): str(s) for n, s in r["refs"].items()}
            if any(not _SHA1.fullmatch(s) for s in refs.values()):
                raise ValueError("ref")
            out.append((key, bool(r["private"]), str(r["gated"] or ""), refs, commits))
    except (KeyError, TypeError, ValueError, AttributeError, UpstreamError) as exc:
        raise BadSignature(f"bundle header has malformed repo metadata ({exc})") from None
    return out
