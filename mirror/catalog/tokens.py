"""Catalog facts of access control: mirror tokens, service-token grants, local-only
namespaces (tables of migration 6, catalog/schema_auth.py). Tokens are stored as their
sha256 only; nothing here ever sees a token's secret part."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from mirror.catalog.db import Database


@dataclass(frozen=True, slots=True)
class TokenRow:
    id: str
    name: str
    role: str
    hash: str
    grants: tuple[str, ...]
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None
    totp_secret: bytes | None

    def public(self) -> dict[str, Any]:
        """What lists and JSON show: never the hash nor the TOTP seed."""
        return {"id": self.id, "name": self.name, "role": self.role, "grants": list(self.grants),
                "created_at": self.created_at, "expires_at": self.expires_at, "revoked_at": self.revoked_at,
                "last_used_at": self.last_used_at, "totp": self.totp_secret is not None}


def _row(r: Any) -> TokenRow:
    return TokenRow(r["id"], r["name"], r["role"], r["hash"], tuple(json.loads(r["grants"])), r["created_at"],
                    r["expires_at"], r["revoked_at"], r["last_used_at"], bytes(r["totp_secret"]) if r["totp_secret"] else None)


class TokenCatalog:
    def __init__(self, db: Database, now: Callable[[], float]) -> None:
        self.db = db
        self._now = now

    async def add(self, id: str, name: str, role: str, hash: str, grants: list[str], expires_at: float | None) -> None:
        async with self.db.transaction() as c:
            await c.execute(
                "INSERT INTO tokens(id, name, role, hash, grants, created_at, expires_at) VALUES (?,?,?,?,?,?,?)",
                (id, name, role, hash, json.dumps(grants), self._now(), expires_at),
            )

    async def by_id(self, id: str) -> TokenRow | None:
        row = await self.db.fetchone("SELECT * FROM tokens WHERE id = ?", (id,))
        return _row(row) if row else None

    async def by_name(self, name: str) -> TokenRow | None:
        row = await self.db.fetchone("SELECT * FROM tokens WHERE name = ?", (name,))
        return _row(row) if row else None

    async def all(self) -> list[TokenRow]:
        return [_row(r) for r in await self.db.fetchall("SELECT * FROM tokens ORDER BY created_at")]

    async def revoke(self, id: str) -> bool:
        async with self.db.transaction() as c:
            cur = await c.execute("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (self._now(), id))
            return cur.rowcount > 0

    async def set_role(self, id: str, role: str) -> None:
        async with self.db.transaction() as c:
            await c.execute("UPDATE tokens SET role = ? WHERE id = ?", (role, id))

    async def set_totp(self, id: str, sealed: bytes | None) -> None:
        async with self.db.transaction() as c:
            await c.execute("UPDATE tokens SET totp_secret = ? WHERE id = ?", (sealed, id))

    async def used(self, stamps: dict[str, float]) -> None:
        if not stamps:
            return
        async with self.db.transaction() as c:
            await c.executemany("UPDATE tokens SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?",
                                [(t, i) for i, t in stamps.items()])

    async def active_admins(self, now: float) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT id FROM tokens WHERE role = 'admin' AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)", (now,))
        return [r["id"] for r in rows]

    # --- service-token grants ----------------------------------------------------------

    async def grant(self, repo: str, grantee: str, by: str) -> bool:
        async with self.db.transaction() as c:
            cur = await c.execute(
                "INSERT INTO grants(repo, grantee, created_at, created_by) VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                (repo, grantee, self._now(), by))
            return cur.rowcount > 0

    async def ungrant(self, repo: str, grantee: str) -> bool:
        async with self.db.transaction() as c:
            cur = await c.execute("DELETE FROM grants WHERE repo = ? AND grantee = ?", (repo, grantee))
            return cur.rowcount > 0

    async def grants(self) -> list[tuple[str, str, float, str]]:
        rows = await self.db.fetchall("SELECT repo, grantee, created_at, created_by FROM grants ORDER BY repo, grantee")
        return [(r["repo"], r["grantee"], r["created_at"], r["created_by"]) for r in rows]

    # --- local-only namespaces ---------------------------------------------------------------

    async def set_local(self, namespace: str, local: bool) -> None:
        async with self.db.transaction() as c:
            if local:
                await c.execute("INSERT INTO local_namespaces(namespace, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                                (namespace, self._now()))
            else:
                await c.execute("DELETE FROM local_namespaces WHERE namespace = ?", (namespace,))

    async def local_namespaces(self) -> list[str]:
        return [r["namespace"] for r in await self.db.fetchall("SELECT namespace FROM local_namespaces ORDER BY namespace")]
