"""The chunk backend contract (mirror/store/backend.py), run against every backend.

A new backend (object storage next) joins by adding a factory to `BACKENDS`; every test
here then runs against it unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mirror.errors import ChunkMissing
from mirror.store.backend import ChunkBackend
from mirror.store.chunkstore import ChunkStore, chunk_id_of
from mirror.store.codec import Codec
from mirror.store.layout import open_layout
from mirror.store.localfs import LocalBackend


def _local(tmp: Path) -> ChunkBackend:
    return LocalBackend(open_layout(tmp / "data"))


BACKENDS: dict[str, Callable[[Path], ChunkBackend]] = {"local": _local}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChunkBackend]:
    yield BACKENDS[request.param](tmp_path)


def frame_of(raw: bytes) -> tuple[str, bytes]:
    return chunk_id_of(raw), Codec().encode(raw, compress=False)


def test_is_a_chunk_backend(backend: ChunkBackend) -> None:
    assert isinstance(backend, ChunkBackend)


def test_put_then_stat_and_get(backend: ChunkBackend) -> None:
    cid, frame = frame_of(b"hello chunk" * 100)
    assert backend.stat(cid) is None
    assert backend.put(cid, frame) is True
    st = backend.stat(cid)
    assert st is not None and st.size == len(frame) and st.mtime > 0
    assert backend.get(cid) == frame


def test_ranged_get(backend: ChunkBackend) -> None:
    cid, frame = frame_of(bytes(range(256)) * 40)
    backend.put(cid, frame)
    assert backend.get(cid, 0, 16) == frame[:16]
    assert backend.get(cid, 100, 50) == frame[100:150]
    assert backend.get(cid, len(frame) - 5) == frame[-5:]
    assert backend.get(cid, len(frame) - 5, 100) == frame[-5:]  # shorter at the end


def test_put_if_absent_keeps_the_first_frame(backend: ChunkBackend) -> None:
    cid, frame = frame_of(b"first" * 50)
    assert backend.put(cid, frame)
    assert backend.put(cid, b"something else entirely") is False
    assert backend.get(cid) == frame


def test_concurrent_puts_store_once(backend: ChunkBackend) -> None:
    cid, frame = frame_of(b"contended" * 1000)
    results: list[bool] = []
    lock = threading.Lock()

    def put() -> None:
        ok = backend.put(cid, frame)
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 8 and results.count(True) >= 1
    assert backend.get(cid) == frame
    assert list(backend.list()).count(cid) == 1


def test_missing_chunk(backend: ChunkBackend) -> None:
    cid = "ab" * 32
    assert backend.stat(cid) is None
    with pytest.raises(ChunkMissing):
        backend.get(cid)
    assert backend.delete(cid) is False


def test_delete(backend: ChunkBackend) -> None:
    cid, frame = frame_of(b"to be deleted" * 10)
    backend.put(cid, frame)
    assert backend.delete(cid) is True
    assert backend.stat(cid) is None
    assert cid not in set(backend.list())
    assert backend.delete(cid) is False
    assert backend.put(cid, frame) is True  # can be stored again


def test_list_names_every_chunk_once(backend: ChunkBackend) -> None:
    ids = set()
    for i in range(20):
        cid, frame = frame_of(f"chunk {i}".encode() * 30)
        backend.put(cid, frame)
        ids.add(cid)
    listed = list(backend.list())
    assert sorted(listed) == sorted(ids)


@pytest.mark.parametrize("bad", ["", "../../etc/passwd", "AB" * 32, "ab" * 31, "zz" * 32, "ab" * 32 + "/x"])
def test_refuses_malformed_ids(backend: ChunkBackend, bad: str) -> None:
    for call in (lambda: backend.stat(bad), lambda: backend.get(bad), lambda: backend.put(bad, b"x"), lambda: backend.delete(bad)):
        with pytest.raises(ValueError):
            call()


def test_chunk_store_over_the_backend(backend: ChunkBackend, tmp_path: Path) -> None:
    """The store's codec, verification and staging sit above any backend."""
    tmp = tmp_path / "stage"
    quarantine = tmp_path / "quarantine"
    tmp.mkdir()
    quarantine.mkdir()
    store = ChunkStore(backend, tmp, quarantine)
    raw = b"\x01\x02" * 50_000
    staged = store.stage_raw(raw)
    assert not store.has(staged.chunk_id)  # staged is invisible
    [put] = store.publish([staged])
    assert put.new and store.has(put.chunk_id)
    assert bytes(store.read(put.chunk_id)) == raw
    again = store.stage_raw(raw)
    assert again.tmp is None  # already stored: nothing staged
    assert store.quarantine(put.chunk_id) and not store.has(put.chunk_id)
    assert (quarantine / put.chunk_id).exists()
