"""Safetensors header validation: a header that parsers can trust, or the faults found.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON, then
the tensor data. The JSON maps each tensor name to its dtype, shape and `data_offsets`
[begin, end) relative to the data; `__metadata__` is an optional string map. Loading
cannot run code, but a header whose offsets point past the file or overlap, or whose
sizes disagree with the shapes, has been used to crash or mislead parsers, so such a
file is refused like an unsafe pickle (and an admin may release it).

Only the header is read: 8 + N bytes, N capped at the format's own limit (100 MB), so a
check costs the same for a 100 KB and a 100 GB file.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Callable

from mirror.scan.scanner import ScanUnreadable, Verdict, printable
from mirror.scan.view import ByteView, StoreFailure

SCANNER = "safetensors-header 1"
SUFFIX = ".safetensors"
# The safetensors library's own limit on the JSON header.
MAX_HEADER = 100_000_000
# Bits per element of every dtype the format defines.
DTYPE_BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64,
    "I64": 64, "U64": 64,
}
# At most this many faults are reported (a broken header can have thousands).
_MAX_FINDINGS = 5


def header_length(first8: bytes, size: int) -> tuple[int, str]:
    """(N, "") from the first 8 bytes of a file of `size` bytes, or (0, the fault)."""
    if size < 8 or len(first8) < 8:
        return 0, f"file of {size} bytes is too short for a safetensors header"
    (n,) = struct.unpack("<Q", first8[:8])
    if n > MAX_HEADER:
        return 0, f"header length {n} is over the format's limit of {MAX_HEADER} bytes"
    if 8 + n > size:
        return 0, f"header length {n} runs past the end of the {size}-byte file"
    return n, ""


def check_header(header: bytes, size: int) -> list[str]:
    """The faults of a JSON `header` in a file of `size` bytes ([] when valid)."""
    data_len = size - 8 - len(header)
    try:
        doc = json.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return [f"header is not valid JSON ({' '.join(str(exc).split())[:120]})"]
    if not isinstance(doc, dict):
        return ["header is not a JSON object"]
    faults: list[str] = []
    meta = doc.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        faults.append("__metadata__ is not a map of strings")
    spans: list[tuple[int, int, str]] = []
    for name, t in doc.items():
        fault = _tensor_fault(name, t, data_len, spans.append)
        if fault:
            faults.append(fault)
    spans.sort()
    for (b1, e1, n1), (b2, _e2, n2) in zip(spans, spans[1:]):
        if b2 < e1:
            faults.append(f"tensors {n1!r} and {n2!r} overlap (bytes {b2}..{e1})")
    return [printable(f) for f in faults[:_MAX_FINDINGS]]


def _tensor_fault(name: str, t: Any, data_len: int, keep: Callable[[tuple[int, int, str]], None]) -> str:
    if not isinstance(t, dict):
        return f"tensor {name!r} is not an object"
    dtype, shape, offsets = t.get("dtype"), t.get("shape"), t.get("data_offsets")
    if dtype not in DTYPE_BITS:
        return f"tensor {name!r} has an unknown dtype {str(dtype)[:20]!r}"
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        return f"tensor {name!r} has a malformed shape"
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        return f"tensor {name!r} has malformed data_offsets"
    begin, end = offsets
    if not 0 <= begin <= end:
        return f"tensor {name!r} has data_offsets [{begin}, {end}] out of order"
    if end > data_len:
        return f"tensor {name!r} data_offsets [{begin}, {end}] end past the data ({data_len} bytes)"
    count = 1
    for d in shape:
        count *= d
    if (count * DTYPE_BITS[dtype] + 7) // 8 != end - begin:
        return f"tensor {name!r} spans {end - begin} bytes but {dtype} {shape} needs {(count * DTYPE_BITS[dtype] + 7) // 8}"
    keep((begin, end, name))
    return ""


def scan_safetensors(view: ByteView) -> Verdict:
    """The verdict on a safetensors file (its header only). Blocking: run it in a
    worker thread."""
    try:
        view.seek(0)
        n, fault = header_length(view.read(8), view.size)
        if fault:
            return Verdict("unsafe", (fault,), SCANNER)
        header = view.read(n)
    except StoreFailure:
        raise ScanUnreadable(view.failure or OSError("unreadable")) from None
    faults = check_header(header, view.size)
    return Verdict("unsafe" if faults else "clean", tuple(faults), SCANNER)
