"""The webhook (channels/webhook.py): announcements leave the outbox signed, are retried
with backoff, given up after `webhook_attempts`, never follow a redirect, and are
delivered by the daemon whoever queued them. A real aiohttp receiver on 127.0.0.1
checks every request with `verify_signature`; the node is the real one on SQLite.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from mirror import config as config_mod
from mirror.channels.webhook import announcement, verify_signature
from mirror.clock import FakeClock
from mirror.config import Config, ConfigError
from mirror.node import Node, open_node
from tests.clihelp import clean_env, run_cli
from tests.daemon import MirrorDaemon

SECRET = "whsec-0123456789abcdef0123456789abcdef"


class Receiver:
    """POST /hook answers the next status of `answers` (then 200) and keeps each request,
    after `release` when `stall` is set; /moved redirects to /hook."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.got = asyncio.Event()
        self.stall = False
        self.release = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_route("*", "/hook", self.hook)  # a followed redirect would arrive as GET
        self.app.router.add_post("/moved", self.moved)

    async def moved(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/hook")

    async def hook(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        self.got.set()
        if self.stall:
            await asyncio.wait_for(self.release.wait(), 10)
        status = self.answers.pop(0) if self.answers else 200
        return web.Response(status=status, text="nope" if status >= 300 else "ok")


@pytest.fixture
async def receiver(aiohttp_server: Any) -> tuple[Receiver, str]:
    r = Receiver()
    server = await aiohttp_server(r.app, host="127.0.0.1")
    return r, f"http://127.0.0.1:{server.port}"


def secret_file(tmp_path: Path, mode: int = 0o600, text: str = SECRET) -> Path:
    path = tmp_path / "webhook.key"
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def node_config(tmp_path: Path, url: str, **channels: Any) -> Config:
    channels = {"webhook": url, "webhook_secret_file": str(secret_file(tmp_path)), **channels}
    return config_mod.load(env={}, overrides={"store": {"data_dir": str(tmp_path / "data")}, "channels": channels})


async def queue_rollback(node: Node) -> int:
    body = announcement(event="rollback", at=node.clock.now(), repo="org/m", repo_type="model", alias="prod",
                        from_sha="b" * 40, to_sha="a" * 40, canary=None, weight=0.0, actor="cli:ops",
                        reason="loss regressed", detail={"gate": "loss"}, node=node.key.public_hex)
    return await node.catalog.channels.enqueue("rollback", json.dumps(body, sort_keys=True))


def verified(headers: dict[str, str], body: bytes, now: float) -> bool:
    return verify_signature(SECRET.encode(), headers["X-Mirror-Timestamp"], body, headers["X-Mirror-Signature"], now)


async def test_an_announcement_is_delivered_signed(tmp_path: Path, receiver: tuple[Receiver, str]) -> None:
    r, base = receiver
    clock = FakeClock()
    async with await open_node(node_config(tmp_path, base + "/hook"), clock=clock) as node:
        item = await queue_rollback(node)
        assert await node.webhook.deliver_due() == 1
        [(headers, body)] = r.requests
        assert verified(headers, body, clock.now())
        assert headers["X-Mirror-Event"] == "rollback" and headers["X-Mirror-Delivery"] == str(item)
        assert headers["Content-Type"] == "application/json" and headers["User-Agent"].startswith("model-mirror/")
        sent = json.loads(body)
        assert sent["version"] == 1 and sent["to"] == "a" * 40 and sent["reason"] == "loss regressed"
        assert sent["node"] == node.key.public_hex
        # The check refuses what it should: other bytes, a stale timestamp, another key.
        assert not verified(headers, body + b" ", clock.now())
        assert not verified(headers, body, clock.now() + 301)
        assert not verify_signature(b"another key", headers["X-Mirror-Timestamp"], body,
                                    headers["X-Mirror-Signature"], clock.now())
        [row] = await node.catalog.channels.outbox()
        assert row.delivered_at is not None and row.attempts == 1
        assert await node.webhook.deliver_due() == 0 and len(r.requests) == 1  # once only


async def test_failures_are_retried_with_backoff_until_delivered(tmp_path: Path, receiver: tuple[Receiver, str]) -> None:
    r, base = receiver
    r.answers = [500, 500]
    clock = FakeClock()
    async with await open_node(node_config(tmp_path, base + "/hook"), clock=clock) as node:
        await queue_rollback(node)
        for wait, seen in ((1, 1), (2, 2)):  # attempt `seen` failed: the next waits 1 s, then 2 s
            assert await node.webhook.deliver_due() == 0 and len(r.requests) == seen
            [row] = await node.catalog.channels.outbox()
            assert row.attempts == seen and row.next_at == clock.now() + wait and "HTTP 500: nope" in row.last_error
            clock.advance(wait - 0.5)
            assert await node.webhook.deliver_due() == 0 and len(r.requests) == seen  # not before next_at
            clock.advance(0.5)
        assert await node.webhook.deliver_due() == 1 and len(r.requests) == 3
        [row] = await node.catalog.channels.outbox()
        assert row.delivered_at is not None and row.attempts == 3 and row.last_error == ""
        assert len({h["X-Mirror-Delivery"] for h, _ in r.requests}) == 1
        assert all(verified(h, b, clock.now()) for h, b in r.requests)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_receiver_that_is_down_is_given_up_with_an_error_line(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    config = node_config(tmp_path, f"http://127.0.0.1:{closed_port()}/hook/t0ken", webhook_attempts=3)
    async with await open_node(config, clock=clock) as node:
        await queue_rollback(node)
        with caplog.at_level(logging.WARNING, logger="mirror.webhook"):
            for _ in range(3):
                assert await node.webhook.deliver_due() == 0
                clock.advance(300)
            assert await node.webhook.deliver_due() == 0  # nothing left to try
        [row] = await node.catalog.channels.outbox()
        assert row.failed_at is not None and row.delivered_at is None and row.attempts == 3
        assert "cannot connect" in row.last_error
    errors = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.ERROR]
    assert len(errors) == 1 and "gave up on rollback" in errors[0] and "cannot connect" in errors[0]
    assert "t0ken" not in caplog.text  # the URL's path is not logged


async def test_a_redirect_is_not_followed(tmp_path: Path, receiver: tuple[Receiver, str]) -> None:
    r, base = receiver
    async with await open_node(node_config(tmp_path, base + "/moved"), clock=FakeClock()) as node:
        await queue_rollback(node)
        assert await node.webhook.deliver_due() == 0
        assert r.requests == []
        [row] = await node.catalog.channels.outbox()
        assert row.delivered_at is None and row.attempts == 1 and "HTTP 302" in row.last_error


async def test_a_stalled_receiver_costs_one_timeout_per_pass(tmp_path: Path, receiver: tuple[Receiver, str]) -> None:
    r, base = receiver
    r.stall = True
    async with await open_node(node_config(tmp_path, base + "/hook", webhook_timeout=0.5), clock=FakeClock()) as node:
        first, second = await queue_rollback(node), await queue_rollback(node)
        try:
            assert await node.webhook.deliver_due() == 0
        finally:
            r.release.set()
        rows = {row.id: row for row in await node.catalog.channels.outbox()}
        assert rows[first].attempts == 1 and rows[first].last_error == "no answer within 0.5 s"
        assert rows[second].attempts == 0  # the pass ended at the first failure
        assert [h["X-Mirror-Delivery"] for h, _ in r.requests] == [str(first)]


async def test_the_loop_delivers_what_another_process_queued(tmp_path: Path, receiver: tuple[Receiver, str]) -> None:
    r, base = receiver
    config = node_config(tmp_path, base + "/hook")
    async with await open_node(config) as daemon:
        daemon.scheduler.spawn(daemon.webhook.forever(), name="webhook")
        async with await open_node(config) as cli:  # another node on the data dir: its wake() is not the loop's
            item = await cli.webhook.enqueue_test(cli.key.public_hex)
        await asyncio.wait_for(r.got.wait(), 15)
        [(headers, body)] = r.requests
        assert headers["X-Mirror-Delivery"] == str(item) and headers["X-Mirror-Event"] == "test"
        assert verified(headers, body, daemon.clock.now())
        assert json.loads(body)["event"] == "test"


@pytest.mark.parametrize("mode, text, why", [(0o644, SECRET, "readable by others"), (0o600, "short", "at least 16")])
async def test_a_bad_secret_file_refuses_the_node(tmp_path: Path, mode: int, text: str, why: str) -> None:
    path = secret_file(tmp_path, mode, text)
    config = config_mod.load(env={}, overrides={"store": {"data_dir": str(tmp_path / "data")}, "channels": {
        "webhook": "http://127.0.0.1:9/hook", "webhook_secret_file": str(path)}})
    with pytest.raises(ConfigError) as err:
        await open_node(config)
    assert why in str(err.value) and "\n" not in str(err.value) and "channels.webhook_secret_file" in str(err.value)
    assert text not in str(err.value)


def test_a_webhook_needs_a_secret_file() -> None:
    with pytest.raises(ConfigError, match="webhook_secret_file"):
        config_mod.load(env={}, overrides={"channels": {"webhook": "https://example.org/hook"}})


def test_with_a_token_status_is_a_read_and_test_manages_config(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    async def auditor() -> str:
        async with await open_node(node_config(tmp_path, "http://127.0.0.1:9/hook")) as node:
            return (await node.tokens.create("aud", "auditor"))[0]

    monkeypatch.setenv("MIRROR_TOKEN", asyncio.run(auditor()))
    d = ("--data-dir", str(tmp_path / "data"))
    assert run_cli(capsys, "webhook", "status", *d)[0] == 0
    code, _, err = run_cli(capsys, "webhook", "test", *d)
    assert code == 3 and "may not config.manage" in err


async def test_the_daemon_delivers_the_cli_test_event(tmp_path: Path, receiver: tuple[Receiver, str], hub: Any) -> None:
    r, base = receiver
    key = secret_file(tmp_path)
    m = MirrorDaemon(tmp_path / "data", hub.url, channels={"webhook": base + "/hook", "webhook_secret_file": str(key)})
    await asyncio.to_thread(m.start)
    try:
        async def cli(*argv: str) -> tuple[int, str, str]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mirror", "webhook", *argv, "--config", str(m.config_path), "--json",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=clean_env())
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            return proc.returncode or 0, out.decode(), err.decode()

        code, out, err = await cli("test")
        assert code == 0, err
        item = json.loads(out)["id"]
        await asyncio.wait_for(r.got.wait(), 30)
        [(headers, body)] = r.requests
        assert headers["X-Mirror-Delivery"] == str(item) and verified(headers, body, json.loads(body)["at"])
        for _ in range(50):  # the daemon records the delivery just after the answer
            code, out, err = await cli("status")
            if json.loads(out)["items"][0]["state"] == "delivered":
                break
            await asyncio.sleep(0.2)
        assert code == 0 and json.loads(out)["items"][0] | {"at": 0, "delivered_at": 0} == {
            "id": item, "event": "test", "state": "delivered", "attempts": 1, "at": 0, "delivered_at": 0,
            "next_at": None, "failed_at": None, "last_error": ""}
    finally:
        await asyncio.to_thread(m.stop)
