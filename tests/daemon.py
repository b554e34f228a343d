"""Start the real `mirror serve` as a subprocess on 127.0.0.1 for end-to-end tests.

`MirrorDaemon(data_dir, upstream_url, **config)` writes a TOML config, starts the daemon
on a free port (it logs the bound port), and offers `stop()` (SIGTERM, waits, returns the
exit code), `kill()` (SIGKILL) and `restart()` on the same data directory.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import urllib.request

_PORT_LINE = re.compile(r"serving on (https?)://127\.0\.0\.1:(\d+)")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


class MirrorDaemon:
    def __init__(self, data_dir: Path, upstream_url: str, env: dict[str, str] | None = None, **tables: dict[str, Any]) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.upstream_url = upstream_url
        self.extra_env = env or {}
        tables.setdefault("upstream", {})
        tables["upstream"].setdefault("url", upstream_url)
        tables["upstream"].setdefault("allow_private_redirects", True)
        tables["upstream"].setdefault("read_timeout", 10.0)
        tables.setdefault("store", {}).setdefault("data_dir", str(self.data_dir))
        tables.setdefault("server", {}).setdefault("port", 0)
        # The transport tests serve random bytes under model file names (a random
        # "model.safetensors" has no valid header); scanning is opted into by the tests
        # of the quarantine (tests/test_quarantine.py).
        tables.setdefault("policy", {}).setdefault("scan_pickles", False)
        self.config_path = self.data_dir.parent / f"{self.data_dir.name}.toml"
        lines = []
        for table, values in tables.items():
            lines.append(f"[{table}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        self.config_path.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.scheme = "http"  # "https" when the daemon serves TLS
        self.log: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "MirrorDaemon":
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MIRROR_", "HF_"))}
        env.update(self.extra_env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mirror", "serve", "--config", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        found = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.log.append(line.rstrip("\n"))
                m = _PORT_LINE.search(line)
                if m:
                    self.scheme, self.port = m.group(1), int(m.group(2))
                    found.set()

        self._reader = threading.Thread(target=pump, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not found.is_set():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                if self.proc.poll() is None:
                    self.proc.kill()
                self.proc.wait(10)
                self._reap()
                raise RuntimeError("mirror did not start:\n" + "\n".join(self.log[-30:]))
            found.wait(0.05)
        return self

    def stop(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._reap()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self._reap()

    def _reap(self) -> None:
        if self._reader:
            self._reader.join(5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def restart(self) -> "MirrorDaemon":
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        return self.start()

    def get(self, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def __enter__(self) -> "MirrorDaemon":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
