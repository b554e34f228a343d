"""`mirror export` / `mirror import`: signed bundles between two data directories."""

from __future__ import annotations

import shutil


from mirror.admin.bundle import BundleWriter, read_header
from mirror.keys import NodeKey
from mirror.store.chunkstore import chunk_id_of
from mirror.store.codec import Codec
from tests.clihelp import run_cli, run_json, write_config
from tests.conftest import MiB, bf16_like, fine_tune
from tests.daemon import MirrorDaemon
from tests.fakehub import FakeHub


def _nothing_stored(capsys, cfg) -> None:
    code, stats = run_json(capsys, "stats", "--config", str(cfg))
    assert stats["files"] == 0 and stats["chunks"] == 0
    assert run_json(capsys, "ls", "--config", str(cfg))[1] == []
    assert not list((cfg.parent / cfg.stem).glob("chunks/*/*/*"))


def _refused(capsys, cfg, bundle, text) -> None:
    code, out, err = run_cli(capsys, "import", str(bundle), "--config", str(cfg))
    assert code != 0 and any(t in err for t in text.split("|")) and "Traceback" not in err, err
    _nothing_stored(capsys, cfg)


def _resigned(src, dst, key: NodeKey, mutate) -> None:
    """Rewrite bundle `src` with its header changed by `mutate(header, chunks)` and signed by `key`."""
    from mirror.admin.bundle import CHUNK, TRAILER, BundleReader, parse_header

    chunks = []
    with open(src, "rb") as fh:
        r = BundleReader(fh)
        header = parse_header(r.next().payload)
        while (rec := r.next()).kind != TRAILER:
            assert rec.kind == CHUNK
            chunks.append((rec.payload[:32].hex(), rec.payload[32:]))
    mutate(header, chunks)
    with open(dst, "wb") as fh:
        w = BundleWriter(fh)
        w.header(header)
        for cid, frame in chunks:
            w.chunk(cid, frame)
        w.finish(key.public_bytes, key.sign)


def test_round_trip_incremental_and_refusals(tmp_path, capsys):
    weights = bf16_like(4 * MiB)
    tuned, _ = fine_tune(weights, share=0.1, seed=7)
    a = write_config(tmp_path / "a.toml", tmp_path / "a", "http://127.0.0.1:1")
    b = write_config(tmp_path / "b.toml", tmp_path / "b", "http://127.0.0.1:1")
    c = write_config(tmp_path / "c.toml", tmp_path / "c", "http://127.0.0.1:1")
    b1, b2 = tmp_path / "b1.bundle", tmp_path / "b2.bundle"
    with FakeHub.running() as hub:
        hub.commit("org/a", {"config.json": b'{"v": 1}', "model.safetensors": weights})
        hub.tag("org/a", "v1")
        a_up = write_config(tmp_path / "a-up.toml", tmp_path / "a", hub.url)
        assert run_cli(capsys, "pull", "org/a", "--revision", "v1", "--config", str(a_up))[0] == 0
        code, out, err = run_cli(capsys, "export", "org/a@v1", "-o", str(b1), "--config", str(a))
        assert code == 0, err
        new = hub.commit("org/a", {"model.safetensors": tuned})
        assert run_cli(capsys, "pull", "org/a", "--revision", "main", "--config", str(a_up))[0] == 0
    code, rep = run_json(capsys, "export", "org/a@main", "-o", str(b2), "--since", str(b1), "--config", str(a))
    assert code == 0 and rep["chunks_omitted"] > rep["chunks"] > 0  # only the fine-tune's new chunks
    assert b2.stat().st_size < b1.stat().st_size // 3

    # Untrusted signer: refused, nothing stored.
    _refused(capsys, b, b1, "not a trusted key")
    a_key = run_cli(capsys, "keys", "show", "--config", str(a))[1].strip()
    assert run_cli(capsys, "keys", "trust", a_key, "--label", "site-a", "--config", str(b))[0] == 0
    code, keys = run_json(capsys, "keys", "list", "--config", str(b))
    assert {k["public_key"]: k["label"] for k in keys}[a_key] == "site-a"

    # Tampered bytes: the signature no longer verifies.
    bad = tmp_path / "bad.bundle"
    raw = bytearray(b1.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    bad.write_bytes(bytes(raw))
    _refused(capsys, b, bad, "does not verify|does not match its id|malformed")
    # Signed by the trusted key but a chunk does not match its id.
    key = NodeKey.load_or_create(tmp_path / "a" / "keys")

    def swap_chunk(header, chunks):
        cid, frame = chunks[0]
        raw = bytes(Codec().decode(frame))
        chunks[0] = (cid, Codec().encode(bytes([raw[0] ^ 1]) + raw[1:]))  # same length, other bytes

    _resigned(b1, bad, key, swap_chunk)
    _refused(capsys, b, bad, "does not match its id")

    # ... or every chunk is genuine but a file does not hash to its identity.
    def wrong_file(header, chunks):
        frame = Codec().encode(b"other bytes")
        cid = chunk_id_of(b"other bytes")
        big = max(header["manifests"], key=lambda m: m["size"])
        big["chunks"][-1] = [cid, len(b"other bytes")]
        big["size"] = sum(n for _c, n in big["chunks"])
        header["chunks"].append(cid)
        chunks.append((cid, frame))

    _resigned(b1, bad, key, wrong_file)
    _refused(capsys, b, bad, "does not match its hash")

    # An incremental bundle needs its predecessor.
    run_cli(capsys, "keys", "trust", a_key, "--config", str(c))
    _refused(capsys, c, b2, "import the bundle it was made --since first")

    # The round trip, then the increment.
    code, rep = run_json(capsys, "import", str(b1), "--config", str(b))
    assert code == 0 and rep["revisions"] == 1 and rep["chunks_new"] == len(read_header(str(b1))["chunks"])
    code, rep = run_json(capsys, "import", str(b2), "--config", str(b))
    assert code == 0 and rep["chunks_new"] == len(read_header(str(b2))["chunks"])
    code, view = run_json(capsys, "show", "org/a@main", "--config", str(b))
    assert view["commit"] == new and all(f["cached"] for f in view["files"])

    # Served by a daemon whose upstream is down.
    with MirrorDaemon(tmp_path / "b", "http://127.0.0.1:1") as d:
        for rev, want in (("v1", weights), ("main", tuned), (new, tuned)):
            status, headers, body = d.get(f"/org/a/resolve/{rev}/model.safetensors")
            assert status == 200 and body == want, (rev, status, body[:200])
        status, _, body = d.get("/org/a/resolve/v1/config.json")
        assert status == 200 and body == b'{"v": 1}'


def test_export_refuses_uncached_revision(tmp_path, capsys):
    with FakeHub.running() as hub:
        hub.commit("org/a", {"config.json": b"{}", "model.safetensors": bf16_like(MiB)})
        cfg = write_config(tmp_path / "a.toml", tmp_path / "a", hub.url)
        assert run_cli(capsys, "pull", "org/a", "--include", "*.json", "--config", str(cfg))[0] == 0
    code, out, err = run_cli(capsys, "export", "org/a", "-o", str(tmp_path / "x"), "--config", str(cfg))
    assert code == 1 and "not cached" in err and not (tmp_path / "x").exists()
    shutil.rmtree(tmp_path / "a")
