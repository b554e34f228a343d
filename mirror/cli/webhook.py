"""`mirror webhook status|test`: the announcements of alias changes waiting for, or past,
delivery to `[channels] webhook` (channels/webhook.py), and a test event to check the
receiver.

`status` lists the newest announcements of the outbox: pending (with its next attempt),
delivered or failed, the attempts made and the last error. `test` queues a `test` event;
the running daemon delivers it like any announcement (within about a second), and
`status` shows the outcome. The URL is shown without its path, which may hold a token.
`test` is audited (`webhook.test`).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from mirror.audit.actor import cli_actor
from mirror.catalog.channels import OutboxItem
from mirror.channels.webhook import where
from mirror.cli.common import add_config_args, node_for, print_json
from mirror.errors import UsageError


def register(sub: Any) -> None:
    p = sub.add_parser("webhook", help="announcements of alias changes to [channels] webhook")
    wsub = p.add_subparsers(dest="webhook_command", metavar="ACTION")
    wsub.required = True

    status = wsub.add_parser("status", help="the newest announcements: pending, delivered or failed")
    add_config_args(status)
    status.add_argument("--limit", type=int, default=20, help="how many (default 20, newest first)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(run=run_status)

    test = wsub.add_parser("test", help="queue a test event; the running daemon delivers it")
    add_config_args(test)
    test.add_argument("--json", action="store_true", help="machine-readable output")
    test.set_defaults(run=run_test)


def state(item: OutboxItem) -> str:
    if item.delivered_at is not None:
        return "delivered"
    return "failed" if item.failed_at is not None else "pending"


def _row(item: OutboxItem) -> dict[str, Any]:
    return {"id": item.id, "event": item.event, "at": item.at, "state": state(item), "attempts": item.attempts,
            "next_at": item.next_at if state(item) == "pending" else None, "delivered_at": item.delivered_at,
            "failed_at": item.failed_at, "last_error": item.last_error}


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


async def run_status(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 10_000:
        raise UsageError("--limit must be 1..10000")
    async with node_for(args) as node:
        items = await node.catalog.channels.outbox(args.limit)
        url = node.config.channels.webhook
    if args.json:
        print_json({"webhook": where(url) if url else None, "items": [_row(i) for i in items]})
        return 0
    print(f"webhook: {where(url)}" if url else "webhook: none configured ([channels] webhook)")
    if not items:
        print("no announcements")
        return 0
    print(f"{'ID':>6}  {'EVENT':<16} {'STATE':<10} {'TRIES':>5}  {'QUEUED':<19}  LAST ERROR / NEXT ATTEMPT")
    for item in items:
        s = state(item)
        note = item.last_error
        if s == "pending" and item.attempts:
            note = f"{note} (next {_when(item.next_at)})"
        print(f"{item.id:>6}  {item.event:<16} {s:<10} {item.attempts:>5}  {_when(item.at):<19}  {note}")
    return 0


async def run_test(args: argparse.Namespace) -> int:
    async with node_for(args) as node:
        url = node.config.channels.webhook
        if not url:
            raise UsageError("no webhook is configured (set [channels] webhook and webhook_secret_file)")
        item = await node.webhook.enqueue_test(node.key.public_hex)
        node.audit.record(cli_actor(), "webhook.test", where(url), delivery=item)
    if args.json:
        print_json({"id": item, "event": "test", "webhook": where(url)})
    else:
        print(f"queued test event #{item} for {where(url)}; the running daemon delivers it "
              "(`mirror webhook status` shows the outcome)")
    return 0
