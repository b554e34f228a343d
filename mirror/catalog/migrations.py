"""Numbered schema migrations. `MIGRATIONS[n]` takes the schema from version n to n + 1.

Append only: a released migration is never edited. The current version is SQLite's
`user_version`; `db.Database.open` applies the missing ones in one transaction each.

Shape after migration 1 (identities are 'sha256:<hex>' or 'sha1:<hex>'):

    repos(id, repo_type, repo_id, private, gated, info_json, info_at)
    refs(repo, name, commit_sha, checked_at)                 branch/tag -> commit
    commits(repo, sha, info_json, listed_at, created_at)     one listed commit
    files(repo, commit_sha, path, kind, oid, size, lfs_sha256, lfs_pointer)
    manifests(identity, size, chunk_count, body, signer, signature, created_at)
    manifest_chunks(identity, seq, chunk_id, offset, length)
    chunks(id, raw_len, stored_len, codec, created_at)
    access(repo, commit_sha, last_access, hits)              batched by resolve/
    counters(name, value)                                    bytes fetched/served...
    changelog(serial, at, kind, key)                         rising serial for peers/sync
    trusted_keys(public_key, label, added_at)

Migration 2 adds:

    api_cache(key, repo, body, link_next, fetched_at)        last upstream answer of a
                                                             pass-through API call (refs,
                                                             commits), served when stale
"""

from __future__ import annotations

from mirror.catalog.schema_lifecycle import MIGRATION_4
from mirror.catalog.schema_audit import MIGRATION_7
from mirror.catalog.schema_channels import MIGRATION_9
from mirror.catalog.schema_follow import MIGRATION_10
from mirror.catalog.schema_auth import MIGRATION_6
from mirror.catalog.schema_peers import MIGRATION_5
from mirror.catalog.schema_quarantine import MIGRATION_8
from mirror.catalog.schema_sync import MIGRATION_3

MIGRATIONS: list[str] = [
    # 0 -> 1: the base catalog.
    """
    CREATE TABLE repos(
        id INTEGER PRIMARY KEY,
        repo_type TEXT NOT NULL,
        repo_id TEXT NOT NULL,
        private INTEGER NOT NULL DEFAULT 0,
        gated TEXT NOT NULL DEFAULT '',
        info_json TEXT,
        info_at REAL,
        UNIQUE(repo_type, repo_id)
    );
    CREATE TABLE refs(
        repo INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        commit_sha TEXT NOT NULL,
        checked_at REAL NOT NULL,
        PRIMARY KEY(repo, name)
    );
    CREATE TABLE commits(
        repo INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
        sha TEXT NOT NULL,
        info_json TEXT,
        listed_at REAL,
        created_at REAL NOT NULL,
        PRIMARY KEY(repo, sha)
    );
    CREATE TABLE files(
        repo INTEGER NOT NULL,
        commit_sha TEXT NOT NULL,
        path TEXT NOT NULL,
        kind TEXT NOT NULL CHECK(kind IN ('file', 'directory')),
        oid TEXT NOT NULL,
        size INTEGER NOT NULL DEFAULT 0,
        lfs_sha256 TEXT,
        lfs_pointer INTEGER,
        PRIMARY KEY(repo, commit_sha, path),
        FOREIGN KEY(repo, commit_sha) REFERENCES commits(repo, sha) ON DELETE CASCADE
    );
    CREATE TABLE chunks(
        id TEXT PRIMARY KEY,
        raw_len INTEGER NOT NULL,
        stored_len INTEGER NOT NULL,
        codec INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE manifests(
        identity TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        chunk_count INTEGER NOT NULL,
        body BLOB NOT NULL,
        signer TEXT NOT NULL,
        signature BLOB NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE manifest_chunks(
        identity TEXT NOT NULL REFERENCES manifests(identity) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        chunk_id TEXT NOT NULL,
        offset INTEGER NOT NULL,
        length INTEGER NOT NULL,
        PRIMARY KEY(identity, seq)
    );
    CREATE INDEX manifest_chunks_by_chunk ON manifest_chunks(chunk_id);
    CREATE TABLE access(
        repo INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
        commit_sha TEXT NOT NULL,
        last_access REAL NOT NULL,
        hits INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY(repo, commit_sha)
    );
    CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE changelog(
        serial INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL
    );
    CREATE TABLE trusted_keys(public_key TEXT PRIMARY KEY, label TEXT NOT NULL DEFAULT '', added_at REAL NOT NULL);
    """,
    # 1 -> 2: last known answers of pass-through API calls.
    """
    CREATE TABLE api_cache(
        key TEXT PRIMARY KEY,
        repo INTEGER REFERENCES repos(id) ON DELETE CASCADE,
        body TEXT NOT NULL,
        link_next TEXT,
        fetched_at REAL NOT NULL
    );
    """,
    # 2 -> 3: pins and sync bookkeeping (schema_sync.py).
    MIGRATION_3,
    # 3 -> 4: lifecycle: archive packs, chunk locations, audit (schema_lifecycle.py).
    MIGRATION_4,
    # 4 -> 5: revoked keys and replication serials (schema_peers.py).
    MIGRATION_5,
    # 5 -> 6: mirror tokens, grants, local-only namespaces (schema_auth.py).
    MIGRATION_6,
    # 6 -> 7: the audit log (schema_audit.py).
    MIGRATION_7,
    # 7 -> 8: scans and quarantine (schema_quarantine.py).
    MIGRATION_8,
    # 8 -> 9: releases, aliases, per-version metrics, webhook outbox (schema_channels.py).
    MIGRATION_9,
    # 9 -> 10: a follower's place in its authority's channels (schema_follow.py).
    MIGRATION_10,
]
