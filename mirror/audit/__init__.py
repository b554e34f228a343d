"""The audit log: who did what, append-only and hash-chained (log.py; the on-disk format
in chain.py, verification in verify.py, actor names of CLI and scheduled work in actor.py)."""
