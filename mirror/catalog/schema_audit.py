"""Schema of migration 7: the audit log (append-only, hash-chained).

    audit_log(seq PK, at, actor, action, target, outcome, detail, prev, hash)
        seq       1, 2, 3... without gaps
        detail    canonical JSON (sorted keys, no spaces, ASCII)
        prev      the hash of record seq - 1 (64 zeros for the first)
        hash      sha256 of the record's canonical bytes, prev included (audit/chain.py)
    audit_checkpoints(seq PK, hash, at, signer, signature)
        the node key's signature over (seq, hash) of a record (audit/chain.py)

Triggers refuse UPDATE and DELETE on both tables, and an INSERT that does not extend the
chain (seq = last + 1, prev = the last hash) or a checkpoint naming no record of that
hash: a bug cannot fork or rewrite the log through the normal connection. An attacker
with the file can drop the triggers and edit it; `mirror audit verify` then finds the
break in the chain or a checkpoint that no longer matches.
"""

GENESIS = "0" * 64

MIGRATION_7 = f"""
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
CREATE TRIGGER audit_extends_chain BEFORE INSERT ON audit_log
WHEN NEW.seq IS NOT COALESCE((SELECT MAX(seq) FROM audit_log), 0) + 1
  OR NEW.prev IS NOT COALESCE((SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1), '{GENESIS}')
BEGIN SELECT RAISE(ABORT, 'an audit record must extend the chain'); END;
CREATE TRIGGER audit_checkpoint_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
CREATE TRIGGER audit_checkpoint_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
CREATE TRIGGER audit_checkpoint_names_record BEFORE INSERT ON audit_checkpoints
WHEN NOT EXISTS (SELECT 1 FROM audit_log WHERE seq = NEW.seq AND hash = NEW.hash)
BEGIN SELECT RAISE(ABORT, 'an audit checkpoint must name a record of the chain'); END;
"""
