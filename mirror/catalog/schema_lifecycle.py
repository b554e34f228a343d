"""Schema of migration 4: lifecycle tables (owned by the lifecycle work).

    audit(id, at, action, detail)                        one row per lifecycle decision
    packs(id, name, size, created_at)                    archive pack files (store/packs.py)
    archived(chunk_id PK, pack -> packs, offset, stored_len)
                                                         where an archived chunk lives; a
                                                         chunk with a row here may also
                                                         still have a hot file (a crash
                                                         between flip and delete)
    revision_state(repo, commit_sha, state, hits_at, changed_at)
                                                         revisions the archive moved out;
                                                         hits_at = access hits at that time
"""

MIGRATION_4 = """
CREATE TABLE audit(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE packs(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE archived(
    chunk_id TEXT PRIMARY KEY,
    pack INTEGER NOT NULL REFERENCES packs(id),
    offset INTEGER NOT NULL,
    stored_len INTEGER NOT NULL
);
CREATE INDEX archived_by_pack ON archived(pack);
CREATE TABLE revision_state(
    repo INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    commit_sha TEXT NOT NULL,
    state TEXT NOT NULL CHECK(state IN ('archived')),
    hits_at INTEGER NOT NULL DEFAULT 0,
    changed_at REAL NOT NULL,
    PRIMARY KEY(repo, commit_sha)
);
"""
