"""Quarantine of unsafe model files (issue 10 item 7), end to end: a real daemon, the fake
Hub and the real huggingface_hub client. Malicious pickles are built here (a class whose
`__reduce__` calls `os.system`), raw and inside a torch-style zip archive; they must be
refused with 403 `FileQuarantined` before any of their bytes reach a client, until an
admin releases them with the CLI. Safetensors headers are checked; `[policy]
min_upstream_age` refuses fresh commits of new repos."""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.hubenv import MiB, access_lines, rand, raw, sha256, start_mirror  # isort: skip

import pytest
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from tests.clihelp import clean_env
from tests.daemon import MirrorDaemon
from tests.fakehub import FakeHub


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned",))


EVIL = pickle.dumps(_Evil())
# Scanning is on by default; the test daemon turns it off unless asked (tests/daemon.py).
SCAN = {"scan_pickles": True}
CLEAN = pickle.dumps(collections.OrderedDict(weights=[[0.5, 1.5], [2.0, 3.0]], step=7))


def torch_zip(data_pkl: bytes, pad: int = 0) -> bytes:
    """A torch.save-style archive: `archive/data.pkl` and friends, stored uncompressed."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/version", "3\n")
        if pad:
            z.writestr("archive/data/0", rand(pad, 5))
    return buf.getvalue()


def safetensors(n_values: int, *, claim: int | None = None) -> bytes:
    """One F32 tensor of `n_values`; `claim` declares a different size (offsets past the end)."""
    nbytes = 4 * n_values
    end = nbytes if claim is None else claim
    header = json.dumps({"w": {"dtype": "F32", "shape": [end // 4], "data_offsets": [0, end]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + rand(nbytes, 11)


def cli(m: MirrorDaemon, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mirror", *argv, "--config", str(m.config_path)],
                          capture_output=True, text=True, env=clean_env(), timeout=60)


def cli_json(m: MirrorDaemon, *argv: str) -> Any:
    out = cli(m, *argv, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def refused(err: pytest.ExceptionInfo[HfHubHTTPError]) -> tuple[int, str, str]:
    r = err.value.response
    return r.status_code, r.headers.get("X-Error-Code", ""), r.headers.get("X-Error-Message", "")


def no_file_holds(root: Path, data: bytes) -> bool:
    """No file under `root` (a client's cache) holds `data` or a prefix of it."""
    for p in root.rglob("*"):
        if p.is_file() and p.stat().st_size and data.startswith(p.read_bytes()[:64]):
            return False
    return True


def test_malicious_pickles_refused_clean_served_release_and_restart(hub: FakeHub, tmp_path: Path) -> None:
    evil_zip = torch_zip(EVIL, pad=300_000)
    clean_zip = torch_zip(CLEAN, pad=200_000)
    hub.commit("org/m", {"evil.pkl": EVIL, "pytorch_model.bin": evil_zip, "clean.pkl": CLEAN,
                         "clean_model.pt": clean_zip, "config.json": b"{}"})
    m = start_mirror(tmp_path, hub, policy=SCAN)
    cache = tmp_path / "hf"
    try:
        # The client's first download: HEAD passes (nothing known yet), GET is refused
        # after the scan, before any byte.
        for name in ("evil.pkl", "pytorch_model.bin"):
            with pytest.raises(HfHubHTTPError) as err:
                hf_hub_download("org/m", name, endpoint=m.url, cache_dir=cache)
            status, code, message = refused(err)
            assert (status, code) == (403, "FileQuarantined"), message
            assert "posix.system" in message and "mirror quarantine release" in message
        assert no_file_holds(cache, EVIL) and no_file_holds(cache, evil_zip)
        # Known quarantined: refused at once, as a 403 with a JSON error body (HEAD, mere
        # metadata, still answers: huggingface_hub then reports the GET's 403 as is).
        status, h, body = raw(m.url + "/org/m/resolve/main/pytorch_model.bin")
        assert (status, h["X-Error-Code"]) == (403, "FileQuarantined")
        assert "posix.system" in json.loads(body)["error"] and evil_zip[:64] not in body
        with pytest.raises(HfHubHTTPError) as err:
            hf_hub_download("org/m", "evil.pkl", endpoint=m.url, cache_dir=cache)
        assert refused(err)[:2] == (403, "FileQuarantined")
        gets = [line for line in access_lines(m, "evil.pkl") if '"GET ' in line]
        assert gets and all('" 403 ' in line for line in gets)
        # Clean pickles (raw and zipped) are served whole, and they are all that was served.
        for name, data in (("clean.pkl", CLEAN), ("clean_model.pt", clean_zip)):
            assert Path(hf_hub_download("org/m", name, endpoint=m.url, cache_dir=cache)).read_bytes() == data
        assert _served(m, len(CLEAN) + len(clean_zip)) == len(CLEAN) + len(clean_zip)

        listed = {s["path"]: s for s in cli_json(m, "quarantine", "list")}
        assert set(listed) == {"evil.pkl", "pytorch_model.bin"}
        assert listed["evil.pkl"]["verdict"] == "unsafe" and "posix.system" in listed["evil.pkl"]["findings"]
        shown = cli_json(m, "quarantine", "show", "org/m@main:pytorch_model.bin")
        assert shown["quarantined"] and shown["identity"] == f"sha256:{sha256(evil_zip)}"
        everything = {s["path"]: s["verdict"] for s in cli_json(m, "quarantine", "list", "--all")}
        assert everything == {"evil.pkl": "unsafe", "pytorch_model.bin": "unsafe", "clean.pkl": "clean",
                              "clean_model.pt": "clean"}

        # The verdict survives a restart (the content is stored by now: refused from the
        # store, upstream not asked for its bytes again).
        assert m.stop() == 0
        hub.reset_counters()
        m.start()
        status, h, body = raw(m.url + "/org/m/resolve/main/evil.pkl")
        assert (status, h["X-Error-Code"]) == (403, "FileQuarantined") and EVIL not in body
        assert hub.count("GET", path_contains="evil.pkl") == 0

        # An admin releases one; the running daemon serves it at the next request.
        rel = cli(m, "quarantine", "release", listed["evil.pkl"]["identity"], "--reason", "test fixture")
        assert rel.returncode == 0, rel.stderr
        assert "released" in rel.stdout
        status, _, body = raw(m.url + "/org/m/resolve/main/evil.pkl")
        assert status == 200 and body == EVIL
        again = cli(m, "quarantine", "release", listed["evil.pkl"]["identity"])
        assert again.returncode != 0 and "not quarantined" in again.stderr
        still = cli_json(m, "quarantine", "list")
        assert [s["path"] for s in still] == ["pytorch_model.bin"]
        shown = cli_json(m, "quarantine", "show", listed["evil.pkl"]["identity"][:20])
        assert shown["released_by"].startswith("cli:") and shown["release_reason"] == "test fixture"
        assert raw(m.url + "/org/m/resolve/main/pytorch_model.bin")[0] == 403
    finally:
        m.stop()
    # Quarantines, refusals and the release are in the audit log (written by the daemon
    # and the CLI), and the chain verifies.
    records = cli_json(m, "audit", "--action", "quarantine")
    actions = {r["action"] for r in records}
    assert {"quarantine.add", "quarantine.refused", "quarantine.release"} <= actions, actions
    assert any(r["action"] == "quarantine.release" and r["actor"].startswith("cli:") for r in records)
    assert cli(m, "audit", "verify").returncode == 0


def test_safetensors_headers_are_validated(hub: FakeHub, tmp_path: Path) -> None:
    good = safetensors(300_000)  # 1.2 MB: streamed from the fill, header checked first
    bad = safetensors(300_000, claim=4 * 400_000)  # data_offsets end past the file
    hub.commit("org/st", {"good.safetensors": good, "bad.safetensors": bad})
    m = start_mirror(tmp_path, hub, policy=SCAN)
    cache = tmp_path / "hf"
    try:
        assert Path(hf_hub_download("org/st", "good.safetensors", endpoint=m.url, cache_dir=cache)).read_bytes() == good
        with pytest.raises(HfHubHTTPError) as err:
            hf_hub_download("org/st", "bad.safetensors", endpoint=m.url, cache_dir=cache)
        status, code, message = refused(err)
        assert (status, code) == (403, "FileQuarantined") and "data_offsets" in message
        assert no_file_holds(cache, bad)
        # Recorded once the fill verified the bytes; refused from then on without a scan.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            listed = cli_json(m, "quarantine", "list", "--all")
            if len(listed) == 2:
                break
            time.sleep(0.2)
        assert {s["path"]: s["verdict"] for s in listed} == {"good.safetensors": "clean", "bad.safetensors": "unsafe"}
        status, h, body = raw(m.url + "/org/st/resolve/main/bad.safetensors")
        assert (status, h["X-Error-Code"]) == (403, "FileQuarantined") and bad[8:40] not in body
        assert raw(m.url + "/org/st/resolve/main/good.safetensors")[2] == good
    finally:
        m.stop()


def test_stored_files_are_scanned_from_the_chunk_store(hub: FakeHub, tmp_path: Path) -> None:
    """Files stored while scanning was off are scanned over the chunk store: by the
    daemon at their next request, or by `mirror quarantine scan`."""
    evil_zip = torch_zip(EVIL, pad=2 * MiB)  # several chunks: the archive is read across them
    hub.commit("org/old", {"evil.pkl": EVIL, "model.bin": evil_zip, "ok.pkl": CLEAN})
    m = start_mirror(tmp_path, hub, policy={"scan_pickles": False})
    try:
        for name, data in (("evil.pkl", EVIL), ("model.bin", evil_zip), ("ok.pkl", CLEAN)):
            assert raw(m.url + f"/org/old/resolve/main/{name}")[2] == data
        assert m.stop() == 0
        m = MirrorDaemon(m.data_dir, hub.url, policy=SCAN)
        m.start()
        _wait_stored(m, 3)
        hub.reset_counters()
        status, h, _ = raw(m.url + "/org/old/resolve/main/evil.pkl")
        assert (status, h["X-Error-Code"]) == (403, "FileQuarantined")
        scanned = {r["file"].rsplit(":", 1)[1]: r["verdict"] for r in cli_json(m, "quarantine", "scan", "org/old")}
        assert scanned == {"model.bin": "unsafe", "ok.pkl": "clean"}
        assert cli_json(m, "quarantine", "scan") == []  # nothing left without a verdict
        rescanned = {r["file"].rsplit(":", 1)[1]: r["verdict"] for r in cli_json(m, "quarantine", "scan", "--rescan")}
        assert rescanned == {"evil.pkl": "unsafe", "model.bin": "unsafe"}  # clean verdicts stand
        assert raw(m.url + "/org/old/resolve/main/model.bin")[0] == 403
        assert raw(m.url + "/org/old/resolve/main/ok.pkl")[2] == CLEAN
        assert hub.bytes_sent == 0  # every scan read the store
    finally:
        m.stop()


def _served(m: MirrorDaemon, expected: int) -> int:
    """The daemon's served-bytes counter once it reached `expected` (it is flushed every 2 s)."""
    deadline = time.monotonic() + 20
    while (n := cli_json(m, "stats")["bytes_served"]) < expected and time.monotonic() < deadline:
        time.sleep(0.3)
    return n  # type: ignore[no-any-return]


def _wait_stored(m: MirrorDaemon, n: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if cli_json(m, "stats")["files"] >= n:
            return
        time.sleep(0.2)
    raise AssertionError("the files were not stored")


def test_min_upstream_age_refuses_fresh_commits_of_new_repos(hub: FakeHub, tmp_path: Path) -> None:
    hub.commit("org/fresh", {"config.json": b'{"fresh": true}'}, date=datetime.now(UTC))
    hub.commit("org/aged", {"config.json": b'{"aged": true}'})  # dated 2024
    m = start_mirror(tmp_path, hub, policy={"min_upstream_age": "7d", **SCAN})
    try:
        # Refused at the metadata (HEAD) step, which huggingface_hub wraps in a
        # LocalEntryNotFoundError caused by the mirror's 403.
        with pytest.raises(LocalEntryNotFoundError) as lost:
            hf_hub_download("org/fresh", "config.json", endpoint=m.url, cache_dir=tmp_path / "hf")
        cause = lost.value.__cause__
        assert isinstance(cause, HfHubHTTPError)
        r = cause.response
        assert (r.status_code, r.headers["X-Error-Code"]) == (403, "CommitTooNew")
        assert "min_upstream_age = 7d" in r.headers["X-Error-Message"]
        # Refused again on retry, also after a pass-through call made the repo known.
        assert raw(m.url + "/api/models/org/fresh/refs")[0] == 200
        status, h, body = raw(m.url + "/api/models/org/fresh")
        assert (status, h["X-Error-Code"]) == (403, "CommitTooNew") and "error" in json.loads(body)
        path = hf_hub_download("org/aged", "config.json", endpoint=m.url, cache_dir=tmp_path / "hf")
        assert Path(path).read_bytes() == b'{"aged": true}'
    finally:
        m.stop()


def test_a_slow_cold_pickle_is_retried_by_the_client_until_scanned(hub: FakeHub, tmp_path: Path) -> None:
    """A pickle that takes longer to fetch than a client waits for its first byte: the
    client gets 429 `FileBeingScanned` with a Retry-After, retries on its own (as
    huggingface_hub does for a 429) and gets the file once fetched and scanned."""
    data = torch_zip(CLEAN, pad=1 * MiB)
    hub.commit("org/slow", {"model.pt": data})
    hub.bandwidth = 100 * 1024  # about 11 s: longer than the 8 s a request waits for a scan
    m = start_mirror(tmp_path, hub, policy=SCAN)
    try:
        path = hf_hub_download("org/slow", "model.pt", endpoint=m.url, cache_dir=tmp_path / "hf")
        assert Path(path).read_bytes() == data
        gets = [line for line in access_lines(m, "model.pt") if '"GET ' in line]
        assert any('" 429 ' in line for line in gets[:-1]) and '" 200 ' in gets[-1], gets
        assert hub.bytes_sent_for(sha256(data)) == len(data)  # one fetch, whatever the retries
    finally:
        m.stop()
