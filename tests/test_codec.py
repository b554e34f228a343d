"""Chunk frames (store/codec.py): round trips, codec choice, and bomb-proof decoding
(threat-model T10 / P5): every malformed frame is a FrameError, found before anything
large is allocated."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import tracemalloc

import pytest
import zstandard

from mirror.store.codec import GROUPED, HEADER, HEADER_SIZE, MAGIC, MAX_CHUNK, RAW, ZSTD, Codec, FrameError, group, ungroup
from tests.conftest import MiB, bf16_like, fp16_like, random_bytes

ZSTD_MAGIC = struct.pack("<I", 0xFD2FB528)


def wrap(payload: bytes, raw_len: int, codec: int = ZSTD, width: int = 0, payload_len: int | None = None) -> bytes:
    """Our 16-byte frame header around a hand-made payload."""
    n = len(payload) if payload_len is None else payload_len
    return HEADER.pack(MAGIC, codec, width, 0, raw_len, n) + payload


def bomb_1tib() -> bytes:
    """The 17-byte zstd frame of threat-model §1.6: single segment, content size 2**40,
    one last RLE block of 128 KiB."""
    descriptor = 0b1110_0000  # 8-byte content size, single segment, no checksum, no dict
    block = 1 | (1 << 1) | (128 * 1024) << 3  # last block, type RLE, size 128 KiB
    frame = ZSTD_MAGIC + bytes([descriptor]) + struct.pack("<Q", 1 << 40) + block.to_bytes(3, "little") + b"\x00"
    assert len(frame) == 17
    return frame


def window_log_31(content_size: int) -> bytes:
    """A frame that declares `content_size` honestly but asks for a 2 GiB window."""
    descriptor = 0b1000_0000  # 4-byte content size, not single segment
    window = (31 - 10) << 3
    block = 1 | (1 << 1) | (content_size << 3)
    return ZSTD_MAGIC + bytes([descriptor, window]) + struct.pack("<I", content_size) + block.to_bytes(3, "little") + b"\x00"


@pytest.mark.parametrize("width", [2, 4])
@pytest.mark.parametrize("size", [0, 1, 2, 3, 5, 4096, 4097, 1 << 20])
def test_group_ungroup_are_inverse(width: int, size: int) -> None:
    raw = random_bytes(size, seed=size)
    grouped = group(raw, width)
    assert len(grouped) == size
    assert bytes(ungroup(grouped, width, size)) == raw
    if size >= 8:
        # The first plane holds every width-th byte, starting at 0.
        assert grouped[: size // width] == raw[0:size - size % width:width]


@pytest.mark.parametrize(
    ("make", "width", "codec"),
    [
        (lambda: bf16_like(1 << 19), 2, GROUPED),
        (lambda: fp16_like(1 << 19), 2, GROUPED),
        (lambda: bf16_like(1 << 19), 0, ZSTD),
        (lambda: b"config text " * 80_000, 0, ZSTD),
        (lambda: random_bytes(MiB), 2, RAW),
        (lambda: random_bytes(MiB), 0, RAW),
        (lambda: b"tiny", 2, RAW),
    ],
)
def test_encode_picks_codec_and_round_trips(make, width: int, codec: int) -> None:  # type: ignore[no-untyped-def]
    raw = make()
    c = Codec()
    frame = c.encode(raw, group_width=width)
    assert frame[4] == codec
    if codec != RAW:
        assert len(frame) <= len(raw) * 0.97 + HEADER_SIZE
    assert bytes(c.decode(frame, len(raw))) == raw


def test_bf16_grouping_beats_plain_zstd() -> None:
    raw = bf16_like(1 << 20)
    c = Codec()
    grouped = len(c.encode(raw, group_width=2))
    plain = len(c.encode(raw, group_width=0))
    assert grouped < 0.72 * len(raw) and plain > grouped * 1.08


def test_compress_off_stores_raw() -> None:
    raw = bf16_like(1 << 18)
    frame = Codec().encode(raw, compress=False, group_width=2)
    assert frame[4] == RAW and frame[HEADER_SIZE:] == raw


def test_encode_refuses_oversized_chunk() -> None:
    with pytest.raises(ValueError):
        Codec().encode(bytes(MAX_CHUNK + 1))


def test_decode_checks_expected_length() -> None:
    c = Codec()
    frame = c.encode(bf16_like(4096), group_width=2)
    with pytest.raises(FrameError):
        c.decode(frame, 8191)


# --- malformed frames ------------------------------------------------------------------------


def _bad_frames() -> dict[str, bytes]:
    c = Codec()
    good_raw = b"weights " * 8192  # 64 KiB, compresses well
    payload = zstandard.ZstdCompressor(level=1, write_content_size=True).compress(good_raw)
    no_size = zstandard.ZstdCompressor(level=1, write_content_size=False).compress(good_raw)
    skippable = struct.pack("<II", 0x184D2A50, 4) + b"skip"
    grouped = c.encode(bf16_like(1 << 16), group_width=2)
    return {
        "1 TiB bomb, header says 1 MiB": wrap(bomb_1tib(), MiB),
        "1 TiB bomb, header says 4 MiB": wrap(bomb_1tib(), MAX_CHUNK),
        "no content size": wrap(no_size, len(good_raw)),
        "two frames": wrap(payload + payload, len(good_raw)),
        "two frames, each half": wrap(
            zstandard.ZstdCompressor(write_content_size=True).compress(good_raw[:32768]) * 2, len(good_raw)
        ),
        "trailing bytes": wrap(payload + b"\x00", len(good_raw)),
        "skippable frame first": wrap(skippable + payload, len(good_raw)),
        "window log 31": wrap(window_log_31(MiB), MiB),
        "raw_len over 4 MiB": wrap(payload, MAX_CHUNK + 1),
        "raw_len 4 GiB - 1": wrap(payload, 0xFFFFFFFF),
        "payload longer than header says": wrap(payload, len(good_raw), payload_len=len(payload) - 1),
        "payload shorter than header says": wrap(payload, len(good_raw), payload_len=len(payload) + 1),
        "raw frame, lengths differ": wrap(b"abcd", 5, codec=RAW),
        "truncated zstd": wrap(payload[:-3], len(good_raw)),
        "garbage payload": wrap(b"\x01\x02\x03\x04garbage", 100),
        "empty payload": wrap(b"", 100),
        "content size smaller than header": wrap(payload, len(good_raw) + 1),
        "bad magic": b"XXXX" + wrap(payload, len(good_raw))[4:],
        "unknown codec": wrap(payload, len(good_raw), codec=9),
        "grouped without width": grouped[:4] + bytes([GROUPED, 0]) + grouped[6:],
        "zstd with a width": grouped[:4] + bytes([ZSTD, 2]) + grouped[6:],
        "reserved bits set": grouped[:6] + b"\x00\x01" + grouped[8:],
        "shorter than a header": MAGIC + b"\x00",
    }


BAD = _bad_frames()


@pytest.mark.parametrize("name", sorted(BAD))
def test_malformed_frame_is_frame_error(name: str) -> None:
    with pytest.raises(FrameError):
        Codec().decode(BAD[name])


def test_bombs_are_rejected_without_allocating() -> None:
    """Python-level allocations (the output buffer zstandard would make) stay small."""
    c = Codec()
    tracemalloc.start()
    try:
        for name in ("1 TiB bomb, header says 1 MiB", "1 TiB bomb, header says 4 MiB", "window log 31", "no content size"):
            with pytest.raises(FrameError):
                c.decode(BAD[name])
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB


def test_bombs_are_rejected_under_an_address_space_limit() -> None:
    """In a child limited to 2 GiB of address space: every bomb is a FrameError, never a
    MemoryError. The unguarded one-shot decompress of the same frame is what would fail
    (threat-model §1.6), so the limit is a real one."""
    script = textwrap.dedent(
        """
        import resource, struct, sys
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        import zstandard
        from mirror.store.codec import Codec, FrameError
        frames = [bytes.fromhex(h) for h in sys.argv[1:]]
        c = Codec()
        for f in frames:
            try:
                c.decode(f)
            except FrameError:
                continue
            except MemoryError:
                print("MemoryError from Codec.decode"); sys.exit(3)
            print("accepted a bomb"); sys.exit(4)
        try:
            zstandard.ZstdDecompressor().decompress(frames[0][16:])
            unguarded = "ok"
        except MemoryError:
            unguarded = "MemoryError"
        except zstandard.ZstdError as exc:
            unguarded = "ZstdError"
        print("guarded ok; unguarded:", unguarded)
        """
    )
    names = ["1 TiB bomb, header says 1 MiB", "1 TiB bomb, header says 4 MiB", "window log 31", "no content size", "two frames"]
    out = subprocess.run(
        [sys.executable, "-c", script, *(BAD[n].hex() for n in names)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("guarded ok; unguarded: MemoryError"), out.stdout
