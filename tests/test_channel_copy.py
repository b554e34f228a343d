"""Copying channels from an authority to a follower, in process (two real catalogs, no
network): pages stay within their bounds and add up to the whole; the follower's copy
equals the authority's; releases stay immutable on the follower; a page that does not
read right is refused whole. The daemons end to end: tests/test_channels_follow.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from mirror.catalog.channels import AliasRow, Change, Release
from mirror.channels.follow import to_import
from mirror.channels.page import parse_page, page_json
from mirror.clock import FakeClock
from mirror.model import RepoKey
from mirror.node import Node, open_node
from tests.conftest import make_config

A_URL = "http://10.0.0.1:8090"
KEY_A = "a" * 64
M, D = RepoKey("model", "org/m"), RepoKey("dataset", "org/d")


def sha(n: int) -> str:
    return f"{n:040x}"


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    clock = FakeClock()
    a = await open_node(make_config(tmp_path / "a"), clock=clock)
    b = await open_node(make_config(tmp_path / "b"), clock=clock)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def set_alias(n: Node, key: RepoKey, name: str, commit: str, **kw: Any) -> None:
    repo = await n.catalog.repos.repo_id(key)
    assert repo is not None
    row = AliasRow(repo, name, commit, **kw)
    await n.catalog.channels.change_alias(repo, name, lambda _old: Change(row, "set", "alice", f"to {commit[:4]}",
                                                                        {"revision": commit}))


async def release(n: Node, key: RepoKey, name: str, commit: str, **kw: Any) -> Release:
    repo = await n.catalog.repos.repo_id(key)
    assert repo is not None
    rel = Release(repo, name, name.lstrip("v"), commit, "alice", n.clock.now(), **kw)
    await n.catalog.channels.create_release(rel)
    return rel


async def pull(a: Node, b: Node, **limits: Any) -> list[dict[str, Any]]:
    """Pages from A applied to B until none is left (as the follower does): the pages."""
    pages = []
    state = await b.catalog.channel_copy.state(A_URL)
    after = (state.event, state.release_serial) if state else (0, 0)
    for _ in range(100):
        data = json.loads(json.dumps(page_json(await a.catalog.channel_copy.export(*after, **limits), "")))
        pages.append(data)
        page = parse_page(data)
        applied = await b.catalog.channel_copy.apply(A_URL, KEY_A, after, await to_import(page, b.catalog.repos))
        assert not applied.stale
        after = (page.event, page.release_serial)
        if not page.more:
            return pages
    raise AssertionError("pages never ended")


async def view(n: Node) -> dict[str, Any]:
    """What a node serves and records, by repo key (row ids differ between nodes)."""
    keys = {r.id: r.key for r in await n.catalog.repos.list_repos()}
    aliases = {(keys[a.repo], a.name): (a.commit, a.release, a.canary, a.weight, a.salt, a.plan)
               for a in await n.catalog.channels.aliases()}
    releases = {(keys[r.repo], r.name): (r.commit, r.author, r.created_at, r.params, r.datasets, r.meta, r.note)
                for r in await n.catalog.channels.releases()}
    history = {}
    for (key, name) in aliases:
        history[(key, name)] = [(e.at, e.actor, e.action, e.from_sha, e.to_sha, e.canary, e.weight, e.reason, e.detail)
                                for e in await n.catalog.channels.history(await n.catalog.repos.repo_id(key), name)]
    return {"aliases": aliases, "releases": releases, "history": history}


async def test_pages_are_bounded_and_add_up_to_the_authoritys_state(pair: tuple[Node, Node]) -> None:
    a, b = pair
    for i in range(10):
        await set_alias(a, M, "prod", sha(i))
        a.clock.advance(1)
    await set_alias(a, D, "staging", sha(50), canary=sha(51), weight=25.0, salt="s" * 16, plan={"start": 25})
    for i in range(5):
        await release(a, M, f"v1.{i}.0", sha(i), params={"lr": i}, datasets=("org/d@" + sha(9),), note="n" * 100)
    pages = await pull(a, b, max_events=4)
    assert len(pages) >= 3
    assert all(len(p["events"]) <= 4 and len(p["releases"]) <= 4 for p in pages)
    assert all(p["aliases"] is None for p in pages[:-1]) and pages[-1]["aliases"] is not None
    assert await view(b) == await view(a)
    # Nothing new: one empty page, nothing written.
    [again] = await pull(a, b)
    assert again["events"] == [] and again["releases"] == []
    # A byte budget smaller than one row still moves: one row per page.
    await release(a, M, "v2.0.0", sha(20), meta={"blob": "x" * 50_000})
    await release(a, M, "v2.1.0", sha(21), meta={"blob": "y" * 50_000})
    pages = await pull(a, b, budget=10_000)
    assert [len(p["releases"]) for p in pages] == [1, 1]
    assert await view(b) == await view(a)


async def test_changes_deletions_and_rollbacks_replace_the_followers_copy(pair: tuple[Node, Node]) -> None:
    a, b = pair
    await set_alias(b, M, "local", sha(99))  # before this node followed anyone
    await set_alias(a, M, "prod", sha(1))
    rel = await release(a, M, "v1.0.0", sha(1))
    await pull(a, b)
    assert await view(b) == await view(a)  # the authority's aliases replace local ones
    repo_b = await b.catalog.repos.repo_id(M)
    [gone] = await b.catalog.channels.history(repo_b, "local", 1)
    assert (gone.action, gone.to_sha, gone.actor) == ("delete", None, f"follow:{A_URL}")
    repo_a = await a.catalog.repos.repo_id(M)
    await a.catalog.channels.change_alias(repo_a, "prod", lambda _o: Change(None, "delete", "alice", "gone"))
    await a.catalog.channels.delete_release(rel.repo, "v1.0.0")
    await pull(a, b)
    assert (await view(b))["aliases"] == {} and (await view(b))["releases"] == {}
    assert [e.action for e in await b.catalog.channels.history(repo_b, "prod")] == ["delete", "set"]


async def test_a_release_held_at_another_commit_is_never_overwritten(pair: tuple[Node, Node]) -> None:
    a, b = pair
    await release(b, M, "v1.0.0", sha(7))  # made here before following
    await release(a, M, "v1.0.0", sha(8))
    await set_alias(a, M, "prod", sha(8), release="v1.0.0")
    state = await b.catalog.channel_copy.state(A_URL)
    assert state is None
    data = page_json(await a.catalog.channel_copy.export(0, 0), "")
    page = parse_page(data)
    applied = await b.catalog.channel_copy.apply(A_URL, KEY_A, (0, 0), await to_import(page, b.catalog.repos))
    repo_b = await b.catalog.repos.repo_id(M)
    assert {(c[1], c[2], c[3]) for c in applied.conflicts} == {("v1.0.0", sha(8), sha(7))}
    kept = await b.catalog.channels.release(repo_b, "v1.0.0")
    assert kept is not None and kept.commit == sha(7)
    alias = await b.catalog.channels.alias(repo_b, "prod")
    assert alias is not None and alias.commit == sha(8)  # the alias names its commit: served as the authority says
    # A page applied twice (a pull that raced another) is refused, not copied twice.
    again = await b.catalog.channel_copy.apply(A_URL, KEY_A, (0, 0), await to_import(page, b.catalog.repos))
    assert again.stale and len(await b.catalog.channels.history(repo_b, "prod")) == 1


async def test_a_rebuilt_authority_answers_lowered_cursors_and_the_copy_starts_over(
        pair: tuple[Node, Node], tmp_path: Path) -> None:
    a, b = pair
    old = await open_node(make_config(tmp_path / "old"), clock=a.clock)  # the authority before its catalog was lost
    try:
        for i in range(5):
            await set_alias(old, M, "prod", sha(i))
        await pull(old, b)
    finally:
        await old.close()
    await set_alias(a, M, "prod", sha(7))  # the rebuilt one, same URL and key: one event so far
    state = await b.catalog.channel_copy.state(A_URL)
    assert state is not None and state.event == 5
    page = await a.catalog.channel_copy.export(state.event, state.release_serial)
    assert page.event == 1 < state.event and not page.more  # lowered: the follower sees it is ahead
    await b.catalog.channel_copy.reset(A_URL)
    await pull(a, b)
    state = await b.catalog.channel_copy.state(A_URL)
    assert state is not None and state.event == 1
    assert (await view(b))["aliases"] == (await view(a))["aliases"]


@pytest.mark.parametrize("field, value", [
    ("commit", "xyz"), ("weight", 101), ("weight", float("nan")), ("repo_id", "../etc"), ("name", "0123abcd"),
    ("salt", None), ("plan", []),
])
async def test_a_malformed_page_is_refused_whole(pair: tuple[Node, Node], field: str, value: Any) -> None:
    a, _b = pair
    await set_alias(a, M, "prod", sha(1), canary=sha(2), weight=10.0, salt="s" * 16, plan={"start": 10})
    data = page_json(await a.catalog.channel_copy.export(0, 0), "")
    parse_page(data)
    data["aliases"][0][field] = value
    with pytest.raises(ValueError):
        parse_page(data)
