"""``nuclux keys`` through the real typer app, plus the root error handling and ``run()``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from eth_account import Account
from typer.main import get_command
from typer.testing import CliRunner, Result

from nuclux.cli.keys_cmd import unlock_account
from nuclux.cli.main import app, run
from nuclux.cli.output import Ctx
from nuclux.errors import UsageError, WrongPassphrase

PHRASE = "abandon " * 11 + "about"
ADDRESS = "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"
UNSET = ("NUCLUX_MNEMONIC", "NUCLUX_CHAIN", "NUCLUX_ACCOUNT", "NUCLUX_DEPLOYMENT", "SECRET_KEY")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str | None]:
    config = tmp_path / "config.toml"
    config.write_text("")
    values: dict[str, str | None] = {
        "NUCLUX_DATA_DIR": str(tmp_path / "data"),
        "NUCLUX_CONFIG": str(config),
        "NUCLUX_PASSPHRASE": "correct horse",
        "NUCLUX_SCRYPT_N": "16",
        "COLUMNS": "200",
    }
    return values | dict.fromkeys(UNSET)


def nuclux(env: dict[str, str | None], *args: str, **extra: str | None) -> Result:
    return CliRunner().invoke(app, list(args), env=env | extra)


def _assert_one_line_error(result: Result, code: int, fragment: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.output


def test_new_shows_phrase_once_and_address(env: dict[str, str | None]) -> None:
    result = nuclux(env, "keys", "new", "alice", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["mnemonic"].split()) == 24
    assert data["address"].startswith("0x")
    assert Path(data["keystore"]).is_file()
    assert data["mnemonic"] not in Path(data["keystore"]).read_text()

    text = nuclux(env, "keys", "new", "bob", "--words", "12")
    assert text.exit_code == 0, text.output
    assert "Write down this seed phrase" in text.stdout
    assert "12. " in text.stdout
    assert "13. " not in text.stdout
    shown = json.loads(nuclux(env, "keys", "show", "bob", "--json").stdout)
    assert shown["address"] in text.stdout
    assert shown["x25519_public"] in text.stdout


def test_recover_rebuilds_the_same_account(env: dict[str, str | None], tmp_path: Path) -> None:
    created = json.loads(nuclux(env, "keys", "new", "alice", "--json").stdout)
    other = env | {"NUCLUX_DATA_DIR": str(tmp_path / "other")}
    result = nuclux(
        other, "keys", "recover", "alice", "--json", NUCLUX_MNEMONIC=created["mnemonic"]
    )
    assert result.exit_code == 0, result.output
    recovered = json.loads(result.stdout)
    assert recovered["address"] == created["address"]
    assert recovered["x25519_public"] == created["x25519_public"]
    assert "mnemonic" not in recovered

    golden = nuclux(env, "keys", "recover", "gold", NUCLUX_MNEMONIC=f"  {PHRASE.upper()} ")
    assert golden.exit_code == 0, golden.output
    assert ADDRESS in golden.stdout


def test_recover_bad_phrase_writes_nothing(env: dict[str, str | None], tmp_path: Path) -> None:
    result = nuclux(env, "keys", "recover", "x", NUCLUX_MNEMONIC="abandon " * 12)
    _assert_one_line_error(result, 2, "checksum")
    assert not (tmp_path / "data").exists()


def test_existing_account_exits_4(env: dict[str, str | None]) -> None:
    nuclux(env, "keys", "recover", "alice", NUCLUX_MNEMONIC=PHRASE)
    again = nuclux(env, "keys", "recover", "alice2", NUCLUX_MNEMONIC=PHRASE)
    _assert_one_line_error(again, 4, "already stored as account 'alice'")


def test_list_json(env: dict[str, str | None]) -> None:
    assert json.loads(nuclux(env, "keys", "list", "--json").stdout) == []
    nuclux(env, "keys", "recover", "alice", NUCLUX_MNEMONIC=PHRASE)
    [entry] = json.loads(nuclux(env, "keys", "list", "--json").stdout)
    assert (entry["name"], entry["address"], entry["problem"]) == ("alice", ADDRESS, None)
    text = nuclux(env, "keys", "list")
    assert text.exit_code == 0
    assert ADDRESS in text.stdout


def test_show_and_export_public_need_no_passphrase(env: dict[str, str | None]) -> None:
    nuclux(env, "keys", "recover", "alice", NUCLUX_MNEMONIC=PHRASE)
    no_pass = env | {"NUCLUX_PASSPHRASE": None}
    shown = nuclux(no_pass, "keys", "show", ADDRESS)
    assert shown.exit_code == 0, shown.output
    assert "alice.json" in shown.stdout
    exported = json.loads(nuclux(no_pass, "keys", "export-public", "alice", "--json").stdout)
    assert exported["address"] == ADDRESS
    assert set(exported) == {"address", "x25519_public"}


def test_show_missing_account_exits_4(env: dict[str, str | None]) -> None:
    _assert_one_line_error(nuclux(env, "keys", "show", "nobody"), 4, "no account named 'nobody'")


def test_import_keystore_and_wrong_passphrase(env: dict[str, str | None], tmp_path: Path) -> None:
    foreign = tmp_path / "wallet.json"
    key = bytes.fromhex("1ab42cc412b618bdea3a599e3c9bae199ebf030895b039e9db1e30dafb12b727")
    foreign.write_text(json.dumps(Account.encrypt(key, "theirs", iterations=16)))
    wrong = nuclux(env, "keys", "import", "w", "--keystore", str(foreign))
    _assert_one_line_error(wrong, 4, "wrong passphrase")
    assert not (tmp_path / "data" / "keys" / "w.json").exists()
    right = nuclux(
        env, "keys", "import", "w", "--keystore", str(foreign), NUCLUX_PASSPHRASE="theirs"
    )
    assert right.exit_code == 0, right.output
    assert ADDRESS in right.stdout


def test_import_private_key_from_env(env: dict[str, str | None]) -> None:
    key = "0x1ab42cc412b618bdea3a599e3c9bae199ebf030895b039e9db1e30dafb12b727"
    missing = nuclux(env, "keys", "import", "raw", "--private-key-env", "SECRET_KEY")
    _assert_one_line_error(missing, 2, "SECRET_KEY is not set")
    result = nuclux(
        env, "keys", "import", "raw", "--private-key-env", "SECRET_KEY", "--json", SECRET_KEY=key
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["address"] == ADDRESS
    assert key[2:] not in result.output
    neither = nuclux(env, "keys", "import", "raw2")
    _assert_one_line_error(neither, 2, "exactly one of")


def test_no_tty_and_no_passphrase_is_a_usage_error(env: dict[str, str | None]) -> None:
    result = nuclux(env, "keys", "new", "alice", NUCLUX_PASSPHRASE=None)
    _assert_one_line_error(result, 2, "set NUCLUX_PASSPHRASE or run interactively")


def test_prompts_when_interactive(
    env: dict[str, str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("nuclux.cli.keys_cmd._interactive", lambda: True)
    no_secrets = env | {"NUCLUX_PASSPHRASE": None}
    result = CliRunner().invoke(
        app, ["keys", "recover", "alice"], env=no_secrets, input=f"{PHRASE}\npw\npw\n"
    )
    assert result.exit_code == 0, result.output
    assert ADDRESS in result.stdout
    assert PHRASE not in result.output  # hidden input is not echoed
    mismatch = CliRunner().invoke(
        app, ["keys", "new", "bob"], env=no_secrets, input="pw\nother\npw\npw\n"
    )
    assert mismatch.exit_code == 0, mismatch.output
    assert "do not match" in mismatch.output


def test_existing_name_fails_before_asking_for_a_passphrase(env: dict[str, str | None]) -> None:
    nuclux(env, "keys", "recover", "alice", NUCLUX_MNEMONIC=PHRASE)
    result = nuclux(env, "keys", "new", "alice", NUCLUX_PASSPHRASE=None)
    _assert_one_line_error(result, 4, "named 'alice' already exists")


def test_corrupt_file_is_listed_not_fatal(env: dict[str, str | None], tmp_path: Path) -> None:
    nuclux(env, "keys", "recover", "alice", NUCLUX_MNEMONIC=PHRASE)
    (tmp_path / "data" / "keys" / "broken.json").write_text("{")
    listed = nuclux(env, "keys", "list", "--json")
    assert listed.exit_code == 0, listed.output
    problems = {e["name"]: e["problem"] for e in json.loads(listed.stdout)}
    assert problems["alice"] is None
    assert "not valid JSON" in problems["broken"]
    _assert_one_line_error(nuclux(env, "keys", "show", "broken"), 4, "not valid JSON")


def test_bad_arguments(env: dict[str, str | None]) -> None:
    _assert_one_line_error(nuclux(env, "keys", "new", "a/b"), 2, "invalid account name")
    _assert_one_line_error(nuclux(env, "keys", "new", "a", "--words", "13"), 2, "--words")
    missing = nuclux(env, "keys", "new")
    assert missing.exit_code == 2
    assert "Missing argument" in missing.stderr


def test_unlock_account(env: dict[str, str | None], monkeypatch: pytest.MonkeyPatch) -> None:
    nuclux(env, "keys", "recover", "alice", NUCLUX_MNEMONIC=PHRASE)
    base = {k: v for k, v in env.items() if v is not None}
    assert unlock_account(Ctx(env=base), "alice").address == ADDRESS
    assert unlock_account(Ctx(env=base | {"NUCLUX_ACCOUNT": "alice"})).address == ADDRESS
    with pytest.raises(WrongPassphrase):
        unlock_account(Ctx(env=base | {"NUCLUX_PASSPHRASE": "nope"}), "alice")
    with pytest.raises(UsageError, match="no account given"):
        unlock_account(Ctx(env=base))


def test_help_on_every_command(env: dict[str, str | None]) -> None:
    def paths(command: object, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
        found = [prefix]
        for name, sub in getattr(command, "commands", {}).items():
            found += paths(sub, (*prefix, name))
        return found

    all_paths = paths(get_command(app), ())
    assert ("keys", "export-public") in all_paths
    assert ("config", "set") in all_paths
    broken = env | {"NUCLUX_CONFIG": "/nonexistent/config.toml"}  # --help must not load it
    for path in all_paths:
        result = nuclux(broken, *path, "--help")
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.stdout


def test_debug_prints_a_traceback(env: dict[str, str | None]) -> None:
    result = nuclux(env, "--debug", "keys", "show", "nobody")
    assert result.exit_code == 4
    assert "AccountNotFound" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: no account named")


def _run(argv: list[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str | None]) -> int:
    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["nuclux", *argv])
    with pytest.raises(SystemExit) as info:
        run()
    return int(info.value.code or 0)


def test_run_exit_codes(
    env: dict[str, str | None], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["--version"], monkeypatch, env) == 0
    assert _run(["keys", "show", "nobody"], monkeypatch, env) == 4
    assert _run(["--no-such-option"], monkeypatch, env) == 2
    assert _run(["config", "show"], monkeypatch, env | {"NUCLUX_CHAIN": "bogus"}) == 3
    err = capsys.readouterr().err
    assert "error: no account named 'nobody'" in err
    assert "No such option" in err


@pytest.mark.parametrize(
    ("exc", "code", "fragment"),
    [
        (RuntimeError("boom"), 70, "internal error: RuntimeError: boom"),
        (KeyboardInterrupt(), 130, ""),
        (BrokenPipeError(32, "Broken pipe"), 141, ""),  # `nuclux ... | head` stopped reading
    ],
)
def test_run_unexpected_exceptions(
    env: dict[str, str | None],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    exc: BaseException,
    code: int,
    fragment: str,
) -> None:
    def explode(c: Ctx) -> None:
        raise exc

    monkeypatch.setattr("nuclux.cli.keys_cmd.open_keystore", explode)
    assert _run(["keys", "list"], monkeypatch, env) == code
    err = capsys.readouterr().err
    assert fragment in err
    assert "Traceback" not in err
    if code != 70:
        assert "internal error" not in err
