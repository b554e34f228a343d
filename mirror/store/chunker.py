"""Content-defined chunking (FastCDC via pyfastcdc) and the dtype sniff for byte grouping.

Cut points depend only on content, so an insertion near the start of a file (a grown
safetensors header) shifts boundaries for one or two chunks and the rest still match.

pyfastcdc's `avg_size` is the expected distance *after* the minimum (its average chunk is
`avg_size + min_size`), so 768 KiB gives the 1 MiB mean chunk the design asks for.
"""

from __future__ import annotations

import json
import struct
from typing import Iterator

from pyfastcdc import FastCDC

MIN_SIZE = 256 << 10
AVG_SIZE = 1 << 20
MAX_SIZE = 4 << 20


def make_chunker() -> FastCDC:
    return FastCDC(AVG_SIZE - MIN_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE)


def cut(buf: bytes | memoryview) -> Iterator[tuple[int, int]]:
    """Yield (offset, length) of each chunk of `buf`; one empty file yields nothing."""
    if len(buf) == 0:
        return
    for c in make_chunker().cut_buf(buf):
        yield c.offset, c.length


# safetensors dtype -> byte width used for grouping.
_WIDTH = {"BF16": 2, "F16": 2, "F32": 4, "I32": 4, "U32": 4, "I16": 2, "U16": 2, "F8_E4M3": 0, "F8_E5M2": 0}


def sniff_group_width(head: bytes | memoryview) -> int:
    """Byte-group width for a file that starts with `head`: the dtype holding most bytes
    in a safetensors header (2 for fp16/bf16, 4 for fp32), else 0 (no grouping)."""
    if len(head) < 8:
        return 0
    (n,) = struct.unpack_from("<Q", head)
    if n < 2 or n > 100 << 20 or 8 + n > len(head):
        return 0
    try:
        header = json.loads(bytes(head[8:8 + n]))
    except (ValueError, UnicodeDecodeError):
        return 0
    if not isinstance(header, dict):
        return 0
    by_width: dict[int, int] = {}
    for name, t in header.items():
        if name == "__metadata__" or not isinstance(t, dict):
            continue
        offs = t.get("data_offsets")
        width = _WIDTH.get(str(t.get("dtype")), 0)
        if isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs):
            by_width[width] = by_width.get(width, 0) + max(0, offs[1] - offs[0])
    if not by_width:
        return 0
    return max(by_width, key=lambda w: by_width[w])
