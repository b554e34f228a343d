"""Shared pieces of the end-to-end proxy tests: client environment, fixtures and helpers.

huggingface_hub reads its environment once, at import; so this module sets it before any
test module imports the client. The mirror's URL is passed explicitly (`endpoint=`).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

_HF_HOME = tempfile.mkdtemp(prefix="mirror-tests-hf-home-")
atexit.register(shutil.rmtree, _HF_HOME, True)
os.environ.update(
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_UPDATE_CHECK="1",
    HF_HUB_DISABLE_XET="1",
    NO_PROXY="127.0.0.1,localhost",
    HF_HOME=_HF_HOME,
    DISABLE_SAFETENSORS_CONVERSION="1",
)
for _var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
    os.environ.pop(_var, None)

from tests.daemon import MirrorDaemon  # noqa: E402
from tests.fakehub import FakeHub  # noqa: E402

MiB = 1 << 20
TOKEN = "hf_SENTINELuser_allowed"
OTHER = "hf_SENTINELuser_other"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rand(n: int, seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(n)


def raw(url: str, method: str = "GET", headers: dict[str, str] | None = None, data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request, no redirects followed -> (status, headers, body)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def start_mirror(tmp: Path, hub: FakeHub, **tables: dict[str, object]) -> MirrorDaemon:
    return MirrorDaemon(tmp / "data", hub.url, **tables).start()


def log_mark(m: MirrorDaemon, timeout: float = 10.0) -> int:
    """A place in the daemon's log after the lines of every request answered so far:
    one request with a fresh id (a 404: failures always log), then wait for its line.
    The daemon writes its access lines in order, so every earlier one is before it."""
    rid = f"mark-{uuid.uuid4().hex}"
    raw(m.url + "/_log-mark", headers={"X-Request-Id": rid})
    deadline = time.monotonic() + timeout
    while True:
        for i in range(len(m.log) - 1, -1, -1):
            if f"id={rid}" in m.log[i]:
                return i + 1
        assert time.monotonic() < deadline, f"no access line for {rid}: {m.log[-5:]}"
        time.sleep(0.02)


def access_between(m: MirrorDaemon, start: int, end: int) -> list[str]:
    """The access lines between two `log_mark`s (the marks' own lines left out)."""
    return [line for line in m.log[start:end] if "mirror.access" in line and '"GET /_log-mark"' not in line]


def access_lines(m: MirrorDaemon, needle: str) -> list[str]:
    return [line for line in m.log if "mirror.access" in line and needle in line]
