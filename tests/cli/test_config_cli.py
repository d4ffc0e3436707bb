"""``nuclux config`` through the real typer app."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from nuclux.cli.main import app

UNSET = ("NUCLUX_CHAIN", "NUCLUX_ACCOUNT", "NUCLUX_DEPLOYMENT", "NUCLUX_DATA_DIR")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str | None]:
    values: dict[str, str | None] = {
        "NUCLUX_CONFIG": str(tmp_path / "config.toml"),
        "NUCLUX_DATA_DIR": str(tmp_path / "data"),
        "COLUMNS": "200",
    }
    return dict.fromkeys(UNSET) | values


def nuclux(env: dict[str, str | None], *args: str, **extra: str | None) -> Result:
    return CliRunner().invoke(app, list(args), env=env | extra)


def test_init_show_set_path(env: dict[str, str | None], tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    assert nuclux(env, "config", "init").exit_code == 0
    assert tomllib.loads(config.read_text())["chain"] == "embedded"

    again = nuclux(env, "config", "init")
    assert again.exit_code == 2
    assert "already exists" in again.stderr
    assert nuclux(env, "config", "init", "--force").exit_code == 0

    assert nuclux(env, "config", "set", "chain", "http://127.0.0.1:8545").exit_code == 0
    shown = nuclux(env, "config", "show", "--json", NUCLUX_ACCOUNT="alice")
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert data["config_file"] == str(config)
    settings = data["settings"]
    assert settings["chain"] == {"value": "http://127.0.0.1:8545", "source": f"file {config}"}
    assert settings["account"] == {"value": "alice", "source": "env NUCLUX_ACCOUNT"}
    assert settings["data_dir"]["source"] == "env NUCLUX_DATA_DIR"
    assert settings["keystore_dir"]["value"] == str(tmp_path / "data" / "keys")
    assert settings["deployment"] == {"value": None, "source": "default"}

    text = nuclux(env, "config", "show")
    assert text.exit_code == 0
    assert "http://127.0.0.1:8545" in text.stdout

    path = nuclux(env, "config", "path", "--json")
    assert json.loads(path.stdout) == {
        "path": str(config),
        "source": "env NUCLUX_CONFIG",
        "exists": True,
    }
    other = tmp_path / "other.toml"
    assert nuclux(env, "--config", str(other), "config", "path").stdout.strip() == str(other)


def test_bad_config_file_exits_3(env: dict[str, str | None], tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("chain = [unclosed\n")
    result = nuclux(env, "config", "show")
    assert result.exit_code == 3
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: config file ")
    assert "not valid TOML" in line
    assert "Traceback" not in result.output
    # Commands that do not need settings still work, and init --force repairs the file.
    assert nuclux(env, "config", "path").exit_code == 0
    assert nuclux(env, "keys", "--help").exit_code == 0
    assert nuclux(env, "config", "init", "--force").exit_code == 0
    assert nuclux(env, "config", "show").exit_code == 0


def test_unknown_key_and_missing_explicit_file(env: dict[str, str | None], tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("colour = 'red'\n")
    result = nuclux(env, "config", "show")
    assert result.exit_code == 3
    assert "unknown key 'colour'" in result.stderr
    missing = nuclux(env, "--config", str(tmp_path / "nope.toml"), "config", "show")
    assert missing.exit_code == 3
    assert "does not exist" in missing.stderr


def test_set_validates(env: dict[str, str | None], tmp_path: Path) -> None:
    bad = nuclux(env, "config", "set", "confirmations", "many")
    assert bad.exit_code == 2
    assert "cannot parse" in bad.stderr
    unknown = nuclux(env, "config", "set", "colour", "red")
    assert unknown.exit_code == 2
    assert not (tmp_path / "config.toml").exists()
    (tmp_path / "config.toml").write_text("chain = 1\n")
    broken = nuclux(env, "config", "set", "confirmations", "2")
    assert broken.exit_code == 3
    assert (tmp_path / "config.toml").read_text() == "chain = 1\n"
