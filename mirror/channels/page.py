"""A page of channels on the wire (`GET /_peer/v1/channels`, peers/wire.py): the
authority's `Export` as JSON (`page_json`), and that JSON read back, checked field by
field, by a follower (`parse_page`).

Repos are named by type and id, never by a node's row ids (each node numbers its repos
itself); the follower maps them to its own rows (creating them) before it applies the
page. A page a follower cannot read is refused whole (ValueError), never applied in part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mirror.catalog.channel_copy import Export
from mirror.catalog.channels import AliasEvent, AliasRow, Release
from mirror.channels.names import alias_name, release_version
from mirror.errors import BadRequest
from mirror.model import RepoKey
from mirror.peers import wire

_MAX_TEXT = 4000
_MAX_LIST = 100_000


@dataclass(frozen=True, slots=True)
class Page:
    """A parsed page: rows whose `repo` is 0 until mapped, each with its repo's key."""

    follows: str
    event: int
    release_serial: int
    more: bool
    events: list[tuple[RepoKey, AliasEvent]]
    releases: list[tuple[RepoKey, Release]]
    aliases: list[tuple[RepoKey, AliasRow]] | None
    index: list[tuple[RepoKey, str, str]] | None

    def keys(self) -> set[RepoKey]:
        out = {k for k, _ in self.events} | {k for k, _ in self.releases}
        out |= {k for k, _ in self.aliases or ()} | {k for k, _, _ in self.index or ()}
        return out


# --- the authority's side -------------------------------------------------------------------


def page_json(page: Export, follows: str) -> dict[str, Any]:
    def repo(rid: int) -> dict[str, str]:
        key = page.repos[rid]
        return {"repo_type": key.repo_type, "repo_id": key.repo_id}

    return {
        "follows": follows,
        "event": page.event,
        "release_serial": page.release_serial,
        "more": page.more,
        "events": [{**repo(e.repo), "id": e.id, "name": e.name, "at": e.at, "actor": e.actor, "action": e.action,
                    "from": e.from_sha, "to": e.to_sha, "canary": e.canary, "weight": e.weight, "reason": e.reason,
                    "detail": e.detail} for e in page.events if e.repo in page.repos],
        "releases": [{**repo(r.repo), "name": r.name, "version": r.version, "commit": r.commit, "author": r.author,
                      "created_at": r.created_at, "params": r.params, "datasets": list(r.datasets), "meta": r.meta,
                      "note": r.note} for r in page.releases if r.repo in page.repos],
        "aliases": None if page.aliases is None else [
            {**repo(a.repo), "name": a.name, "commit": a.commit, "release": a.release, "canary": a.canary,
             "canary_release": a.canary_release, "weight": a.weight, "plan": a.plan, "salt": a.salt,
             "started_at": a.started_at, "next_at": a.next_at, "failures": a.failures, "holding": a.holding,
             "updated_at": a.updated_at} for a in page.aliases if a.repo in page.repos],
        "index": None if page.index is None else [
            {**repo(rid), "name": name, "commit": commit} for rid, name, commit in page.index if rid in page.repos],
    }


# --- the follower's side --------------------------------------------------------------------


def parse_page(data: Any) -> Page:
    """A page from the authority, checked; ValueError (what is wrong) when malformed."""
    d = _obj(data, "page")
    aliases, index = d.get("aliases"), d.get("index")
    if (aliases is None) != (index is None):
        raise ValueError("page: aliases and index come together")
    return Page(
        follows=_text(d.get("follows", ""), "follows", 300),
        event=_count(d.get("event"), "event"),
        release_serial=_count(d.get("release_serial"), "release_serial"),
        more=_bool(d.get("more"), "more"),
        events=[_event(e) for e in _list(d.get("events"), "events")],
        releases=[_release(r) for r in _list(d.get("releases"), "releases")],
        aliases=None if aliases is None else [_alias(a) for a in _list(aliases, "aliases")],
        index=None if index is None else [_index(i) for i in _list(index, "index")],
    )


def _key(d: dict[str, Any]) -> RepoKey:
    return wire.repo_key(d.get("repo_type"), d.get("repo_id"))


def _event(data: Any) -> tuple[RepoKey, AliasEvent]:
    d = _obj(data, "event")
    ev = AliasEvent(_count(d.get("id"), "event id"), 0, _alias_name(d.get("name")), _time(d.get("at"), "at"),
                    _text(d.get("actor"), "actor", 300), _text(d.get("action"), "action", 64),
                    _sha(d.get("from"), "from", True), _sha(d.get("to"), "to", True), _sha(d.get("canary"), "canary", True),
                    _weight(d.get("weight")), _text(d.get("reason"), "reason", _MAX_TEXT), _obj(d.get("detail"), "detail"))
    return _key(d), ev


def _release(data: Any) -> tuple[RepoKey, Release]:
    d = _obj(data, "release")
    name = _text(d.get("name"), "release name", 64)
    try:
        version = release_version(name)
    except BadRequest as exc:
        raise ValueError(exc.message) from None
    datasets = _list(d.get("datasets"), "datasets")
    rel = Release(0, name, version, _sha(d.get("commit"), "commit"), _text(d.get("author"), "author", 300),
                  _time(d.get("created_at"), "created_at"), _obj(d.get("params"), "params"),
                  tuple(_text(x, "dataset", 400) for x in datasets), _obj(d.get("meta"), "meta"),
                  _text(d.get("note"), "note", _MAX_TEXT))
    return _key(d), rel


def _alias(data: Any) -> tuple[RepoKey, AliasRow]:
    d = _obj(data, "alias")
    plan = d.get("plan")
    canary = _sha(d.get("canary"), "canary", True)
    row = AliasRow(0, _alias_name(d.get("name")), _sha(d.get("commit"), "commit"), _text(d.get("release"), "release", 64),
                   canary, _text(d.get("canary_release"), "canary_release", 64), _weight(d.get("weight")),
                   None if plan is None else _obj(plan, "plan"), _text(d.get("salt"), "salt", 128),
                   _time(d.get("started_at"), "started_at", True), _time(d.get("next_at"), "next_at", True),
                   _count(d.get("failures"), "failures"), _text(d.get("holding"), "holding", _MAX_TEXT),
                   _time(d.get("updated_at"), "updated_at"))
    if canary is not None and not row.salt:
        raise ValueError("alias: a canary without a salt")
    return _key(d), row


def _index(data: Any) -> tuple[RepoKey, str, str]:
    d = _obj(data, "index entry")
    return _key(d), _text(d.get("name"), "release name", 64), _sha(d.get("commit"), "commit")


# --- field checks -----------------------------------------------------------------------------


def _obj(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ValueError(f"{what} is not an object")
    return v


def _list(v: Any, what: str) -> list[Any]:
    if not isinstance(v, list) or len(v) > _MAX_LIST:
        raise ValueError(f"{what} is not a list")
    return v


def _text(v: Any, what: str, limit: int) -> str:
    if not isinstance(v, str) or len(v) > limit:
        raise ValueError(f"{what} is not a string of at most {limit} characters")
    return v


def _bool(v: Any, what: str) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"{what} is not a boolean")
    return v


def _count(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{what} is not a count")
    return v


def _time(v: Any, what: str, optional: bool = False) -> Any:
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{what} is not a time")
    return float(v)


def _weight(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 100:
        raise ValueError("weight is not a percentage")
    return float(v)


def _sha(v: Any, what: str, optional: bool = False) -> Any:
    if v is None and optional:
        return None
    if not isinstance(v, str) or not wire.COMMIT_RE.fullmatch(v):
        raise ValueError(f"{what} is not a commit")
    return v


def _alias_name(v: Any) -> str:
    try:
        return alias_name(_text(v, "alias name", 64))
    except BadRequest as exc:
        raise ValueError(exc.message) from None
