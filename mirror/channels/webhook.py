"""The webhook: announces alias changes (rollbacks, promotions, canary steps) to the URL
of `[channels] webhook`, signed, retried, from the outbox of the catalog.

Queueing and delivery
---------------------
An alias change writes its announcement into the `webhook_outbox` table in the same
transaction as the change and its history row (catalog/channels.py `change_alias`), so
a change is never announced without happening, nor happens without its announcement.
Any process may queue (the daemon's canary controller, a CLI command); only the daemon
delivers: `forever` runs a pass over the due announcements, then waits for `wake()` (an
enqueue in this process), the next retry, or one second (an enqueue by another process,
seen at the next look). `mirror webhook status` lists them, `mirror webhook test`
queues a `test` event.

Each announcement is one POST of its stored JSON body:

    POST <webhook>
    Content-Type: application/json
    User-Agent: model-mirror/<version>
    X-Mirror-Event: rollback
    X-Mirror-Delivery: 42             the outbox id: the same on every retry
    X-Mirror-Timestamp: 1700000000    unix seconds of this attempt
    X-Mirror-Signature: sha256=<hex of HMAC-SHA256(secret, b"<timestamp>." + body)>

A 2xx answer delivers it. Anything else (another status, a redirect, which is never
followed, no answer within `webhook_timeout`, a refused connection) is retried after
1 s, 2 s, 4 s, ... (at most 5 min apart) until `webhook_attempts` attempts were made;
then it is given up with an error line in the log naming the event and the last error.
Delivery is at least once. A pass sends due announcements in id order and ends at the
first failure (the receiver is likely down: the rest wait for the next pass instead of
each costing a timeout), so order holds while the receiver answers; a receiver that
needs strict order sorts by `at`, then by X-Mirror-Delivery.

Verifying a delivery (the receiver)
-----------------------------------
1. Take the raw body bytes, before any JSON parsing, and the two headers.
2. Reject a timestamp more than 5 minutes from your clock (a replayed request).
3. Compute HMAC-SHA256 with the shared secret over `<timestamp>.` followed by the body,
   hex; compare it with the hex after `sha256=` in constant time (hmac.compare_digest).
4. Ignore an X-Mirror-Delivery you have already handled (a retry after a lost answer).
`verify_signature` does steps 1-3; a Python receiver may import it or copy it.

The body, format version 1
--------------------------
    {"version": 1, "event": "rollback", "at": 1700000000.0,
     "repo": "org/m", "repo_type": "model", "alias": "prod",
     "from": "<sha|null>", "to": "<sha|null>", "canary": "<sha|null>", "weight": 10.0,
     "actor": "...", "reason": "...", "detail": {...}, "node": "<node key hex>"}

event   the action of the alias history row (`rollback`, `promote`, a canary step ...)
at      unix seconds of the change
from    the stable target before the change (null: the alias did not exist)
to      the stable target after it (null: the alias was deleted)
canary  the canary target after it (null: no canary); weight its percent of clients
actor   who changed it (a token name, `cli:<user>`, the canary controller)
reason  why (a rollback's reason, a failed gate); detail: the history row's detail
node    the public key (hex) of the node that made the change
A `test` event (`mirror webhook test`) carries version, event, at and node only.
Fields may be added within version 1; a change of meaning bumps `version`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from mirror import __version__
from mirror.catalog.channels import ChannelCatalog, OutboxItem
from mirror.clock import Clock
from mirror.config import ChannelsConfig
from mirror.errors import StorageError

log = logging.getLogger("mirror.webhook")

FORMAT_VERSION = 1
POLL = 1.0  # seconds between looks at the outbox (another process may have queued)
BACKOFF_CAP = 300.0
BATCH = 20  # announcements per pass; a full batch starts the next pass at once


def announcement(*, event: str, at: float, repo: str, repo_type: str, alias: str, from_sha: str | None,
                 to_sha: str | None, canary: str | None, weight: float, actor: str, reason: str,
                 detail: dict[str, Any], node: str) -> dict[str, Any]:
    """The body of an alias change's announcement (format version 1, above)."""
    return {"version": FORMAT_VERSION, "event": event, "at": at, "repo": repo, "repo_type": repo_type,
            "alias": alias, "from": from_sha, "to": to_sha, "canary": canary, "weight": weight, "actor": actor,
            "reason": reason, "detail": detail, "node": node}


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The X-Mirror-Signature value of `body` sent at `timestamp`."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, timestamp: str, body: bytes, header: str, now: float,
                     tolerance: float = 300.0) -> bool:
    """A receiver's check: the timestamp is within `tolerance` seconds of `now` and the
    signature header is the HMAC of this timestamp and these exact body bytes."""
    if not timestamp.isascii() or not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance:
        return False
    if not header.startswith("sha256="):
        return False
    return hmac.compare_digest(signature(secret, timestamp, body).encode(), header.encode())


def backoff(attempts: int) -> float:
    """Seconds before the next attempt after `attempts` failed ones: 1, 2, 4, ... 300."""
    return min(BACKOFF_CAP, 2.0 ** min(attempts - 1, 16))


def where(url: str) -> str:
    """The URL without its path and query (which may carry a token): for logs and status."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


class Webhook:
    def __init__(self, outbox: ChannelCatalog, config: ChannelsConfig, clock: Clock, secret: bytes | None) -> None:
        self.outbox = outbox
        self.config = config
        self.clock = clock
        self.secret = secret
        self._wakeup = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._next_at: float | None = None  # the earliest retry scheduled by the last pass
        self._more = False  # the last pass took a full batch and met no failure

    @property
    def enabled(self) -> bool:
        """A URL and its key are configured (announcements queued otherwise are never sent)."""
        return bool(self.config.webhook) and self.secret is not None

    def wake(self) -> None:
        """Deliver now: an announcement was queued in this process."""
        self._wakeup.set()

    async def enqueue_test(self, node: str) -> int:
        """Queue a `test` event (`mirror webhook test`); its outbox id."""
        body = {"version": FORMAT_VERSION, "event": "test", "at": self.clock.now(), "node": node}
        item = await self.outbox.enqueue("test", json.dumps(body, sort_keys=True))
        self.wake()
        return item

    async def forever(self) -> None:
        """The daemon's delivery loop (cancelled by the node's scheduler). A failing
        catalog is logged once per episode and retried; nothing ends the loop."""
        failing = False
        while True:
            try:
                await self.deliver_due()
                if failing:
                    log.info("webhook: the outbox is readable again")
                failing = False
            except StorageError as exc:
                if not failing:
                    log.warning("webhook: cannot use the outbox (%s); will retry", exc.message)
                failing = True
                self._more = False
            except Exception:
                log.exception("webhook: a delivery pass failed; will retry")
                self._more = False
            if not self._more:
                await self._pause()

    async def _pause(self) -> None:
        wait = POLL
        if self._next_at is not None:
            wait = min(wait, max(0.01, self._next_at - self.clock.now()))
        try:
            await asyncio.wait_for(self._wakeup.wait(), wait)
        except TimeoutError:
            pass
        self._wakeup.clear()

    async def deliver_due(self) -> int:
        """One pass: send the due announcements in id order, until the first failure.
        Returns how many were delivered."""
        self._next_at, self._more = None, False
        if not self.enabled:
            return 0
        items = await self.outbox.due(self.clock.now(), limit=BATCH)
        delivered = 0
        for item in items:
            error = await self._post(item)
            attempts = item.attempts + 1
            if error is None:
                await self.outbox.delivered(item.id, attempts)
                delivered += 1
                continue
            if attempts >= self.config.webhook_attempts:
                await self.outbox.give_up(item.id, attempts, error)
                log.error("webhook: gave up on %s announcement #%d to %s after %d attempts: %s",
                          item.event, item.id, where(self.config.webhook), attempts, error)
            else:
                delay = backoff(attempts)
                self._next_at = self.clock.now() + delay
                await self.outbox.retry(item.id, attempts, self._next_at, error)
                log.warning("webhook: %s announcement #%d to %s failed (attempt %d of %d): %s; retrying in %g s",
                            item.event, item.id, where(self.config.webhook), attempts, self.config.webhook_attempts,
                            error, delay)
            return delivered
        self._more = len(items) == BATCH
        return delivered

    async def _post(self, item: OutboxItem) -> str | None:
        """One attempt; None when delivered, else what went wrong (one line)."""
        assert self.secret is not None
        body = item.body.encode()
        timestamp = str(int(self.clock.now()))
        headers = {
            "Content-Type": "application/json",
            "X-Mirror-Event": item.event,
            "X-Mirror-Delivery": str(item.id),
            "X-Mirror-Timestamp": timestamp,
            "X-Mirror-Signature": signature(self.secret, timestamp, body),
        }
        try:
            async with self._client().post(self.config.webhook, data=body, headers=headers,
                                           allow_redirects=False) as resp:
                if 200 <= resp.status < 300:
                    return None
                if 300 <= resp.status < 400:
                    return f"HTTP {resp.status}: a redirect (not followed; configure the final URL)"
                said = " ".join((await resp.content.read(200)).decode("utf-8", "replace").split())
                return f"HTTP {resp.status}" + (f": {said}" if said else "")
        except TimeoutError:
            return f"no answer within {self.config.webhook_timeout:g} s"
        except aiohttp.ClientConnectorError as exc:
            return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
        except (aiohttp.ClientError, OSError) as exc:
            return " ".join(f"{type(exc).__name__}: {exc}".split())

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.webhook_timeout),
                headers={"User-Agent": f"model-mirror/{__version__}"},
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
