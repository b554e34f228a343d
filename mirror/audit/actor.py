"""Audit actor names for work nobody's token asked for: a CLI command (the OS user who
ran it) and the daemon's scheduled jobs. Requests name theirs by `Caller.actor`."""

from __future__ import annotations

import os

LIFECYCLE = "lifecycle"  # archive, thaw, evict and gc rounds of the daemon's schedule
SCHEDULED = "sync-schedule"  # the daemon's `[sync] interval` rounds


def cli_actor() -> str:
    """'cli:<os user>' for the real uid (not $USER, which the caller sets), with the
    sudo caller when root runs it through sudo: 'cli:root(sudo:alice)'."""
    uid = os.getuid() if hasattr(os, "getuid") else -1
    name = str(uid)
    try:
        import pwd

        name = pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):  # no passwd entry (a container's bare uid): the number
        pass
    sudo = os.environ.get("SUDO_USER", "") if uid == 0 else ""
    return f"cli:{name}" + (f"(sudo:{sudo})" if sudo and sudo != name else "")
