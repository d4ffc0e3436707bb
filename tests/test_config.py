"""Configuration: precedence env > file > defaults, validation, atomic writes."""

from __future__ import annotations

import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nuclux.config import (
    config_file_path,
    config_to_dict,
    default_config_file,
    default_table,
    load_config,
    set_config_value,
    write_config_file,
)
from nuclux.errors import ConfigError, UsageError


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_when_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nuclux.config.default_config_file", lambda: tmp_path / "absent.toml")
    config = load_config(None, {})
    assert config.chain == "embedded"
    assert config.deployment is None
    assert config.account is None
    assert (config.confirmations, config.tx_timeout) == (1, 120.0)
    assert config.keystore_dir == config.data_dir / "keys"
    assert config.source["chain"] == "default"
    assert config.source["keystore_dir"] == "data_dir/keys"


def test_precedence_env_over_file_over_default(tmp_path: Path) -> None:
    file = _write(
        tmp_path / "c.toml",
        'chain = "http://file:8545"\naccount = "from-file"\ndata_dir = "d"\nconfirmations = 3\n',
    )
    env = {"NUCLUX_CHAIN": "https://env.example/rpc", "NUCLUX_DATA_DIR": str(tmp_path / "e")}
    config = load_config(file, env)
    assert config.chain == "https://env.example/rpc"
    assert config.source["chain"] == "env NUCLUX_CHAIN"
    assert config.account == "from-file"
    assert config.source["account"] == f"file {file}"
    assert config.data_dir == tmp_path / "e"
    assert config.keystore_dir == tmp_path / "e" / "keys"
    assert config.confirmations == 3
    assert config.tx_timeout == 120.0
    assert config.source["tx_timeout"] == "default"


def test_relative_paths_in_file_are_relative_to_file(tmp_path: Path) -> None:
    file = _write(tmp_path / "c.toml", 'data_dir = "data"\ndeployment = "dep/local.json"\n')
    config = load_config(file, {})
    assert config.data_dir == tmp_path / "data"
    assert config.deployment == tmp_path / "dep" / "local.json"


def test_config_file_resolution(tmp_path: Path) -> None:
    env_file = tmp_path / "env.toml"
    assert config_file_path(tmp_path / "x.toml", {"NUCLUX_CONFIG": str(env_file)})[1] == "--config"
    assert config_file_path(None, {"NUCLUX_CONFIG": str(env_file)}) == (
        env_file,
        "env NUCLUX_CONFIG",
    )
    assert config_file_path(None, {}) == (default_config_file(), "default")


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", {})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(None, {"NUCLUX_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("chain = ", "not valid TOML"),
        ("colour = 'red'\n", "unknown key 'colour'"),
        ("confirmations = '3'\n", "'confirmations'"),
        ("confirmations = true\n", "'confirmations'"),
        ("tx_timeout = -1\n", "'tx_timeout'"),
        ("chain = 'ftp://x'\n", "chain must be"),
        ("chain = 5\n", "'chain'"),
        ("account = 'a b'\n", "'account'"),
        ("[section]\nx = 1\n", "unknown key 'section'"),
    ],
)
def test_invalid_file(tmp_path: Path, text: str, fragment: str) -> None:
    file = _write(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError, match=fragment) as info:
        load_config(file, {})
    assert str(file) in str(info.value)


def test_invalid_env(tmp_path: Path) -> None:
    file = _write(tmp_path / "c.toml", "")
    with pytest.raises(ConfigError, match="NUCLUX_CHAIN"):
        load_config(file, {"NUCLUX_CHAIN": "mainnet"})
    with pytest.raises(ConfigError, match="NUCLUX_ACCOUNT"):
        load_config(file, {"NUCLUX_ACCOUNT": "no/slash"})


def test_write_refuses_to_overwrite_and_round_trips(tmp_path: Path) -> None:
    file = tmp_path / "sub" / "c.toml"
    write_config_file(file, default_table(), overwrite=False)
    assert tomllib.loads(file.read_text()) == default_table()
    with pytest.raises(UsageError, match="already exists"):
        write_config_file(file, default_table(), overwrite=False)
    write_config_file(file, {"chain": "http://h:1"}, overwrite=True)
    assert load_config(file, {}).chain == "http://h:1"
    assert [p.name for p in file.parent.iterdir()] == ["c.toml"]


def test_set_config_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "c.toml"
    set_config_value(file, "confirmations", "4")
    set_config_value(file, "chain", "http://localhost:8545")
    monkeypatch.chdir(tmp_path)
    set_config_value(file, "deployment", "dep.json")
    config = load_config(file, {})
    assert (config.confirmations, config.chain) == (4, "http://localhost:8545")
    assert config.deployment == tmp_path / "dep.json"
    with pytest.raises(UsageError, match="unknown config key"):
        set_config_value(file, "colour", "red")
    with pytest.raises(UsageError, match="cannot parse"):
        set_config_value(file, "tx_timeout", "soon")
    with pytest.raises(UsageError, match="'confirmations'"):
        set_config_value(file, "confirmations", "-1")
    assert load_config(file, {}) == config


@given(confirmations=st.integers(0, 1000), timeout=st.floats(0.001, 1e6))
def test_numbers_round_trip_through_the_file(confirmations: int, timeout: float) -> None:
    table: dict[str, object] = {"confirmations": confirmations, "tx_timeout": timeout}
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "c.toml"
        write_config_file(file, table, overwrite=False)
        config = load_config(file, {})
    assert (config.confirmations, config.tx_timeout) == (confirmations, timeout)
    assert config_to_dict(config)["tx_timeout"] == timeout
