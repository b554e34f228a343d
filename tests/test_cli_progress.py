"""Progress of long CLI work (issue 12 item 7), through the real `mirror` command as a
subprocess: on a terminal (a pseudo-terminal made with `pty`) pull, verify, archive,
export and import draw the library's bar (tqdm: `NN%|` with a rate); with pipes, or with
`--json` on a terminal, they draw none, stderr holds only the data dir notice (plus, for
pull and sync, the whole progress lines that keep a log from going silent: issue 14,
tests/test_hardening_cli_failures.py), and `--json` output parses.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.clihelp import clean_env, write_config
from tests.conftest import MiB, random_bytes
from tests.fakehub import FakeHub

# tqdm's bar: "label:  42%|████      | 1.00M/2.38M [00:01<00:01, 1.2MB/s]"
BAR = re.compile(r"(\d+)%\|")


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("progress")
    with FakeHub.running() as hub:
        hub.commit("org/m", {"model.bin": random_bytes(3 * MiB, seed=21), "config.json": b"{}"})
        hub.commit("org/n", {"weights.bin": random_bytes(MiB, seed=22)})
        yield write_config(tmp / "m.toml", tmp / "data", hub.url, lifecycle={"keep_revisions": 0})


def on_pty(*argv: str, timeout: float = 120.0) -> tuple[int, str, str]:
    """Run `mirror ARGV` with stderr on a pseudo-terminal (100 columns) and stdout on a
    pipe; return (exit code, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "mirror", *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=slave, env=clean_env(), text=True)
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    piece = os.read(master, 65536)
                except OSError:  # EIO: every writer of the terminal has closed it
                    break
                if not piece:
                    break
                shown += piece
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise AssertionError(f"mirror {' '.join(argv)} did not finish in {timeout} s: {shown[-500:]!r}")
        out = proc.stdout.read() if proc.stdout else ""
        return proc.wait(30), out, shown.decode("utf-8", "replace")
    finally:
        os.close(master)
        if proc.stdout:
            proc.stdout.close()


def piped(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mirror", *argv], capture_output=True, text=True, env=clean_env(),
                          timeout=120, stdin=subprocess.DEVNULL)


def only_notice(stderr: str) -> bool:
    return len(stderr.splitlines()) == 1 and stderr.startswith("mirror: data dir ")


# The whole progress lines pull and sync write off a terminal (issue 14).
LINE = re.compile(r"^[\w ./-]+: +\d+\.\d% ", re.M)


def no_progress(stderr: str) -> bool:
    """No bar, no redraw and no progress line (log records may be there)."""
    return not BAR.search(stderr) and not LINE.search(stderr) and "\r" not in stderr and "\x1b" not in stderr


def test_a_terminal_shows_the_bar(cfg: Path, tmp_path: Path) -> None:
    code, _out, shown = on_pty("pull", "org/m", "--config", str(cfg))
    assert code == 0, shown
    shares = [int(s) for s in BAR.findall(shown)]
    assert shares and shares[-1] == 100 and "pull org/m:" in shown, shown
    assert re.search(r"\d(\.\d+)?[kMG]?B/s\]", shown), shown  # a byte rate, from the library
    assert "\r" in shown  # redrawn in place, not a line per step

    code, _out, shown = on_pty("verify", "--config", str(cfg))
    assert code == 0 and "verify:" in shown and BAR.findall(shown)[-1] == "100" and "chunk/s]" in shown, shown

    code, _out, shown = on_pty("export", "org/m", "-o", str(tmp_path / "b.bundle"), "--config", str(cfg))
    assert code == 0 and "export:" in shown and BAR.findall(shown)[-1] == "100", shown
    other = write_config(tmp_path / "other.toml", tmp_path / "other", "http://127.0.0.1:9", lifecycle={"keep_revisions": 0})
    key = json.loads(piped("keys", "show", "--json", "--config", str(cfg)).stdout)["public_key"]
    assert piped("keys", "trust", key, "--config", str(other)).returncode == 0
    code, _out, shown = on_pty("import", str(tmp_path / "b.bundle"), "--config", str(other))
    assert code == 0 and "import:" in shown and BAR.findall(shown)[-1] == "100", shown

    code, _out, shown = on_pty("archive", "--older-than", "0s", "--config", str(other))
    assert code == 0 and "archive:" in shown and BAR.findall(shown)[-1] == "100", shown

    # --json on a terminal: no bar, and stdout is the JSON document.
    code, out, shown = on_pty("verify", "--json", "--config", str(cfg))
    assert code == 0 and json.loads(out)["ok"] is True
    assert not BAR.search(shown) and only_notice(shown.replace("\r\n", "\n")), shown


def test_pipes_and_json_show_no_bar(cfg: Path, tmp_path: Path) -> None:
    pull = piped("pull", "org/n", "--config", str(cfg))
    assert pull.returncode == 0, pull.stderr
    assert not BAR.search(pull.stderr) and "\r" not in pull.stderr and "\x1b" not in pull.stderr
    assert re.search(r"^pull org/n: 100\.0% ", pull.stderr, re.M), pull.stderr  # the log lines of issue 14
    pull = piped("pull", "org/n", "--json", "--config", str(cfg))  # cached now: no fetch to log either
    assert pull.returncode == 0 and only_notice(pull.stderr), pull.stderr
    json.loads(pull.stdout)

    bundle = tmp_path / "n.bundle"
    for argv in (("verify",), ("export", "org/n", "-o", str(bundle)), ("gc",), ("archive", "--older-than", "0s"),
                 ("verify", "--json"), ("gc", "--json"), ("archive", "--json")):
        proc = piped(*argv, "--config", str(cfg))
        assert proc.returncode == 0 and no_progress(proc.stderr), (argv, proc.stderr)
        if argv[0] == "archive" and "--json" not in argv:
            assert proc.stdout.startswith("archived 2 revisions"), proc.stdout  # work was done, silently
        if "--json" in argv:
            json.loads(proc.stdout)
    other = write_config(tmp_path / "other.toml", tmp_path / "other", "http://127.0.0.1:9", lifecycle={"keep_revisions": 0})
    key = json.loads(piped("keys", "show", "--json", "--config", str(cfg)).stdout)["public_key"]
    assert piped("keys", "trust", key, "--config", str(other)).returncode == 0
    proc = piped("import", str(bundle), "--config", str(other))
    assert proc.returncode == 0 and no_progress(proc.stderr), proc.stderr
