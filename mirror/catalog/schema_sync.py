"""Schema of migration 3: pins, and indexes the sync planner and `mirror show` use.

    pins(repo, commit_sha, label, created_at)    revisions kept by lifecycle policy
    files_by_lfs  ON files(lfs_sha256)           "which revisions hold this content?"
    files_by_oid  ON files(oid)
"""

MIGRATION_3 = """
CREATE TABLE pins(
    repo INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    commit_sha TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    PRIMARY KEY(repo, commit_sha)
);
CREATE INDEX files_by_lfs ON files(lfs_sha256);
CREATE INDEX files_by_oid ON files(oid);
"""
