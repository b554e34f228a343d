"""Schema of migration 3: pins and sync bookkeeping (owned by the sync/admin work)."""

MIGRATION_3 = """
CREATE TABLE pins(
    repo INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    commit_sha TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    PRIMARY KEY(repo, commit_sha)
);
"""
