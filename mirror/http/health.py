"""`GET /healthz` (liveness) and `GET /readyz` (readiness), the `health` route group.

`/healthz` says the process answers, plus a glance at the daemon. `streams` is the number
of file responses whose body is being sent right now; it drops as soon as a client that
went away has had its stream stopped (its read-ahead cancelled, its chunk leases or fill
reader slot released), so it tells an operator, and the tests, whether work for gone
clients lingers.

`/readyz` says the node can serve: 200 with a JSON body of its checks, or 503 with the
same body, an `error` naming the checks that failed and `X-Error-Code: NotReady`:
- `catalog`: the SQLite catalog answers a read within `CHECK_TIMEOUT`;
- `store`: a tiny temp file can be written and fsynced in the data dir's `tmp/` (a full,
  read-only or vanished volume fails it);
- `upstream`: reachable, or not (the last connect to it failed: upstream/outage.py), in
  which case the node declares `"serving": "stale"`: it answers from what it holds
  (marked `X-Mirror-Stale`) and stays ready. A cache whose readiness followed its
  upstream would leave a cluster with no node in service exactly when cached content is
  all anyone can get, so this check never fails readiness; it reports.
The checks run at once, each bounded by `CHECK_TIMEOUT`, so a probe answers within a
probe's usual timeout. A successful `/readyz` writes no access line (probes come every few
seconds); a failing one does.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable

from aiohttp import web

from mirror import __version__
from mirror.errors import MirrorError
from mirror.http.context import NODE
from mirror.http.hub_files import STREAMS
from mirror.http.middleware import QUIET
from mirror.store.fsio import probe_writable

# Seconds each readiness check may take (Kubernetes' default probe timeout is 1 s; the
# manifests in deploy/k8s give 3 s).
CHECK_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__, "streams": STREAMS.open})


async def readyz(request: web.Request) -> web.Response:
    node = request.app[NODE]
    loop = asyncio.get_running_loop()
    catalog, store = await asyncio.gather(
        _check(node.catalog.db.ping()),
        _check(loop.run_in_executor(None, probe_writable, node.layout.tmp)),
    )
    why = node.hub.unreachable()
    upstream: dict[str, Any] = {"ok": True, "reachable": why is None}
    if why is not None:
        upstream.update(serving="stale", detail=f"last connect failed: {why}")
    checks = {"catalog": catalog, "store": store, "upstream": upstream}
    failed = [name for name, c in checks.items() if not c["ok"]]
    if not failed:
        request[QUIET] = True
        return web.json_response({"status": "ready", "checks": checks})
    detail = "; ".join(f"{name}: {checks[name]['detail']}" for name in failed)
    return web.json_response({"status": "not ready", "failed": failed, "checks": checks, "error": f"not ready: {detail}"},
                             status=503, headers={"X-Error-Code": "NotReady"})


async def _check(work: Awaitable[Any]) -> dict[str, Any]:
    try:
        await asyncio.wait_for(work, CHECK_TIMEOUT)
    except asyncio.TimeoutError:
        return {"ok": False, "detail": f"no answer within {CHECK_TIMEOUT:.0f} s"}
    except MirrorError as exc:
        return {"ok": False, "detail": exc.message}
    except Exception as exc:  # a probe reports any failure; it never answers 500
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"[:300]}
    return {"ok": True}
