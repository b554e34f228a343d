"""Shared fixtures and data makers for the test suite.

Fixtures: `data_dir` (an empty data directory under pytest's tmp_path), `config` (a
`Config` pointing at it, built without reading the environment) and `services` (the
node core opened on it by `mirror.node.open_node`, closed after the test).

Data makers build content whose shape matters to the store: weights that look like
bf16/fp16 checkpoints (normal, std 0.02, as a real init or fine-tune), incompressible
random bytes, and safetensors files around either, with a real JSON header so that the
store's dtype sniff and byte grouping are exercised.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING
from pathlib import Path

import numpy as np
import pytest

from mirror import config as config_mod
from mirror.config import Config
from mirror.node import Node, open_node

if TYPE_CHECKING:
    from tests.fakehub import FakeHub
    from tests.s3env import MotoS3

MiB = 1 << 20


# --- data makers -----------------------------------------------------------------------------


def bf16_like(n_values: int, seed: int = 0) -> bytes:
    """`n_values` bf16 weights: normal(0, 0.02) float32 truncated to its high 16 bits."""
    f32 = np.random.default_rng(seed).standard_normal(n_values, dtype=np.float32) * np.float32(0.02)
    return (f32.view(np.uint32) >> 16).astype("<u2").tobytes()


def fp16_like(n_values: int, seed: int = 0) -> bytes:
    """`n_values` fp16 weights drawn from normal(0, 0.02)."""
    f32 = np.random.default_rng(seed).standard_normal(n_values, dtype=np.float32) * np.float32(0.02)
    return f32.astype("<f2").tobytes()


def random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).bytes(n)


_DTYPE_WIDTH = {"BF16": 2, "F16": 2, "F32": 4, "U8": 1}


def safetensors_header(
    tensors: list[tuple[str, str, int]], *, header_len: int | None = None, metadata: dict[str, str] | None = None
) -> bytes:
    """The 8-byte length prefix and JSON header for tensors given as (name, dtype, nbytes),
    laid out back to back. The JSON is space-padded to a multiple of 8 bytes, or to exactly
    `header_len` bytes when given (to model a header that grew by a few bytes)."""
    entries: dict[str, object] = {}
    if metadata:
        entries["__metadata__"] = metadata
    pos = 0
    for name, dtype, nbytes in tensors:
        width = _DTYPE_WIDTH[dtype]
        entries[name] = {"dtype": dtype, "shape": [nbytes // width], "data_offsets": [pos, pos + nbytes]}
        pos += nbytes
    text = json.dumps(entries, separators=(",", ":")).encode()
    target = header_len if header_len is not None else -(-len(text) // 8) * 8
    if target < len(text):
        raise ValueError(f"header needs {len(text)} bytes, asked for {target}")
    text += b" " * (target - len(text))
    return struct.pack("<Q", len(text)) + text


def safetensors_bytes(payload: bytes, dtype: str, *, n_tensors: int = 4, header_len: int | None = None,
                      metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file whose data section is `payload`, split into `n_tensors` tensors."""
    width = _DTYPE_WIDTH[dtype]
    per = len(payload) // n_tensors // width * width
    sizes = [per] * (n_tensors - 1) + [len(payload) - per * (n_tensors - 1)]
    tensors = [(f"model.layers.{i}.weight", dtype, n) for i, n in enumerate(sizes)]
    return safetensors_header(tensors, header_len=header_len, metadata=metadata) + payload


def header_length(file_bytes: bytes | memoryview) -> int:
    """Length of a safetensors file's JSON header (without the 8-byte prefix)."""
    return int(struct.unpack_from("<Q", file_bytes)[0])


def fine_tune(payload: bytes, *, block: int = MiB, share: float = 0.10, seed: int = 1) -> tuple[bytes, list[int]]:
    """A copy of bf16 `payload` where `share` of its `block`-sized blocks, picked at
    random, hold fresh random weights. Returns (variant, sorted indices of changed blocks)."""
    rng = np.random.default_rng(seed)
    n_blocks = len(payload) // block
    changed = sorted(rng.choice(n_blocks, size=max(1, round(n_blocks * share)), replace=False).tolist())
    out = bytearray(payload)
    for b in changed:
        out[b * block:(b + 1) * block] = bf16_like(block // 2, seed=seed * 1000 + b)
    return bytes(out), changed


def sha256_identity(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- fixtures ------------------------------------------------------------------------------------


def make_config(data_dir: Path, **store: object) -> Config:
    """A config for `data_dir`, isolated from the caller's MIRROR_* environment."""
    return config_mod.load(env={}, overrides={"store": {"data_dir": str(data_dir), **store}})


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def config(data_dir: Path) -> Config:
    return make_config(data_dir)


@pytest.fixture
async def services(config: Config) -> AsyncIterator[Node]:
    svc = await open_node(config)
    try:
        yield svc
    finally:
        await svc.close()


# --- object storage ----------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """tests/test_backend_conformance.py runs against every factory in its `BACKENDS`; the
    object-storage backends (which need the S3 server of tests/s3env.py) join it here, so
    that file runs unchanged against them. Its `backend` fixture took its params from
    `BACKENDS` at import; they are widened before pytest parametrizes the fixture."""
    module = metafunc.module
    if module is None or not module.__name__.endswith("test_backend_conformance") or "backend" not in metafunc.fixturenames:
        return
    from tests.s3env import S3_BACKENDS

    module.BACKENDS.update(S3_BACKENDS)
    for fixturedef in metafunc._arg2fixturedefs.get("backend", ()):
        if fixturedef.params is not None:
            fixturedef.params = tuple(sorted(module.BACKENDS))  # type: ignore[misc]


@pytest.fixture(scope="session")
def moto_s3() -> "MotoS3":
    """moto's S3 server (a subprocess on 127.0.0.1), shared by the session."""
    from tests.s3env import MotoS3

    return MotoS3.shared()


# --- the fake Hub, for end-to-end tests ------------------------------------------------------


@pytest.fixture
def hub() -> Iterator["FakeHub"]:
    """A fake Hub on loopback (Hub and CDN origins) with two users' tokens."""
    from tests.fakehub import FakeHub
    from tests.hubenv import OTHER, TOKEN

    with FakeHub.running() as h:
        h.add_token(TOKEN, "alice")
        h.add_token(OTHER, "bob")
        yield h
