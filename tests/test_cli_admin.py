"""The store administration CLI (cli/admin.py), called in-process through `mirror.cli.main`:
`mirror verify`, `mirror stats`, `mirror keys show`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mirror.cli import main
from mirror.node import open_node
from mirror.store.codec import HEADER_SIZE
from tests.conftest import MiB, bf16_like, fine_tune, make_config, safetensors_bytes, sha256_identity, write


def ingest_files(data_dir: Path, files: dict[str, bytes]) -> dict[str, list[str]]:
    """Ingest `files` into `data_dir` (each under its sha256); return their chunk ids."""

    async def run() -> dict[str, list[str]]:
        svc = await open_node(make_config(data_dir))
        try:
            out = {}
            for name, data in files.items():
                path = write(data_dir.parent / name, data)
                man = await svc.ingestor.ingest_path(path, sha256_identity(data))
                out[name] = [c.chunk_id for c in man.chunks]
            return out
        finally:
            await svc.close()

    return asyncio.run(run())


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_exits_1_on_bit_rot_then_0_after_repair(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = safetensors_bytes(bf16_like(2 * MiB, seed=3), "BF16")
    chunks = ingest_files(data_dir, {"model.safetensors": data})["model.safetensors"]
    code, out, _ = cli(capsys, "verify", "--data-dir", str(data_dir))
    assert code == 0 and out.strip().endswith("ok")

    victim = chunks[-1]
    path = data_dir / "chunks" / victim[:2] / victim[2:4] / victim
    frame = bytearray(path.read_bytes())
    frame[HEADER_SIZE + 77] ^= 0x80
    path.write_bytes(bytes(frame))

    code, out, _ = cli(capsys, "verify", "--data-dir", str(data_dir))
    assert code == 1 and f"BAD chunk {victim}" in out and "PROBLEMS FOUND" in out
    assert path.exists()  # reporting does not repair

    code, out, _ = cli(capsys, "verify", "--data-dir", str(data_dir), "--repair", "--json")
    report = json.loads(out)
    assert code == 1 and report["bad_chunks"] == [victim]
    assert report["quarantined"] == 1 and report["dropped_manifests"] == 1
    assert not path.exists() and (data_dir / "quarantine" / victim).exists()

    code, out, _ = cli(capsys, "verify", "--data-dir", str(data_dir), "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["manifests_checked"] == 0


def test_stats_json_matches_the_catalog(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    payload = bf16_like(3 * MiB, seed=21)
    base = safetensors_bytes(payload, "BF16")
    variant_payload, _ = fine_tune(payload, share=0.2, seed=22)
    variant = safetensors_bytes(variant_payload, "BF16", header_len=len(base) - len(payload) - 8 + 56)
    chunks = ingest_files(data_dir, {"base": base, "variant": variant})
    shared = set(chunks["base"]) & set(chunks["variant"])
    assert shared

    code, out, err = cli(capsys, "stats", "--data-dir", str(data_dir), "--json")
    assert code == 0, err
    stats = json.loads(out)

    async def catalog_stats():  # type: ignore[no-untyped-def]
        svc = await open_node(make_config(data_dir))
        try:
            return await svc.catalog.content.stats(), {c: svc.store.describe(c)[2] for c in svc.store.iter_ids()}
        finally:
            await svc.close()

    st, stored = asyncio.run(catalog_stats())
    assert stats["files"] == st.files == 2
    assert stats["logical_bytes"] == st.logical_bytes == len(base) + len(variant)
    unique = set(chunks["base"]) | set(chunks["variant"])
    assert stats["chunks"] == st.chunks == len(unique) == len(stored)
    assert stats["stored_bytes"] == st.stored_bytes == sum(stored.values())
    assert stats["unique_raw_bytes"] == st.unique_raw_bytes < stats["logical_bytes"]
    assert stats["dedup_ratio"] == round(st.dedup_ratio, 4) and stats["dedup_ratio"] > 1
    assert stats["compression_ratio"] == round(st.compression_ratio, 4) < 0.75
    assert stats["stored_over_logical"] == round(st.stored_bytes / st.logical_bytes, 4)

    code, out, _ = cli(capsys, "stats", "--data-dir", str(data_dir))
    assert code == 0 and re.search(r"files \(contents\)\s+2\b", out) and "dedup ratio" in out


def test_keys_show_prints_the_public_key(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir.mkdir()  # an empty data dir (read-only commands refuse a missing one)
    code, out, _ = cli(capsys, "keys", "show", "--data-dir", str(data_dir))
    assert code == 0 and re.fullmatch(r"[0-9a-f]{64}\n", out)
    key_file = data_dir / "keys" / "node.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert (data_dir / "keys").stat().st_mode & 0o777 == 0o700
    # Stable across runs, and the same key the services sign with.
    assert cli(capsys, "keys", "show", "--data-dir", str(data_dir))[1] == out


def test_a_readable_key_file_is_refused(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir.mkdir()
    assert cli(capsys, "keys", "show", "--data-dir", str(data_dir))[0] == 0
    key_file = data_dir / "keys" / "node.key"
    os.chmod(key_file, 0o644)
    code, out, err = cli(capsys, "keys", "show", "--data-dir", str(data_dir))
    assert code == 2 and out == ""
    notice, error = err.splitlines()  # the data dir in use, then the one-line error
    assert notice.startswith("mirror: data dir ")
    assert error.startswith("mirror: ") and "chmod 600" in error and str(key_file) in error
    code, _, err = cli(capsys, "stats", "--data-dir", str(data_dir))
    assert code == 2 and "readable by others" in err


def test_console_script_runs(data_dir: Path) -> None:
    """The installed entry point, as operators run it."""
    data_dir.mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "mirror", "keys", "show", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60, env={k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")},
    )
    assert out.returncode == 0 and re.fullmatch(r"[0-9a-f]{64}\n", out.stdout), out.stderr
