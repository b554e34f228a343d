"""Schema of migration 8: scans of unsafe model files and their quarantine.

    scans(identity PK, verdict, findings, scanner, scanned_at, released_at, released_by)
        verdict   'clean' | 'unsafe' | 'error'
        findings  JSON list of what the scanner reported (e.g. "posix.system")
        a file is quarantined while verdict = 'unsafe' and released_at IS NULL
"""

MIGRATION_8 = """
CREATE TABLE scans(
    identity TEXT PRIMARY KEY,
    verdict TEXT NOT NULL CHECK(verdict IN ('clean', 'unsafe', 'error')),
    findings TEXT NOT NULL DEFAULT '[]',
    scanner TEXT NOT NULL,
    scanned_at REAL NOT NULL,
    released_at REAL,
    released_by TEXT
);
"""
