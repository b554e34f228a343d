"""`mirror token create|list|revoke|totp-enroll`, `mirror grant` / `ungrant` (the upstream
service token for chosen repos) and `mirror local-only` (namespaces never asked
upstream). The CLI acts as the operator who owns the data directory (an admin); every
change is audited under `cli:<user>`."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from mirror.audit.actor import cli_actor
from mirror.cli.common import add_config_args, load_config, node_for, print_json
from mirror.errors import UsageError


def register(sub: Any) -> None:
    p = sub.add_parser("token", help="mirror tokens: create, list, revoke, two-factor enrolment")
    tsub = p.add_subparsers(dest="token_command", metavar="ACTION")
    tsub.required = True
    c = tsub.add_parser("create", help="create a token (printed once)")
    add_config_args(c, creates_data_dir=True)
    c.add_argument("--role", required=True, choices=("admin", "developer", "auditor"))
    c.add_argument("--name", required=True, help="who or what holds it (shown in lists and the audit log)")
    c.add_argument("--expires", metavar="DURATION", help="lifetime, e.g. 90d, 12h (default: no expiry)")
    c.add_argument("--grant", action="append", default=[], metavar="NAMESPACE_OR_REPO",
                   help="what a developer may read: 'org', 'org/*' or 'org/model' (repeat)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(run=run_create)
    ls = tsub.add_parser("list", help="list tokens (never their secrets)")
    add_config_args(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)
    r = tsub.add_parser("revoke", help="revoke a token now")
    add_config_args(r)
    r.add_argument("token", metavar="NAME_OR_ID")
    r.add_argument("--force", action="store_true", help="even the last admin token")
    r.set_defaults(run=run_revoke)
    e = tsub.add_parser("totp-enroll", help="give an admin token a two-factor seed (printed once)")
    add_config_args(e)
    e.add_argument("token", metavar="NAME_OR_ID")
    e.add_argument("--json", action="store_true")
    e.set_defaults(run=run_enroll)

    g = sub.add_parser("grant", help="use the upstream service token for REPO on behalf of a role or token")
    add_config_args(g)
    g.add_argument("repo", nargs="?", metavar="REPO", help="a repo or a glob ('org/*')")
    g.add_argument("--to", metavar="ROLE_OR_TOKEN", help="admin, developer, auditor, or a token name")
    g.add_argument("--list", action="store_true", help="list grants")
    g.add_argument("--json", action="store_true")
    g.set_defaults(run=run_grant)
    u = sub.add_parser("ungrant", help="withdraw a service-token grant")
    add_config_args(u)
    u.add_argument("repo", metavar="REPO")
    u.add_argument("--to", required=True, metavar="ROLE_OR_TOKEN")
    u.set_defaults(run=run_ungrant)

    lo = sub.add_parser("local-only", help="serve a namespace only from local data, never asking upstream")
    add_config_args(lo)
    lo.add_argument("namespace", nargs="?", metavar="NAMESPACE")
    lo.add_argument("--off", action="store_true", help="forward it upstream again")
    lo.add_argument("--json", action="store_true")
    lo.set_defaults(run=run_local_only)


def _when(t: float | None) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M") if t else "-"


async def run_create(args: argparse.Namespace) -> int:
    from mirror.units import parse_duration

    expires = parse_duration(args.expires) if args.expires else None
    if expires is not None and expires <= 0:
        raise UsageError("--expires must be a positive duration")
    async with node_for(args) as node:
        token, row = await node.tokens.create(args.name, args.role, expires_in=expires, grants=args.grant)
        node.audit.record(cli_actor(), "token.create", row.name, role=row.role, id=row.id, grants=list(row.grants),
                          expires_at=row.expires_at)
    if args.json:
        print_json({"token": token, **row.public()})
    else:
        print(token)
        print(f"# {row.role} token {row.name!r} (id {row.id}); shown once, store it now", flush=True)
    return 0


async def run_list(args: argparse.Namespace) -> int:
    async with node_for(args) as node:
        rows = await node.catalog.tokens.all()
    if args.json:
        print_json([r.public() for r in rows])
        return 0
    print(f"{'ID':8}  {'NAME':20}  {'ROLE':9}  {'CREATED':16}  {'EXPIRES':16}  {'LAST USED':16}  STATE  GRANTS")
    now = dt.datetime.now(dt.timezone.utc).timestamp()
    for r in rows:
        state = "revoked" if r.revoked_at else ("expired" if r.expires_at and r.expires_at <= now else "active")
        print(f"{r.id:8}  {r.name:20}  {r.role:9}  {_when(r.created_at):16}  {_when(r.expires_at):16}  "
              f"{_when(r.last_used_at):16}  {state:7}{' 2fa' if r.totp_secret else ''}  {','.join(r.grants) or '-'}")
    return 0


async def run_revoke(args: argparse.Namespace) -> int:
    async with node_for(args) as node:
        row = await node.tokens.revoke(args.token, force=args.force)
        node.audit.record(cli_actor(), "token.revoke", row.name, id=row.id, role=row.role)
    print(f"revoked {row.name} ({row.id})")
    return 0


async def run_enroll(args: argparse.Namespace) -> int:
    async with node_for(args) as node:
        row = await node.tokens.find(args.token)
        if row.revoked_at is not None:
            raise UsageError(f"token {row.name!r} is revoked")
        secret, uri = await node.totp.enroll(row)
        node.audit.record(cli_actor(), "token.totp_enroll", row.name, id=row.id)
    if args.json:
        print_json({"name": row.name, "id": row.id, "secret": secret, "uri": uri})
    else:
        print(uri)
        print(f"# two-factor seed of {row.name!r} (base32 {secret}); add it to an authenticator app now, it is shown once")
    return 0


def _grantee(text: str | None) -> str:
    if not text:
        raise UsageError("--to ROLE_OR_TOKEN is required")
    return f"role:{text}" if text in ("admin", "developer", "auditor") else f"token:{text}"


async def run_grant(args: argparse.Namespace) -> int:
    async with node_for(args) as node:
        if args.list or not args.repo:
            rows = await node.catalog.tokens.grants()
            if args.json:
                print_json([{"repo": r, "to": g, "created_at": at, "created_by": by} for r, g, at, by in rows])
            else:
                for r, g, at, by in rows:
                    print(f"{r}  ->  {g}  ({_when(at)} by {by})")
            return 0
        grantee = _grantee(args.to)
        if grantee.startswith("token:"):
            await node.tokens.find(grantee[6:])
        if not load_config(args).upstream.service_token_file:
            print("mirror: note: [upstream] service_token_file is not set; the grant applies once it is")
        added = await node.catalog.tokens.grant(args.repo, grantee, cli_actor())
        node.audit.record(cli_actor(), "grant.add", args.repo, to=grantee)
    print(f"granted the service token for {args.repo} to {grantee}" + ("" if added else " (already granted)"))
    return 0


async def run_ungrant(args: argparse.Namespace) -> int:
    async with node_for(args) as node:
        removed = await node.catalog.tokens.ungrant(args.repo, _grantee(args.to))
        node.audit.record(cli_actor(), "grant.remove", args.repo, to=_grantee(args.to))
    print(f"withdrew {args.repo} from {_grantee(args.to)}" if removed else "no such grant")
    return 0 if removed else 1


async def run_local_only(args: argparse.Namespace) -> int:
    async with node_for(args) as node:
        if args.namespace:
            await node.catalog.tokens.set_local(args.namespace, not args.off)
            node.audit.record(cli_actor(), "policy.local_only", args.namespace, local=not args.off)
        names = sorted({*node.config.auth.local_only, *await node.catalog.tokens.local_namespaces()})
    if args.json:
        print_json({"local_only": names})
    else:
        for n in names:
            print(n)
    return 0
