"""Schema of migration 10: where a follower is in its authority's channels (issue 11,
one release control for a LAN site; the SQL lives in catalog/channel_copy.py).

    channel_follow(authority, authority_key, event, release_serial, applied_at,
                   error, error_at)                          PK(authority)
        authority       the authority's base URL (`[channels] authority`)
        authority_key   its public key when the cursor was last moved; another key at
                        the same URL is another node, whose ids mean nothing here: the
                        cursors start over
        event           the authority's newest alias_events id copied here
        release_serial  the authority's changelog serial its releases were read up to
        applied_at      when a copy last changed something here
        error           why the last pull failed ('' after a good one); error_at when
"""

MIGRATION_10 = """
CREATE TABLE channel_follow(
    authority TEXT PRIMARY KEY,
    authority_key TEXT NOT NULL DEFAULT '',
    event INTEGER NOT NULL DEFAULT 0,
    release_serial INTEGER NOT NULL DEFAULT 0,
    applied_at REAL,
    error TEXT NOT NULL DEFAULT '',
    error_at REAL
);
"""
