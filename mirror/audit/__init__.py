"""The audit log: who did what, append-only and hash-chained (mirror/audit/log.py)."""
