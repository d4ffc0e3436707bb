"""Settings: one TOML file, overridden by environment variables.

Theory of operation
-------------------
Each setting is resolved on its own, first match wins::

    environment variable  >  config file  >  built-in default

The file is found the same way: ``--config PATH`` (passed in as ``path``), else
``$NUCLUX_CONFIG``, else ``<platform config dir>/nuclux/config.toml``. A missing file at the
default location means "all defaults"; a missing file that was named explicitly is an error,
because a mistyped path must not silently switch the chain. The file is a flat TOML table; an
unknown key, a wrong type or an out-of-range value is a ``ConfigError`` naming the file (or the
environment variable) and the key. Relative paths in the file are relative to the file.

``Config.source`` records where every value came from, for ``nuclux config show``. The
environment is a parameter (``env``), never read behind the caller's back.

Writing (``nuclux config init`` / ``set``) goes through ``write_config_file``: validate first,
then temp file + fsync + ``os.replace``, so a crash leaves the old file or the new one.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import platformdirs
import tomli_w

from nuclux.core.types import ONE_NUX, Wei, format_nux, parse_nux
from nuclux.errors import ConfigError, UsageError
from nuclux.statefile import atomic_write

CONFIG_ENV: Final = "NUCLUX_CONFIG"
ENV_VARS: Final = {
    "data_dir": "NUCLUX_DATA_DIR",
    "chain": "NUCLUX_CHAIN",
    "deployment": "NUCLUX_DEPLOYMENT",
    "account": "NUCLUX_ACCOUNT",
    "market": "NUCLUX_MARKET",
}
KEYS: Final = (
    "data_dir",
    "keystore_dir",
    "chain",
    "deployment",
    "account",
    "confirmations",
    "tx_timeout",
    "renew_budget",
    "market",
)
_PATH_KEYS: Final = frozenset({"data_dir", "keystore_dir", "deployment"})
_MAX_FILE_BYTES: Final = 1024 * 1024
_ACCOUNT = re.compile(r"[A-Za-z0-9_-]{1,64}|0x[0-9a-fA-F]{40}")
_HEADER: Final = """\
# Nuclux configuration (TOML). Environment variables override it:
# NUCLUX_DATA_DIR, NUCLUX_CHAIN, NUCLUX_DEPLOYMENT, NUCLUX_ACCOUNT.
# Keys: data_dir, keystore_dir (default <data_dir>/keys), chain ("embedded" or an http(s)
# RPC URL), deployment (deployment JSON file), account (default account), confirmations,
# tx_timeout (seconds), renew_budget (the most lease renewals may ever spend, in NUX, e.g.
# "50"; unset: `nuclux renew` needs --max-spend and the repair watcher renews nothing),
# market (true: put and run buy new leases at auction; false: at providers' posted prices).
# Relative paths are relative to this file.
"""


@dataclass(frozen=True, slots=True)
class Config:
    """Effective settings. ``source[key]`` says where each value came from."""

    data_dir: Path
    keystore_dir: Path
    chain: str = "embedded"
    deployment: Path | None = None
    account: str | None = None
    confirmations: int = 1
    tx_timeout: float = 120.0
    renew_budget: Wei | None = None  # wei; the running cap on lease renewals
    market: bool = True  # new leases through auctions (False: at posted prices)
    config_file: Path | None = None
    source: Mapping[str, str] = field(default_factory=dict, compare=False)


class _InvalidValueError(ValueError):
    """A value failed validation; the caller adds where it came from."""


def default_config_file() -> Path:
    return Path(platformdirs.user_config_dir("nuclux")) / "config.toml"


def config_file_path(path: Path | None, env: Mapping[str, str]) -> tuple[Path, str]:
    """The config file to use and why: ``--config``, ``$NUCLUX_CONFIG`` or the default."""
    if path is not None:
        return path.expanduser(), "--config"
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser(), f"env {CONFIG_ENV}"
    return default_config_file(), "default"


def load_config(path: Path | None, env: Mapping[str, str]) -> Config:
    """Resolve every setting from ``env``, the config file and the defaults."""
    file, why = config_file_path(path, env)
    table = read_config_file(file, must_exist=why != "default")
    values: dict[str, object] = {}
    source: dict[str, str] = {"config_file": why}
    for key, value in table.items():
        if key in _PATH_KEYS:
            value = file.parent / Path(str(value)).expanduser()
        values[key], source[key] = value, f"file {file}"
    for key, var in ENV_VARS.items():
        text = env.get(var)
        if text:
            try:
                values[key] = _parse_text(key, text)
            except _InvalidValueError as err:
                raise ConfigError(f"environment variable {var}: {err}") from err
            source[key] = f"env {var}"
    if "data_dir" not in values:
        values["data_dir"], source["data_dir"] = _default_data_dir(), "default"
    if "keystore_dir" not in values:
        values["keystore_dir"] = _as_path(values["data_dir"]) / "keys"
        source["keystore_dir"] = "data_dir/keys"
    for key in KEYS:
        source.setdefault(key, "default")
    deployment, account = values.get("deployment"), values.get("account")
    confirmations = values.get("confirmations", 1)
    tx_timeout = values.get("tx_timeout", 120.0)
    if not isinstance(confirmations, int) or not isinstance(tx_timeout, int | float):
        raise ConfigError("confirmations and tx_timeout must be numbers")  # checked above
    return Config(
        data_dir=_as_path(values["data_dir"]),
        keystore_dir=_as_path(values["keystore_dir"]),
        chain=str(values.get("chain", "embedded")),
        deployment=None if deployment is None else _as_path(deployment),
        account=None if account is None else str(account),
        confirmations=confirmations,
        tx_timeout=float(tx_timeout),
        renew_budget=_budget(values.get("renew_budget")),
        market=bool(values.get("market", True)),
        config_file=file,
        source=source,
    )


def read_config_file(path: Path, *, must_exist: bool) -> dict[str, object]:
    """The validated table in ``path`` (``{}`` if absent and not ``must_exist``)."""
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError as err:
        if not must_exist:
            return {}
        raise ConfigError(
            f"config file {path} does not exist (create it with `nuclux config init`)"
        ) from err
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
    if len(raw) > _MAX_FILE_BYTES:
        raise ConfigError(f"config file {path} is larger than {_MAX_FILE_BYTES} bytes")
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from err
    for key, value in table.items():
        try:
            _check_value(key, value)
        except _InvalidValueError as err:
            raise ConfigError(f"config file {path}: {err}") from err
    return table


def write_config_file(path: Path, table: Mapping[str, object], *, overwrite: bool) -> None:
    """Validate ``table`` and write it to ``path`` atomically."""
    for key, value in table.items():
        try:
            _check_value(key, value)
        except _InvalidValueError as err:
            raise UsageError(str(err)) from err
    if path.exists() and not overwrite:
        raise UsageError(f"config file {path} already exists (use --force to replace it)")
    data = (_HEADER + "\n" + tomli_w.dumps(dict(table))).encode()
    try:
        atomic_write(path, data)
    except OSError as err:
        raise ConfigError(f"cannot write config file {path}: {err}") from err


def default_table() -> dict[str, object]:
    """What ``nuclux config init`` writes."""
    return {"chain": "embedded", "confirmations": 1, "tx_timeout": 120.0}


def set_config_value(path: Path, key: str, text: str) -> dict[str, object]:
    """Set one key in the file at ``path`` (created if missing); returns the new table."""
    if key not in KEYS:
        raise UsageError(f"unknown config key {key!r}; known keys: {', '.join(KEYS)}")
    try:
        value = _parse_text(key, text)
    except _InvalidValueError as err:
        raise UsageError(str(err)) from err
    table = read_config_file(path, must_exist=False)
    table[key] = str(Path(os.path.abspath(value))) if isinstance(value, Path) else value
    write_config_file(path, table, overwrite=True)
    return table


def config_to_dict(config: Config) -> dict[str, object]:
    """JSON-friendly settings (paths as strings, unset values as None)."""
    deployment = config.deployment
    return {
        "data_dir": str(config.data_dir),
        "keystore_dir": str(config.keystore_dir),
        "chain": config.chain,
        "deployment": None if deployment is None else str(deployment),
        "account": config.account,
        "confirmations": config.confirmations,
        "tx_timeout": config.tx_timeout,
        "renew_budget": None if config.renew_budget is None else format_nux(config.renew_budget),
        "market": config.market,
    }


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("nuclux"))


def _as_path(value: object) -> Path:
    return value if isinstance(value, Path) else Path(str(value))


def _budget(value: object) -> Wei | None:
    """The renewal budget in wei: a NuxCoin amount as text ("50", "0.5", "1000wei") or whole
    NUX as an integer (validated by ``_check_value`` before)."""
    if value is None:
        return None
    if isinstance(value, int):
        return Wei(value * ONE_NUX)
    return parse_nux(str(value))


def _check_chain(value: str) -> None:
    if value == "embedded":
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _InvalidValueError(f"chain must be 'embedded' or an http(s) RPC URL, got {value!r}")


def _check_value(key: str, value: object) -> None:
    if key not in KEYS:
        raise _InvalidValueError(f"unknown key {key!r}; known keys: {', '.join(KEYS)}")
    if key in _PATH_KEYS or key in ("chain", "account"):
        if not isinstance(value, str) or not value:
            raise _InvalidValueError(f"key {key!r} must be a non-empty string")
        if key == "chain":
            _check_chain(value)
        if key == "account" and not _ACCOUNT.fullmatch(value):
            raise _InvalidValueError(
                f"key 'account' must be an account name or 0x address, got {value!r}"
            )
    elif key == "confirmations":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1000:
            raise _InvalidValueError("key 'confirmations' must be an integer from 0 to 1000")
    elif key == "renew_budget":
        if isinstance(value, str):
            try:
                parse_nux(value)
            except ValueError as err:
                raise _InvalidValueError(f"key 'renew_budget': {err}") from None
        elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _InvalidValueError(
                'key \'renew_budget\' must be a NuxCoin amount, e.g. "50" or "0.5"'
            )
    elif key == "market" and not isinstance(value, bool):
        raise _InvalidValueError("key 'market' must be true or false")
    elif key == "tx_timeout" and (
        isinstance(value, bool) or not isinstance(value, int | float) or not (0 < value < math.inf)
    ):
        raise _InvalidValueError("key 'tx_timeout' must be a positive number of seconds")


_PARSERS: Final[dict[str, Callable[[str], object]]] = {
    "confirmations": int,
    "tx_timeout": float,
    "market": lambda text: _boolean(text),
}


def _boolean(text: str) -> bool:
    words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    try:
        return words[text.lower()]
    except KeyError:
        raise ValueError(f"{text!r} is not true or false") from None


def _parse_text(key: str, text: str) -> object:
    """A value given as text (environment, command line), validated and typed."""
    parser = _PARSERS.get(key, str)
    try:
        value = parser(text.strip())
    except ValueError as err:
        raise _InvalidValueError(f"key {key!r}: cannot parse {text!r}") from err
    _check_value(key, value)
    return Path(str(value)).expanduser() if key in _PATH_KEYS else value
