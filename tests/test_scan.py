"""The scanners on their own (mirror/scan/): picklescan over a view of the bytes, the
view's byte budget (a pickle too big to scan is an error, never clean), reading a stored
file over its chunks, and the safetensors header checks."""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import struct
import zipfile
from pathlib import Path

import pytest

from mirror.node import Node
from mirror.scan.safetensors import check_header, scan_safetensors
from mirror.scan.scanner import scan_pickle
from mirror.scan.view import ByteView, ManifestView, SpoolView
from tests.conftest import random_bytes, sha256_identity, write
from tests.test_quarantine import CLEAN, EVIL, torch_zip


class BytesView(ByteView):
    """A view over bytes in memory (the budget logic is the base class's)."""

    def __init__(self, data: bytes, budget: int = 1 << 20) -> None:
        super().__init__(len(data), budget)
        self.data = data

    def _pread(self, offset: int, n: int) -> bytes:
        return self.data[offset:offset + n]


def test_dangerous_imports_are_found_in_raw_and_zipped_pickles(tmp_path: Path) -> None:
    text_protocol = pickle.dumps(__import__("subprocess").Popen, protocol=0, fix_imports=False)  # a GLOBAL line: readline
    for name, data in (("a.pkl", EVIL), ("pytorch_model.bin", torch_zip(EVIL)), ("b.pt", text_protocol)):
        v = scan_pickle(BytesView(data), name)
        assert v.verdict == "unsafe", (name, v)
        assert v.findings == (("posix.system",) if data is not text_protocol else ("subprocess.Popen",))
    path = write(tmp_path / "x.pkl", EVIL)
    with SpoolView(os.open(path, os.O_RDONLY), len(EVIL)) as view:  # the view owns the descriptor
        assert scan_pickle(view, "x.pkl").verdict == "unsafe"
    assert view.closed
    for name, data in (("c.pkl", CLEAN), ("model.pt", torch_zip(CLEAN)), ("vocab.bin", random_bytes(4096, 3))):
        assert scan_pickle(BytesView(data), name).verdict == "clean", name


def test_a_pickle_too_big_to_scan_is_an_error_not_clean() -> None:
    """A huge byte string ahead of the dangerous import: the unpickler would reach the
    import, so a scan that stops at its budget must not call the file clean."""
    # PROTO 3, BINBYTES (300 kB), POP, GLOBAL posix.system, BINUNICODE, TUPLE1, REDUCE, STOP
    data = (b"\x80\x03B" + struct.pack("<I", 300_000) + b"x" * 300_000 + b"0" + b"cposix\nsystem\n"
            + b"X" + struct.pack("<I", 10) + b"echo pwned" + b"\x85R.")
    assert list(pickletools.genops(io.BytesIO(data)))[-1][0].name == "STOP"
    assert scan_pickle(BytesView(data, budget=10 << 20), "big.pkl").verdict == "unsafe"
    v = scan_pickle(BytesView(data, budget=100_000), "big.pkl")
    assert v.verdict == "error" and "not scanned" in v.findings[0]


def test_a_compressed_entry_that_would_inflate_past_the_budget_is_an_error() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", CLEAN + b"\0" * 2_000_000)
    v = scan_pickle(BytesView(buf.getvalue(), budget=1 << 20), "model.bin")
    assert v.verdict == "error" and "inflates" in v.findings[0]


def test_a_read_past_the_end_is_short_and_bounded() -> None:
    view = BytesView(bytes(200_000), budget=10 << 20)
    view.seek(10)
    assert len(view.read(10 << 40)) == 64 << 10  # not the whole rest of a big file
    view.seek(0)
    assert len(view.read()) == 200_000 and view.read(1) == b""


async def test_manifest_view_reads_a_stored_file_across_its_chunks(services: Node, tmp_path: Path) -> None:
    data = random_bytes(5 * (1 << 20) + 77, 9)
    man = await services.ingestor.ingest_path(write(tmp_path / "f.bin", data), sha256_identity(data))
    assert len(man.chunks) > 2
    view = ManifestView(services.store, man.chunks, man.size)
    for start, n in ((0, 10), (1 << 20, 3 << 20), (len(data) - 5, 5), (123_456, 1)):
        view.seek(start)
        assert view.read(n) == data[start:start + n]
    zipped = torch_zip(EVIL, pad=3 << 20)
    man = await services.ingestor.ingest_path(write(tmp_path / "z.bin", zipped), sha256_identity(zipped))
    assert scan_pickle(ManifestView(services.store, man.chunks, man.size), "z.bin").findings == ("posix.system",)


def _st(tensors: dict[str, object], data_len: int) -> bytes:
    header = json.dumps(tensors).encode()
    return struct.pack("<Q", len(header)) + header + bytes(data_len)


@pytest.mark.parametrize("tensors, data_len, fault", [
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, 8, "end past the data"),
    ({"a": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]},
      "b": {"dtype": "F16", "shape": [4], "data_offsets": [4, 12]}}, 16, "overlap"),
    ({"a": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 4]}}, 4, "unknown dtype"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, 16, "needs 12"),
    ({"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]}}, 1, "malformed shape"),
    ({"a": {"dtype": "U8", "shape": [1], "data_offsets": [2, 1]}}, 4, "out of order"),
])
def test_bad_safetensors_headers_are_named(tensors: dict[str, object], data_len: int, fault: str) -> None:
    data = _st(tensors, data_len)
    v = scan_safetensors(BytesView(data))
    assert v.verdict == "unsafe" and fault in " ".join(v.findings), v.findings


def test_good_safetensors_headers_pass_and_broken_framing_is_named() -> None:
    good = _st({"__metadata__": {"format": "pt"}, "a": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]},
                "b": {"dtype": "F4", "shape": [3], "data_offsets": [12, 14]}}, 14)
    assert scan_safetensors(BytesView(good)).verdict == "clean"
    assert check_header(b"[1, 2]", 100) == ["header is not a JSON object"]
    v = scan_safetensors(BytesView(struct.pack("<Q", 1000) + b"{}"))
    assert v.verdict == "unsafe" and "runs past the end" in v.findings[0]
    v = scan_safetensors(BytesView(b"\x01\x02"))
    assert v.verdict == "unsafe" and "too short" in v.findings[0]
