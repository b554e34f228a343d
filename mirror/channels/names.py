"""What releases and aliases may be called, and how release versions sort.

A release name is a semantic version, with or without a leading "v" ("v1.2.0",
"2.0.0-rc.1"); it resolves like a tag, so it must also be a valid Hub revision (no "+build"
part: the Hub's revision grammar has no "+"). An alias is a short name that resolves like a
branch ("prod", "staging", "canary-eu"): it starts with a letter, and it may not look like
a commit (a 7+ character hex string) or a release version, so no name means two things.
"""

from __future__ import annotations

import re

from mirror.errors import BadRequest

# semver.org's grammar without build metadata, with an optional "v".
_SEMVER = re.compile(
    r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?",
    re.ASCII,
)
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,62}", re.ASCII)
_HEXISH = re.compile(r"[0-9a-f]{7,40}", re.ASCII)


def release_version(name: str) -> str:
    """The semantic version a release name spells ("v1.2.0" -> "1.2.0"), or BadRequest."""
    if len(name) > 64 or not _SEMVER.fullmatch(name):
        raise BadRequest(f"release version {name!r} is not a semantic version like v1.2.0 or 1.2.0-rc.1")
    return name[1:] if name.startswith("v") else name


def version_key(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
    """Sort key by semver precedence: 1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0-beta < 1.0.0."""
    m = _SEMVER.fullmatch(version)
    if m is None:
        return (0, 0, 0, 0, ())
    pre = m.group(4)
    ids: tuple[tuple[int, int | str], ...] = ()
    if pre:
        ids = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), 0 if pre else 1, ids


def alias_name(name: str) -> str:
    if not _ALIAS.fullmatch(name):
        raise BadRequest(f"alias {name!r} must start with a letter and use letters, digits, '.', '_' or '-' (64 at most)")
    if _HEXISH.fullmatch(name):
        raise BadRequest(f"alias {name!r} looks like a commit sha; pick a name that does not")
    if _SEMVER.fullmatch(name):
        raise BadRequest(f"alias {name!r} looks like a release version; versions are for `mirror release create`")
    return name


