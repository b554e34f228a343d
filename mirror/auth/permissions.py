"""The permission table: which role may do which action. One table, default deny, read by
the HTTP edge (every route carries an action: http/routes.py) and by the CLI.

Roles: `admin` (everything), `developer` (reads within its grants, may ask for pulls),
`auditor` (metadata, cache listings, releases and the audit log, the web dashboard; file
bytes only with `[auth] auditor_files`), `anonymous` (a caller without a mirror token:
public reads when `[auth] anonymous_read`, else nothing but health and the dashboard's
sign-in form; the dashboard itself only with `[auth] anonymous_ui`), `peer` (another mirror node,
authenticated by its key on the peer routes only: peers/auth.py).

Repo-scoped actions (`SCOPED`) are further limited by the caller's grants (a developer)
and by the repo rules (auth/policy.py); gated and private repos still need upstream's
yes for the caller's Hub token, or an admin's service-token grant (resolve/access.py).
"""

from __future__ import annotations

from mirror.config import AuthConfig

ACTIONS: dict[str, str] = {
    "health": "liveness and readiness (/healthz, /readyz)",
    "hub.read": "repo metadata: info, tree, paths-info, refs, commits",
    "files.read": "file bytes: resolve GET and HEAD",
    "pull.request": "ask the mirror to fetch a revision (pull, a sync run)",
    "cache.read": "list the cache, stats, show a revision, peers and quarantine status",
    "cache.write": "evict, gc, archive, thaw, pin, import, export, repair, quarantine release",
    "releases.read": "read releases, channels and aliases",
    "releases.write": "create releases, move channels and aliases, roll back",
    "metrics.report": "report per-version metrics (POST /_admin/metrics)",
    "tokens.manage": "create and revoke tokens, grant roles and service-token grants",
    "config.manage": "upstream token, node key, peer trust, local-only namespaces",
    "audit.read": "read, export and verify the audit log",
    "metrics.read": "Prometheus metrics",
    "ui.read": "the web dashboard",
    "ui.public": "the dashboard's sign-in form and stylesheet (anyone)",
    "peer.api": "the peer API (other mirror nodes, by key)",
}

SCOPED = frozenset({"hub.read", "files.read", "pull.request"})

ROLES = ("admin", "developer", "auditor")

_TABLE: dict[str, frozenset[str]] = {
    "admin": frozenset(a for a in ACTIONS if a != "peer.api"),
    "developer": frozenset({"health", "hub.read", "files.read", "pull.request", "releases.read", "metrics.report",
                            "ui.public"}),
    "auditor": frozenset({"health", "hub.read", "cache.read", "releases.read", "audit.read", "metrics.read", "ui.read",
                          "ui.public"}),
    "anonymous": frozenset({"health", "hub.read", "files.read", "ui.public"}),
    "peer": frozenset({"health", "peer.api"}),
}


# What each CLI command does, in the same table's terms. The CLI runs as the operator
# who owns the data directory (its key, its catalog): an admin. With `MIRROR_TOKEN`
# set, a command is checked against that token's role exactly as the HTTP admin API
# checks the same action (cli/__init__.py).
CLI_COMMANDS: dict[str, str] = {
    "serve": "config.manage", "pull": "pull.request", "sync": "pull.request",
    "ls": "cache.read", "show": "cache.read", "stats": "cache.read", "peers": "cache.read", "doctor": "cache.read",
    "verify": "cache.read", "pin": "cache.write", "unpin": "cache.write", "archive": "cache.write", "thaw": "cache.write",
    "gc": "cache.write", "export": "cache.write", "import": "cache.write", "import-hf-cache": "cache.write",
    "quarantine": "cache.write", "keys": "config.manage", "local-only": "config.manage",
    "token": "tokens.manage", "grant": "tokens.manage", "ungrant": "tokens.manage", "audit": "audit.read",
    "release": "releases.write", "alias": "releases.write",
    "webhook": "config.manage",
    "metrics": "metrics.report",
}
# Sub-actions that only read (the command's action otherwise).
CLI_READS: dict[tuple[str, str], str] = {
    ("quarantine", "list"): "cache.read", ("quarantine", "show"): "cache.read", ("keys", "show"): "cache.read",
    ("keys", "list"): "cache.read", ("token", "list"): "tokens.manage", ("webhook", "status"): "cache.read",
    ("release", "list"): "releases.read", ("release", "show"): "releases.read", ("alias", "get"): "releases.read",
    ("alias", "list"): "releases.read", ("alias", "history"): "releases.read", ("alias", "at"): "releases.read",
    ("metrics", "show"): "releases.read", ("metrics", "compare"): "releases.read",
    ("alias", "sync-status"): "releases.read",
}


def cli_action(command: str, sub: str | None = None, *, repair: bool = False) -> str:
    """The action of a CLI command (default deny: an unknown command needs config.manage)."""
    if command == "verify" and repair:
        return "cache.write"
    return CLI_READS.get((command, sub or ""), CLI_COMMANDS.get(command, "config.manage"))


def allowed(role: str, action: str, config: AuthConfig) -> bool:
    """Whether `role` may perform `action` at all (default deny: unknown roles and
    actions are refused)."""
    if action not in ACTIONS:
        return False
    if role == "anonymous" and action == "ui.read":
        return config.anonymous_ui  # its own switch: the dashboard shows the audit log
    if role == "anonymous" and not config.anonymous_read:
        return action in ("health", "ui.public")
    if role == "auditor" and action == "files.read":
        return config.auditor_files
    return action in _TABLE.get(role, frozenset())


def table(config: AuthConfig) -> dict[str, dict[str, bool]]:
    """The whole table under `config` (role -> action -> allowed), for docs and tests."""
    return {role: {a: allowed(role, a, config) for a in ACTIONS} for role in (*ROLES, "anonymous", "peer")}
