"""Ingest reads files in windows; chunk boundaries must equal a whole-file cut."""

from __future__ import annotations

import hashlib

import numpy as np

from mirror.store.chunker import cut
from mirror.node import Node


async def test_windowed_ingest_cuts_like_the_whole_file(services: Node) -> None:
    data = np.random.default_rng(5).bytes(70 << 20)  # spans three 32 MiB windows
    identity = "sha256:" + hashlib.sha256(data).hexdigest()
    man = await services.ingestor.ingest_bytes(data, identity)
    assert [c.length for c in man.chunks] == [length for _off, length in cut(data)]
    assert man.size == len(data)
    out = b"".join([bytes(p) async for p in services.reader.iter_range(man.chunks, 0, len(data))])
    assert out == data
