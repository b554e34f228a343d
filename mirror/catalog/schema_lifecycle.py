"""Schema of migration 4: lifecycle tables (owned by the lifecycle work)."""

MIGRATION_4 = """
CREATE TABLE audit(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""
