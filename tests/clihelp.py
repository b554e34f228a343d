"""Helpers for CLI tests: write a config for a data directory and run `mirror` in or out
of process.

`write_config(path, data_dir, upstream, repos=[...], **tables)` writes a TOML file whose
`[[sync.repos]]` come from dicts; `run_cli(capsys, *argv)` runs `mirror.cli.main` in this
process and returns (exit code, stdout, stderr); `spawn(*argv)` starts a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.daemon import _toml_value


def write_config(path: Path, data_dir: Path, upstream: str, repos: list[dict[str, Any]] | None = None,
                 **tables: dict[str, Any]) -> Path:
    tables.setdefault("upstream", {}).update({"url": upstream, "allow_private_redirects": True, "read_timeout": 10.0})
    tables.setdefault("store", {}).setdefault("data_dir", str(data_dir))
    lines: list[str] = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    for repo in repos or []:
        lines.append("[[sync.repos]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in repo.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIRROR_", "HF_"))}
    env.update(extra)
    return env


def run_cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    from mirror.cli import main

    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: Any, *argv: str) -> tuple[int, Any]:
    code, out, err = run_cli(capsys, *argv, "--json")
    try:
        return code, json.loads(out)
    except json.JSONDecodeError:
        raise AssertionError(f"not JSON (exit {code}): {out!r} {err!r}") from None


def spawn(*argv: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mirror", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=clean_env(), **kwargs)
