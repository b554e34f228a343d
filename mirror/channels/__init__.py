"""Releases and channels (design.md §9, issue 11): release control at the level of model
files on a LAN.

    names.py     what a release version and an alias may be called
    releases.py  Releases: the immutable registry (repo, version, commit, author, lineage)
    aliases.py   Channels: aliases (prod -> a commit), their history, rollback, and the
                 look-up every Hub route makes for a revision name (no upstream request)
    split.py     the sticky canary split (consistent hashing of the client's key)
    plan.py      a canary's plan: steps, interval, gates, failure limit, missing policy
    canary.py    CanaryController: advances, promotes and rolls back running canaries
    metrics.py   VersionMetrics: reported and observed metrics per version
    stats.py     Welch's t-test for `mirror metrics compare`
    webhook.py   Webhook: delivers the outbox of announcements, HMAC-signed, retried
    page.py      a page of channels on the wire (authority -> follower), checked
    follow.py    Follower: copies the releases and aliases `[channels] authority` decides

Who changes what: every alias change goes through `ChannelCatalog.change_alias` (one
transaction: row, history, announcement); the daemon and the CLI share that path, so a
rollback typed at a shell and one decided by the controller are the same event. A node
that follows an authority makes no change of its own: it copies the authority's
(catalog/channel_copy.py), and its `Channels` and `Releases` refuse local changes.
"""
