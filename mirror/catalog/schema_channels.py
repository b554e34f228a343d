"""Schema of migration 9: releases, aliases (channels), their history, per-version
metrics and traffic, and the webhook outbox (issue 11; the SQL lives in
catalog/channels.py and catalog/versions.py).

    releases(repo, name, version, commit_sha, author, created_at,
             params, datasets, meta, note)          PK(repo, name)
        name      as given and as it resolves ("v1.2.0"); version its semver ("1.2.0")
        params    JSON object of training parameters; datasets JSON list of
                  "repo@commit" lineage; meta free JSON object
        immutable: a trigger refuses every UPDATE; a DELETE is refused while an alias
        (either side of a canary) names the release

    aliases(repo, name, commit_sha, release, canary_sha, canary_release, weight,
            plan, salt, started_at, next_at, failures, holding, updated_at)  PK(repo, name)
        commit_sha/release   the stable target (release = '' when set by commit)
        canary_sha           the canary target, NULL without a canary
        weight               percent of clients sent to the canary (0..100)
        plan                 JSON canary plan: step, every, max, gates, failure_limit,
                             on_missing (channels/plan.py)
        salt                 random per canary: the sticky split's hash key
        next_at              when the controller looks next (wall clock)
        failures             consecutive failed gate checks
        holding              the reason the canary is held (missing metrics), '' if not

    alias_events(id, repo, name, at, actor, action, from_sha, to_sha, canary_sha,
                 weight, reason, detail)
        one row per change; to_sha/canary_sha/weight are the state *after* the change,
        so `alias at T` is the last row at or before T. Append only (triggers).

    version_metrics(id, repo, commit_sha, name, value, client, at, reporter)
    version_traffic(repo, commit_sha, minute, requests, errors, bytes)  what the mirror
        served per version, in minute buckets (minute = floor(unix time / 60))
    version_clients(repo, commit_sha, client, first_at, last_at)  distinct clients
        (client = a hash of the sticky client key, never a token)

    webhook_outbox(id, at, event, body, attempts, next_at, last_error, delivered_at,
                   failed_at)  announcements waiting for delivery (channels/webhook.py)
"""

MIGRATION_9 = """
CREATE TABLE releases(
    repo INTEGER NOT NULL REFERENCES repos(id),
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    author TEXT NOT NULL,
    created_at REAL NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    datasets TEXT NOT NULL DEFAULT '[]',
    meta TEXT NOT NULL DEFAULT '{}',
    note TEXT NOT NULL DEFAULT '',
    PRIMARY KEY(repo, name)
);
CREATE INDEX releases_by_commit ON releases(repo, commit_sha);
CREATE TRIGGER releases_immutable BEFORE UPDATE ON releases
BEGIN SELECT RAISE(ABORT, 'releases are immutable'); END;
CREATE TABLE aliases(
    repo INTEGER NOT NULL REFERENCES repos(id),
    name TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    release TEXT NOT NULL DEFAULT '',
    canary_sha TEXT,
    canary_release TEXT NOT NULL DEFAULT '',
    weight REAL NOT NULL DEFAULT 0 CHECK(weight >= 0 AND weight <= 100),
    plan TEXT,
    salt TEXT NOT NULL DEFAULT '',
    started_at REAL,
    next_at REAL,
    failures INTEGER NOT NULL DEFAULT 0,
    holding TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL,
    PRIMARY KEY(repo, name)
);
CREATE INDEX aliases_by_commit ON aliases(repo, commit_sha);
CREATE TRIGGER releases_in_use BEFORE DELETE ON releases
WHEN EXISTS(SELECT 1 FROM aliases a WHERE a.repo = OLD.repo AND (a.release = OLD.name OR a.canary_release = OLD.name))
BEGIN SELECT RAISE(ABORT, 'an alias points at this release'); END;
CREATE TABLE alias_events(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo INTEGER NOT NULL,
    name TEXT NOT NULL,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    from_sha TEXT,
    to_sha TEXT,
    canary_sha TEXT,
    weight REAL NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX alias_events_by_alias ON alias_events(repo, name, at);
CREATE TRIGGER alias_events_no_update BEFORE UPDATE ON alias_events
BEGIN SELECT RAISE(ABORT, 'alias history is append-only'); END;
CREATE TRIGGER alias_events_no_delete BEFORE DELETE ON alias_events
BEGIN SELECT RAISE(ABORT, 'alias history is append-only'); END;
CREATE TABLE version_metrics(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo INTEGER NOT NULL,
    commit_sha TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    client TEXT NOT NULL DEFAULT '',
    at REAL NOT NULL,
    reporter TEXT NOT NULL DEFAULT ''
);
CREATE INDEX version_metrics_by_version ON version_metrics(repo, commit_sha, name, at);
CREATE TABLE version_traffic(
    repo INTEGER NOT NULL,
    commit_sha TEXT NOT NULL,
    minute INTEGER NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(repo, commit_sha, minute)
);
CREATE TABLE version_clients(
    repo INTEGER NOT NULL,
    commit_sha TEXT NOT NULL,
    client TEXT NOT NULL,
    first_at REAL NOT NULL,
    last_at REAL NOT NULL,
    PRIMARY KEY(repo, commit_sha, client)
);
CREATE INDEX version_clients_by_time ON version_clients(repo, commit_sha, last_at);
CREATE TABLE webhook_outbox(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    delivered_at REAL,
    failed_at REAL
);
CREATE INDEX webhook_outbox_due ON webhook_outbox(delivered_at, failed_at, next_at);
"""
