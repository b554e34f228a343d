"""Releases, aliases and history rows as JSON (the admin API and `--json` of the CLI say
the same thing) and as lines for people."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from mirror.catalog.channels import AliasEvent, AliasRow, Change, Release
from mirror.model import RepoKey


def iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds") if t is not None else None


def release_json(key: RepoKey, rel: Release, aliases: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "repo": key.repo_id, "repo_type": key.repo_type, "version": rel.name, "semver": rel.version,
        "commit": rel.commit, "author": rel.author, "created_at": iso(rel.created_at), "params": rel.params,
        "datasets": list(rel.datasets), "meta": rel.meta, "note": rel.note,
    }
    if aliases is not None:
        out["aliases"] = aliases
    return out


def alias_json(key: RepoKey, row: AliasRow) -> dict[str, Any]:
    out: dict[str, Any] = {
        "repo": key.repo_id, "repo_type": key.repo_type, "alias": row.name, "commit": row.commit,
        "release": row.release or None, "updated_at": iso(row.updated_at), "canary": None,
    }
    if row.canary is not None:
        out["canary"] = {
            "commit": row.canary, "release": row.canary_release or None, "weight": row.weight, "plan": row.plan,
            "started_at": iso(row.started_at), "next_at": iso(row.next_at), "failures": row.failures,
            "holding": row.holding or None, "salt": row.salt,
        }
    return out


def event_json(ev: AliasEvent) -> dict[str, Any]:
    return {
        "id": ev.id, "at": iso(ev.at), "time": ev.at, "actor": ev.actor, "action": ev.action, "from": ev.from_sha,
        "to": ev.to_sha, "canary": ev.canary, "weight": ev.weight, "reason": ev.reason, "detail": ev.detail,
    }


def change_json(key: RepoKey, change: Change | None, row: AliasRow | None) -> dict[str, Any]:
    """What a change command answers: whether anything changed, how, and the alias now."""
    return {"changed": change is not None, "action": change.action if change else None,
            "alias": alias_json(key, row) if row is not None else None}


def at_json(key: RepoKey, alias: str, when: float, ev: AliasEvent | None) -> dict[str, Any]:
    """What `alias at` answers: the state the alias was in at `when` (all None before it existed)."""
    return {"repo": key.repo_id, "alias": alias, "time": iso(when), "commit": ev.to_sha if ev else None,
            "canary": ev.canary if ev else None, "weight": ev.weight if ev else 0.0,
            "since": iso(ev.at) if ev else None, "event": event_json(ev) if ev else None}


def alias_line(row: AliasRow) -> str:
    text = f"{row.name} -> {row.commit[:12]}" + (f" ({row.release})" if row.release else "")
    if row.canary is not None:
        text += f"; canary {row.weight:g}% -> {row.canary[:12]}" + (f" ({row.canary_release})" if row.canary_release else "")
        if row.holding:
            text += f"; {row.holding}"
        if row.failures:
            text += f"; {row.failures} failed check(s)"
    return text


def event_line(ev: AliasEvent) -> str:
    to = ev.to_sha[:12] if ev.to_sha else "-"
    frm = ev.from_sha[:12] if ev.from_sha else "-"
    split = f" canary {ev.weight:g}% -> {ev.canary[:12]}" if ev.canary else ""
    return f"{iso(ev.at)}  {ev.action:<18} {frm} -> {to}{split}  by {ev.actor}: {ev.reason}"
