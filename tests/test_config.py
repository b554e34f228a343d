"""Configuration (config.py): typed, frozen, validated once; every error names the key and
where it came from; MIRROR_* environment overrides; the CLI reports a bad config in one
line and exits 2."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mirror import config
from mirror.cli import main
from mirror.errors import ConfigError


def toml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mirror.toml"
    p.write_text(text)
    return p


def test_defaults_and_file_values(tmp_path: Path) -> None:
    cfg = config.load(env={})
    assert cfg.server.port == 8090 and cfg.store.compression is True and cfg.source == "<defaults>"
    path = toml(tmp_path, '[server]\nport = 9100\n[store]\ndata_dir = "/srv/mirror"\nworkers = 4\n'
                          '[[sync.repos]]\nrepo = "org/model"\nrevisions = ["main", "v1"]\n')
    cfg = config.load(path, env={})
    assert (cfg.server.port, cfg.store.data_dir, cfg.store.workers) == (9100, "/srv/mirror", 4)
    assert cfg.sync.repos[0].repo == "org/model" and cfg.sync.repos[0].revisions == ("main", "v1")
    assert cfg.source == str(path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.server.port = 1  # type: ignore[misc]


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = toml(tmp_path, "[server]\nport = 8090\nprot = 8091\n")
    with pytest.raises(ConfigError) as err:
        config.load(path, env={})
    assert "server.prot" in str(err.value) and str(path) in str(err.value)


def test_unknown_table_names_table_and_file(tmp_path: Path) -> None:
    path = toml(tmp_path, "[sever]\nport = 8090\n")
    with pytest.raises(ConfigError) as err:
        config.load(path, env={})
    assert "sever" in str(err.value) and str(path) in str(err.value)


def test_unknown_key_in_an_array_of_tables(tmp_path: Path) -> None:
    path = toml(tmp_path, '[[sync.repos]]\nrepo = "a/b"\nrevision = "main"\n')
    with pytest.raises(ConfigError, match=r"sync\.repos.*revision"):
        config.load(path, env={})


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[server]\nport = "eighty"\n', "server.port"),
        ("[server]\nport = true\n", "server.port"),
        ("[store]\ncompression = 3\n", "store.compression"),
        ("[upstream]\nurl = 5\n", "upstream.url"),
        ("[cache]\nref_ttl = \"soon\"\n", "cache.ref_ttl"),
        ("[server]\nport = 70000\n", "server.port"),
        ("[store]\nworkers = 0\n", "store.workers"),
        ('[upstream]\nurl = "ftp://hub"\n', "upstream.url"),
    ],
)
def test_wrong_type_or_value_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = toml(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(path, env={})
    assert f"'{key}'" in str(err.value) and str(path) in str(err.value)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        config.load(toml(tmp_path, "[server\n"), env={})
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "absent.toml", env={})


def test_environment_overrides(tmp_path: Path) -> None:
    path = toml(tmp_path, "[server]\nport = 9100\n")
    cfg = config.load(path, env={"MIRROR_SERVER_PORT": "9000", "MIRROR_STORE_COMPRESSION": "off",
                                 "MIRROR_UPSTREAM_URL": "http://127.0.0.1:1", "MIRROR_CRASHPOINT": ""})
    assert cfg.server.port == 9000 and cfg.store.compression is False and cfg.upstream.url == "http://127.0.0.1:1"
    # Command-line overrides beat the environment.
    cfg = config.load(path, env={"MIRROR_SERVER_PORT": "9000"}, overrides={"server": {"port": 9200}})
    assert cfg.server.port == 9200
    # MIRROR_CONFIG names the file when no path is given.
    assert config.load(env={"MIRROR_CONFIG": str(path)}).server.port == 9100


def test_unknown_environment_variable_is_an_error(caplog: pytest.LogCaptureFixture) -> None:
    # Not a config table: another tool's variable, ignored with a warning (issue 14 #13).
    config.load(env={"MIRROR_FOO_BAR": "1"})
    assert "MIRROR_FOO_BAR" in caplog.text
    # A key of an existing table that does not exist: a typo, still an error.
    with pytest.raises(ConfigError, match="server.bogus"):
        config.load(env={"MIRROR_SERVER_BOGUS": "1"})
    with pytest.raises(ConfigError, match=r"environment.*server\.port"):
        config.load(env={"MIRROR_SERVER_PORT": "90a"})


def test_durations_and_sizes() -> None:
    assert config.parse_duration("90s") == 90 and config.parse_duration("2w") == 14 * 86400
    assert config.parse_duration("1.5h") == 5400 and config.parse_duration("30") == 30
    assert config.parse_size("512MiB") == 512 << 20 and config.parse_size("10G") == 10 << 30
    for bad in ("", "-1s", "5 parsecs", "٣s"):
        with pytest.raises(ConfigError):
            config.parse_duration(bad)
    with pytest.raises(ConfigError):
        config.parse_size("lots")


def test_cli_reports_a_bad_config_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = toml(tmp_path, "[store]\ndata_dir = 5\ncompresion = true\n")
    assert main(["stats", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mirror: ") and str(path) in lines[0]
    assert "Traceback" not in err
