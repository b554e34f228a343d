"""Schema of migration 6: mirror tokens and grants (access control, design.md §10).

    tokens(id PK, name UNIQUE, role, hash UNIQUE, grants, created_at, expires_at,
           revoked_at, last_used_at, totp_secret)
        id          the token's public id (shown in lists, audit); never the secret
        hash        sha256 of the whole token: the token itself is never stored
        grants      JSON list of repo globs a developer may read ("org/*", "org/model")
        totp_secret the TOTP seed, encrypted with a key derived from the node key
    grants(repo, grantee, created_at, created_by)
        repos (globs) for which the upstream service token is used on behalf of a
        grantee: "role:<role>" or "token:<name>" (`mirror grant REPO --to ...`)
    local_namespaces(namespace PK, created_at)
        namespaces marked local-only at run time (besides [auth] local_only)
"""

MIGRATION_6 = """
CREATE TABLE tokens(
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK(role IN ('admin', 'developer', 'auditor')),
    hash TEXT NOT NULL UNIQUE,
    grants TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL,
    last_used_at REAL,
    totp_secret BLOB
);
CREATE TABLE grants(
    repo TEXT NOT NULL,
    grantee TEXT NOT NULL,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY(repo, grantee)
);
CREATE TABLE local_namespaces(namespace TEXT PRIMARY KEY, created_at REAL NOT NULL);
"""
