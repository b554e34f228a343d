"""Schema of migration 8: scans of model files that can run code or crash a parser, and
their quarantine (issue 10 item 7; the SQL lives in catalog/quarantine.py).

    scans(identity PK, verdict, findings, scanner, scanned_at,
          repo, commit_sha, path,
          released_at, released_by, release_reason)
        identity  the content scanned (sha256:... or sha1:...): a verdict follows the
                  bytes, whatever repo or path they are served under
        verdict   'clean' | 'unsafe' | 'error' (could not be scanned; refused too)
        findings  JSON list of what the scanner reported (e.g. "posix.system", or a
                  safetensors header fault)
        repo, commit_sha, path   where the content was first scanned (for people:
                  `mirror quarantine list` names a file, not only a hash)
        a file is quarantined while verdict <> 'clean' and released_at IS NULL
"""

MIGRATION_8 = """
CREATE TABLE scans(
    identity TEXT PRIMARY KEY,
    verdict TEXT NOT NULL CHECK(verdict IN ('clean', 'unsafe', 'error')),
    findings TEXT NOT NULL DEFAULT '[]',
    scanner TEXT NOT NULL,
    scanned_at REAL NOT NULL,
    repo TEXT NOT NULL DEFAULT '',
    commit_sha TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL DEFAULT '',
    released_at REAL,
    released_by TEXT,
    release_reason TEXT
);
"""
