"""Templates of the dashboard: one jinja2 environment over `ui/templates/`, autoescaping
every value (repo names, paths, alias reasons and audit details come from users and
upstream), failing on an undefined name instead of printing nothing, with the filters
pages share (sizes, times, short commits, shares) and the figures (ui/figures.py)."""

from __future__ import annotations

import json
import math
import time
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined

from mirror.model import RepoKey
from mirror.ui import figures
from mirror.units import human_bytes


def when(t: float | None) -> str:
    """'2026-11-01 09:00:00 UTC', or 'never'."""
    if t is None or not math.isfinite(t):
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def ago(t: float | None, now: float | None = None) -> str:
    """'3 min ago' (rounded down to the largest unit), or 'never'."""
    if t is None or not math.isfinite(t):
        return "never"
    s = max(0.0, (now if now is not None else time.time()) - t)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{int(s // size)} {unit} ago"
    return f"{int(s)} s ago"


def share(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def url(page: str, **params: Any) -> str:
    """A dashboard link: `/ui/<page>?...` (values are query-encoded; the template escapes
    the whole link once more for the attribute)."""
    query = urlencode({k: str(v) for k, v in params.items() if v is not None})
    return (f"/ui/{page}" if page else "/ui") + (f"?{query}" if query else "")


def repo_spec(key: RepoKey) -> str:
    """The repo as links name it: 'org/name', 'datasets/org/name'."""
    return str(key)


def to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def make_env() -> Environment:
    env = Environment(loader=PackageLoader("mirror.ui", "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(bytes=human_bytes, when=when, ago=ago, share=share, short=lambda s: (s or "")[:12],
                       spec=repo_spec, tojson_text=to_json)
    env.globals.update(url=url, savings_chart=figures.savings_chart, repo_bar=figures.repo_bar,
                       traffic_chart=figures.traffic_chart, canary_bar=figures.canary_bar,
                       store_gauge=figures.store_gauge)
    return env


# The files under ui/static/ the daemon serves, with their types (nothing else is served).
STATIC_TYPES = {"style.css": "text/css", "favicon.svg": "image/svg+xml"}


class Renderer:
    """Renders pages to strings and holds the static files; built once per application."""

    def __init__(self) -> None:
        self.env = make_env()
        folder = resources.files("mirror.ui") / "static"
        self.static = {name: (folder.joinpath(name).read_bytes(), ctype) for name, ctype in STATIC_TYPES.items()}

    def page(self, name: str, **context: Any) -> str:
        return self.env.get_template(name).render(**context)
