"""Config and CLI gaps a new user trips over (issue 14 #13), through the real `mirror`
command as a subprocess: bad durations and watermarks stop the daemon at start naming the
key; a watch-list entry without `repo` is named; foreign MIRROR_* variables are ignored
with one warning while a typo of a real table's key stays an error; every command names
its data dir and read-only commands do not create one; `serve -v`; `--json` for pin,
unpin and thaw; thaw of a revision with nothing archived says so."""

from __future__ import annotations

import json
import queue
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mirror import config
from mirror.errors import ConfigError
from mirror.lifecycle.policy import Policy, Watermark
from tests.clihelp import clean_env
from tests.daemon import _PORT_LINE
from tests.conftest import MiB, bf16_like, safetensors_bytes
from tests.lifecycle_util import DAY, add_revision, open_node, past_clock, sha

KEY = "ab" * 32


def weights(seed: int) -> bytes:
    return safetensors_bytes(bf16_like(MiB, seed=seed), "BF16")


def mirror(*argv: str, cwd: Path | None = None, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mirror", *argv], capture_output=True, text=True, cwd=cwd,
                          env=clean_env(**env), timeout=timeout)


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a failed command: stderr is that line, after at most the
    data dir notice, and never a traceback."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and all(line.startswith("mirror: data dir ") for line in lines[:-1]), proc.stderr
    assert lines[-1].startswith("mirror: "), proc.stderr
    return lines[-1]


# --- durations and watermarks are parsed when the config is loaded ------------------------


@pytest.mark.parametrize(
    ("toml", "env", "key"),
    [
        ('[lifecycle]\nhigh_watermark = "lots"\n', {}, "lifecycle.high_watermark"),
        ('[lifecycle]\narchive_after = "3 parsecs"\n', {}, "lifecycle.archive_after"),
        ('[lifecycle]\ninterval = "hourly"\n', {}, "lifecycle.interval"),
        ('[lifecycle]\nlow_watermark = "95%"\n', {}, "lifecycle.low_watermark"),
        ("", {"MIRROR_LIFECYCLE_GC_GRACE": "soon"}, "lifecycle.gc_grace"),
    ],
)
def test_a_bad_duration_or_watermark_stops_serve_at_start(tmp_path: Path, toml: str, env: dict[str, str], key: str) -> None:
    cfg = tmp_path / "m.toml"
    cfg.write_text(toml)
    data = tmp_path / "data"
    # Before the fix the daemon started (and this run ended in the timeout).
    proc = mirror("serve", "--config", str(cfg), "--data-dir", str(data), "--port", "0",
                  "--upstream", "http://127.0.0.1:9", timeout=30, **env)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and f"'{key}'" in proc.stderr and "Traceback" not in proc.stderr
    assert not data.exists()


def test_lifecycle_values_are_parsed_once_at_load(tmp_path: Path) -> None:
    cfg = config.load(env={}, overrides={"lifecycle": {"archive_after": "2d", "gc_grace": 90, "interval": "1h",
                                                       "high_watermark": "500G", "low_watermark": "400GiB"}})
    v = cfg.lifecycle.parsed
    assert (v.archive_after, v.gc_grace, v.interval) == (2 * DAY, 90.0, 3600.0)
    assert (v.high, v.low) == (Watermark(size=500 << 30), Watermark(size=400 << 30))
    assert cfg.lifecycle.high_watermark == "500G"  # the user's text stays as written
    pol = Policy.from_config(cfg.lifecycle)
    assert (pol.archive_after, pol.gc_grace, pol.interval, pol.high, pol.low) == (2 * DAY, 90.0, 3600.0, v.high, v.low)
    path = tmp_path / "m.toml"
    path.write_text('[lifecycle]\nkeep_revisions = -1\n')
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: key 'lifecycle.keep_revisions'"):
        config.load(path, env={})


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [("lifecycle", "gc_grace", "nan"), ("lifecycle", "archive_after", "inf"), ("lifecycle", "high_watermark", "1e400"),
     ("lifecycle", "low_watermark", "-5G"), ("sync", "interval", "nan"), ("upstream", "read_timeout", "inf")],
)
def test_non_finite_or_negative_values_are_config_errors(table: str, key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"environment: key '{table}\.{key}'"):
        config.load(env={f"MIRROR_{table.upper()}_{key.upper()}": value})


def test_a_watch_list_entry_without_repo_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "m.toml"
    cfg.write_text('[[sync.repos]]\nrepo = "org/a"\n[[sync.repos]]\nrevisions = ["main"]\n')
    proc = mirror("sync", "--config", str(cfg), "--data-dir", str(tmp_path / "data"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "'sync.repos[1]'" in proc.stderr and "'repo'" in proc.stderr and "__init__" not in proc.stderr


# --- MIRROR_* environment -------------------------------------------------------------------


def test_foreign_mirror_variables_are_ignored_with_one_warning(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    proc = mirror("ls", "--data-dir", str(data), MIRROR_URL="http://deb.example", MIRROR_FOO_BAR="1")
    assert proc.returncode == 0 and proc.stdout == "no repos\n", proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "MIRROR_FOO_BAR" in warnings[0] and "MIRROR_URL" in warnings[0]


def test_a_typo_of_a_real_tables_key_is_still_an_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    proc = mirror("ls", "--data-dir", str(data), MIRROR_STORE_DATADIR="/srv/mirror")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "MIRROR_STORE_DATADIR" in proc.stderr and "MIRROR_STORE_DATA_DIR" in proc.stderr


# --- the data dir ---------------------------------------------------------------------------

READ_ONLY = [
    ("ls",), ("show", "org/m"), ("stats",), ("verify",), ("export", "org/m@main", "-o", "out.bundle"),
    ("keys", "show"), ("keys", "list"), ("pin", "org/m@main"), ("unpin", "org/m@main"),
    ("archive",), ("thaw", "org/m@main"), ("gc",),
]


@pytest.mark.parametrize("argv", READ_ONLY, ids=lambda a: " ".join(a[:2]))
def test_read_only_commands_refuse_a_missing_data_dir(tmp_path: Path, argv: tuple[str, ...]) -> None:
    proc = mirror(*argv, cwd=tmp_path)  # no config: the default ./data
    line = error_line(proc)
    assert proc.returncode == 2 and str(tmp_path / "data") in line and "does not exist" in line
    assert not (tmp_path / "data").exists()


def test_a_directory_that_is_not_a_mirror_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a mirror")
    line = error_line(mirror("ls", "--data-dir", str(tmp_path)))
    assert "not a model-mirror data dir" in line
    assert not (tmp_path / "LAYOUT").exists() and not (tmp_path / "catalog.db").exists()


def test_every_command_names_its_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "store"
    trust = mirror("keys", "trust", KEY, "--data-dir", str(data))  # a writer may create it
    assert trust.returncode == 0 and f"mirror: data dir {data} (--data-dir)" in trust.stderr.splitlines()
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'[store]\ndata_dir = "{data}"\n')
    ls = mirror("ls", "--json", "--config", str(cfg))
    assert ls.returncode == 0 and json.loads(ls.stdout) == []
    assert f"mirror: data dir {data} (store.data_dir in {cfg})" in ls.stderr.splitlines()
    stats = mirror("stats", cwd=tmp_path, MIRROR_STORE_DATA_DIR=str(data))
    assert stats.returncode == 0 and f"mirror: data dir {data} (MIRROR_STORE_DATA_DIR)" in stats.stderr.splitlines()


# --- -v, --json, thaw -----------------------------------------------------------------------


def test_serve_accepts_verbose(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mirror", "serve", "-v", "--port", "0", "--data-dir", str(tmp_path / "data"),
         "--upstream", "http://127.0.0.1:9"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True)  # type: ignore[union-attr]
    reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60  # generous: a cold start on a loaded 2-core machine
        while not any(_PORT_LINE.search(line) for line in seen) and time.monotonic() < deadline and proc.poll() is None:
            try:
                seen.append(lines.get(timeout=0.5))
            except queue.Empty:
                pass
        assert any(_PORT_LINE.search(line) for line in seen), "".join(seen)  # before the fix: exit 2, unrecognized -v
        assert any(" DEBUG mirror." in line for line in seen), "".join(seen)
    finally:
        proc.terminate()
        proc.wait(30)
        reader.join(10)
        proc.stderr.close()


@pytest.fixture
async def one_archived_one_hot(tmp_path: Path) -> Path:
    """A data dir with org/m@sha(1) archived and org/m@sha(2) never archived."""
    data = tmp_path / "data"
    clock = past_clock(90)
    svc = await open_node(data, clock)
    try:
        await add_revision(svc, "org/m", sha(1), {"w.safetensors": weights(11)})
        clock.advance(60 * DAY)
        assert (await svc.archiver.archive(older_than=DAY)).revisions
        await add_revision(svc, "org/m", sha(2), {"x.safetensors": weights(12)}, ref="main")
    finally:
        await svc.close()
    return data


def test_pin_and_unpin_speak_json(one_archived_one_hot: Path) -> None:
    d = ["--data-dir", str(one_archived_one_hot), "--json"]
    pin = mirror("pin", "org/m@main", "--label", "prod", *d)
    assert pin.returncode == 0, pin.stderr
    assert json.loads(pin.stdout) == {"repo": "org/m", "repo_type": "model", "commit": sha(2), "pinned": True, "label": "prod"}
    unpin = mirror("unpin", "org/m@main", *d)
    assert unpin.returncode == 0 and json.loads(unpin.stdout)["was_pinned"] is True
    again = mirror("unpin", "org/m@main", *d)
    assert again.returncode == 0 and json.loads(again.stdout) == {
        "repo": "org/m", "repo_type": "model", "commit": sha(2), "pinned": False, "was_pinned": False}


def audit_thaws(data: Path) -> int:
    with sqlite3.connect(data / "catalog.db") as db:
        return int(db.execute("SELECT COUNT(*) FROM audit WHERE action = 'thaw'").fetchone()[0])


def test_thaw_of_a_revision_never_archived_says_nothing_to_thaw(one_archived_one_hot: Path) -> None:
    data = one_archived_one_hot
    text = mirror("thaw", f"org/m@{sha(2)}", "--data-dir", str(data))
    assert text.returncode == 0 and text.stdout.startswith("nothing to thaw: "), text.stdout + text.stderr
    as_json = mirror("thaw", "org/m@main", "--data-dir", str(data), "--json")
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout) == {"revision": "org/m@main", "commit": sha(2), "thawed": False, "chunks": 0, "raw_bytes": 0}
    assert audit_thaws(data) == 0  # nothing happened, and the audit trail says so

    thawed = mirror("thaw", f"org/m@{sha(1)}", "--data-dir", str(data), "--json")
    report = json.loads(thawed.stdout)
    assert thawed.returncode == 0 and report["thawed"] is True and report["chunks"] > 0 and report["raw_bytes"] > 0
    assert audit_thaws(data) == 1
    twice = mirror("thaw", f"org/m@{sha(1)}", "--data-dir", str(data))
    assert twice.returncode == 0 and twice.stdout.startswith("nothing to thaw: ") and audit_thaws(data) == 1
    unknown = mirror("thaw", f"org/m@{sha(3)}", "--data-dir", str(data))
    assert unknown.returncode == 1 and "not in the catalog" in error_line(unknown)
