"""Schema of migration 7: the audit log (append-only, hash-chained).

    audit_log(seq PK, at, actor, action, target, outcome, detail, prev, hash)
        seq       1, 2, 3... without gaps
        detail    canonical JSON (sorted keys, no spaces)
        prev      the hash of record seq - 1 (64 zeros for the first)
        hash      sha256 of the record's canonical bytes, prev included
    audit_checkpoints(seq PK, hash, at, signer, signature)
        the node key's signature over (seq, hash) of a record, written at intervals

Triggers refuse UPDATE and DELETE on `audit_log`: the log only grows (an attacker with the
file can still edit it; `mirror audit verify` then finds the break in the chain or a
checkpoint that no longer matches).
"""

MIGRATION_7 = """
CREATE TABLE audit_log(
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_log_by_actor ON audit_log(actor, seq);
CREATE INDEX audit_log_by_time ON audit_log(at);
CREATE TABLE audit_checkpoints(
    seq INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    at REAL NOT NULL,
    signer TEXT NOT NULL,
    signature BLOB NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""
