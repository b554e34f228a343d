"""The CLI side of the permission table. By default the CLI acts as the operator who
owns the data directory (an admin: whoever can read the node key can do anything).
With `MIRROR_TOKEN=mm_...` in the environment, each command is first checked against
that token's role, with the action the HTTP admin API uses for the same thing
(auth/permissions.py `CLI_COMMANDS`): same table, same answers, refusals audited."""

from __future__ import annotations

import argparse

from mirror.auth.permissions import allowed, cli_action
from mirror.cli.common import node_for
from mirror.errors import AccessDenied, MirrorError


async def check(args: argparse.Namespace, token: str) -> None:
    sub = getattr(args, f"{args.command}_command", None)  # a group's action: keys_command, metrics_command, ...
    action = cli_action(args.command, sub, repair=bool(getattr(args, "repair", False)))
    async with node_for(args) as node:
        try:
            row = await node.tokens.authenticate(token)
        except MirrorError as exc:
            node.audit.record("token:invalid", "auth.denied", f"mirror {args.command}", "denied", permission=action,
                              reason=exc.message, via="cli")
            raise
        if not allowed(row.role, action, node.config.auth):
            node.audit.record(row.name, "auth.denied", f"mirror {args.command}", "denied", permission=action, via="cli")
            raise AccessDenied(f"{row.role} {row.name!r} may not {action} (mirror {args.command})")
