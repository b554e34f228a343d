"""config.example.toml is loadable and documents every key with its default."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from mirror import config

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"


def test_example_loads_and_equals_defaults() -> None:
    loaded = config.load(EXAMPLE, env={})
    defaults = config.load(None, env={})
    for table in ("server", "upstream", "store", "cache", "sync", "lifecycle"):
        assert getattr(loaded, table) == getattr(defaults, table), table


def test_example_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    for table, cls in config._TABLES.items():
        assert f"[{table}]" in text
        for f in dataclasses.fields(cls):
            documented = re.search(rf"^#?\s*{f.name}\s*=", text, re.M) or f"[[{table}.{f.name}]]" in text
            assert documented, f"{table}.{f.name} is not documented"
