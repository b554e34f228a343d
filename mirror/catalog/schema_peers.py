"""Schema of migration 5: peers.

    revoked_keys(public_key PK, revoked_at)       keys refused as peers and signers, even
                                                  when listed in [peers] trust
    replication(source PK, serial, updated_at)    `mirror sync --from URL`: the source's
                                                  changelog serial applied so far
    changelog kind 'listing' (key "<repo>:<sha>") is written from now on when a commit's
    listing is stored (no schema change: kinds are text)
"""

MIGRATION_5 = """
CREATE TABLE revoked_keys(public_key TEXT PRIMARY KEY, revoked_at REAL NOT NULL);
CREATE TABLE replication(source TEXT PRIMARY KEY, serial INTEGER NOT NULL, updated_at REAL NOT NULL);
"""
