"""The audit log (issue 10 item 5). STUB: the interface every component calls; the
hash chain, checkpoints, reading and verification are built behind it.

`record(...)` never blocks and never fails the caller: records are buffered and written
in batches by `flush()` (the node's flush loop, and on close).
"""

from __future__ import annotations

from typing import Any

from mirror.clock import Clock


class AuditLog:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.pending: list[dict[str, Any]] = []

    def record(self, actor: str, action: str, target: str, outcome: str = "ok", **detail: Any) -> None:
        """One event: `actor` (Caller.actor: a token name, 'anonymous', 'peer:<key>',
        'cli:<user>'), `action` ('files.read', 'token.create', 'auth.denied'...),
        `target` (a repo, a token name, a path), `outcome` ('ok' | 'denied' | 'error'),
        `detail` (small JSON-able values; never a secret)."""
        self.pending.append({"at": self.clock.now(), "actor": actor, "action": action, "target": target,
                             "outcome": outcome, "detail": detail})

    async def flush(self) -> None:
        self.pending.clear()

    async def read(self, *, since: float | None = None, actor: str | None = None, action: str | None = None,
                   limit: int = 1000) -> list[dict[str, Any]]:
        """Stored records, oldest first, as JSON-able dicts (STUB: none stored yet)."""
        return []

    async def verify(self) -> dict[str, Any]:
        """Check the whole chain and its checkpoints (STUB)."""
        return {"ok": True, "records": 0}
