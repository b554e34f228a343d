"""A running daemon's canary (issue 11 item 5): a metric report over HTTP that breaks a
gate rolls the canary back before the report is answered, the very next request gets the
stable commit, the history says which gate and which values, and the rollback reaches the
webhook signed. Real daemon, fake Hub, a real aiohttp receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from tests.hubenv import raw  # isort: skip

from aiohttp import web

from mirror.channels.webhook import verify_signature
from tests.clihelp import clean_env
from tests.daemon import MirrorDaemon

REPO = "org/m"
SECRET = "whsec-canary-0123456789abcdef"


async def test_a_report_breaking_a_gate_rolls_back_at_once_and_is_announced(tmp_path: Path, hub: Any,
                                                                             aiohttp_server: Any) -> None:
    got: list[tuple[dict[str, str], bytes]] = []
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        got.append((dict(request.headers), await request.read()))
        arrived.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app, host="127.0.0.1")
    key = tmp_path / "hook.key"
    key.write_text(SECRET)
    key.chmod(0o600)
    stable = hub.commit(REPO, {"config.json": b'{"v": 1}'})
    new = hub.commit(REPO, {"config.json": b'{"v": 2}'})
    m = MirrorDaemon(tmp_path / "data", hub.url,
                     channels={"webhook": f"http://127.0.0.1:{server.port}/hook", "webhook_secret_file": str(key)})
    await asyncio.to_thread(m.start)
    try:
        async def call(method: str, path: str, body: Any = None, **headers: str) -> tuple[int, dict[str, str], bytes]:
            data = json.dumps(body).encode() if body is not None else None
            h = {"Content-Type": "application/json", **headers} if data else dict(headers)
            return await asyncio.to_thread(raw, m.url + path, method, h, data)

        async def cli(*argv: str) -> dict[str, Any]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mirror", *argv, "--config", str(m.config_path), "--json",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=clean_env())
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()
            return json.loads(out)  # type: ignore[no-any-return]

        dev = (await cli("token", "create", "--name", "eval-job", "--role", "developer", "--grant", "org"))["token"]
        auth = {"Authorization": f"Bearer {dev}"}
        for sha in (stable, new):
            assert (await call("GET", f"/{REPO}/resolve/{sha}/config.json"))[0] == 200
        await cli("alias", "set", REPO, "prod", stable, "--reason", "stable")
        await cli("alias", "canary", REPO, "prod", "--to", new, "--percent", "100", "--every", "1h",
                  "--gate", "accuracy >= 0.9")
        status, headers, _ = await call("GET", f"/{REPO}/resolve/prod/config.json", **{"X-Client-Id": "c1"})
        assert headers["X-Repo-Commit"] == new
        # Bad input first: refused in the Hub's error format, nothing recorded.
        status, headers, body = await call("POST", "/_admin/metrics", {"repo": REPO, "revision": "prod", "name": "x"},
                                           **auth)
        assert status == 400 and headers["X-Error-Code"] == "BadRequest" and b"value" in body
        # An eval job's report for the alias, for client c1: it counts for the side c1 is served.
        status, _h, body = await call("POST", "/_admin/metrics", {"repo": REPO, "revision": "prod", "client": "c1",
                                                                  "name": "accuracy", "value": 0.42}, **auth)
        assert status == 201 and json.loads(body)["commit"] == new
        status, headers, _ = await call("GET", f"/{REPO}/resolve/prod/config.json", **{"X-Client-Id": "c1"})
        assert headers["X-Repo-Commit"] == stable  # the very next request
        [event] = await cli("alias", "history", REPO, "prod", "--limit", "1")
        assert event["action"] == "canary-rollback" and event["actor"] == "canary-controller"
        assert "accuracy >= 0.9: FAILED with 0.42 (n=1)" in event["reason"]
        await asyncio.wait_for(arrived.wait(), 30)
        rollbacks = [(h, b) for h, b in got if h["X-Mirror-Event"] == "canary-rollback"]
        assert len(rollbacks) == 1
        h, b = rollbacks[0]
        payload = json.loads(b)
        assert verify_signature(SECRET.encode(), h["X-Mirror-Timestamp"], b, h["X-Mirror-Signature"], payload["at"])
        assert payload["from"] == stable and payload["to"] == stable and payload["alias"] == "prod"
        assert payload["detail"]["canary"] == new and "accuracy" in payload["reason"]
        metrics = await cli("metrics", "show", f"{REPO}@{new}")
        assert "accuracy" in json.dumps(metrics)
    finally:
        await asyncio.to_thread(m.stop)
