"""``nuclux keys``: create, recover, list, show, export and import accounts.

Theory of operation
-------------------
Every account lives in the keystore at ``Config.keystore_dir`` (see ``nuclux.keys.keystore``).
Secrets never come from the command line, where shell history and ``ps`` would see them:

* the keystore passphrase comes from ``$NUCLUX_PASSPHRASE`` or a hidden prompt,
* a seed phrase to recover from comes from ``$NUCLUX_MNEMONIC`` or a hidden prompt,
* a raw private key to import comes from an environment variable the caller names.

Without a terminal and without the variable, the command fails with a ``UsageError`` rather
than hanging on a prompt. A new seed phrase is printed exactly once, by ``keys new``.

``$NUCLUX_SCRYPT_N`` sets the scrypt cost of new keystore files. It is a testing knob (tests
use 16 to run fast); leave it unset for real keys.

Other sub-apps unlock the signing account with ``unlock_account(ctx)``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from nuclux.cli.output import (
    Ctx,
    JsonFlag,
    command_ctx,
    emit,
    show_fields,
    stderr_console,
    stdout_console,
    table,
)
from nuclux.errors import UsageError
from nuclux.keys import (
    DEFAULT_KDF_N,
    AccountInfo,
    AccountKeys,
    Keystore,
    from_mnemonic,
    generate_mnemonic,
    validate_mnemonic,
)
from nuclux.keys.derive import ENTROPY_BYTES_BY_WORDS

PASSPHRASE_ENV = "NUCLUX_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)
MNEMONIC_ENV = "NUCLUX_MNEMONIC"
SCRYPT_N_ENV = "NUCLUX_SCRYPT_N"

keys_app = typer.Typer(name="keys", help="Manage accounts (keys).", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="Account name (letters, digits, '_', '-').")]
AccountArg = Annotated[str, typer.Argument(help="Account name or 0x address.")]


def _interactive() -> bool:
    return sys.stdin.isatty()


def _secret(env_var: str, prompt: str, *, confirm: bool, env: Mapping[str, str] | None) -> str:
    value = (os.environ if env is None else env).get(env_var)
    if value is not None:
        return value
    if not _interactive():
        raise UsageError(f"set {env_var} or run interactively")
    return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm))


def get_passphrase(confirm: bool, env: Mapping[str, str] | None = None) -> str:
    """The keystore passphrase: ``$NUCLUX_PASSPHRASE``, else a hidden prompt (asked twice if
    ``confirm``, i.e. when creating). A new passphrase must not be empty."""
    passphrase = _secret(PASSPHRASE_ENV, "Keystore passphrase", confirm=confirm, env=env)
    if confirm and not passphrase:
        raise UsageError("the keystore passphrase must not be empty")
    return passphrase


def open_keystore(c: Ctx) -> Keystore:
    """The keystore of the effective configuration."""
    text = c.env.get(SCRYPT_N_ENV)
    try:
        kdf_n = int(text) if text else DEFAULT_KDF_N
    except ValueError as err:
        raise UsageError(f"{SCRYPT_N_ENV} must be an integer, got {text!r}") from err
    return Keystore(c.config.keystore_dir, kdf_n=kdf_n)


def unlock_account(c: Ctx, account: str | None = None) -> AccountKeys:
    """Decrypt ``account`` (name or address), else the configured default account."""
    name = account or c.config.account
    if name is None:
        raise UsageError(
            "no account given: pass one, set NUCLUX_ACCOUNT, or run "
            "`nuclux config set account NAME`"
        )
    keystore = open_keystore(c)
    keystore.info(name)  # fail on a missing account before asking for a passphrase
    return keystore.load(name, get_passphrase(confirm=False, env=c.env))


def _account_dict(info: AccountInfo) -> dict[str, object]:
    return {
        "name": info.name,
        "address": info.address,
        "x25519_public": info.x25519_public,
        "keystore": str(info.path),
    }


def _show_created(c: Ctx, info: AccountInfo, verb: str) -> None:
    data = _account_dict(info)
    emit(c, data, lambda: _render_created(info, verb))


def _render_created(info: AccountInfo, verb: str) -> None:
    stdout_console().print(f"Account {info.name!r} {verb}.", markup=False)
    show_fields(
        [("address", info.address), ("x25519 public", info.x25519_public), ("keystore", info.path)]
    )


@keys_app.command("new")
def new(
    ctx: typer.Context,
    name: NameArg,
    words: Annotated[int, typer.Option(help="Seed phrase length: 12 or 24 words.")] = 24,
    json: JsonFlag = False,
) -> None:
    """Create an account from a new seed phrase, shown once."""
    c = command_ctx(ctx, json=json)
    if words not in (12, 24):
        raise UsageError(f"--words must be 12 or 24, got {words}")
    keystore = open_keystore(c)
    keystore.ensure_new(name)
    phrase = generate_mnemonic(os.urandom(ENTROPY_BYTES_BY_WORDS[words]))
    keys = from_mnemonic(phrase)
    info = keystore.create(name, keys, get_passphrase(confirm=True, env=c.env))
    data = {**_account_dict(info), "mnemonic": phrase}
    if c.json:  # stdout is pure JSON; the warning still reaches the human
        stderr_console().print("warning: the mnemonic is shown only once; store it safely")
    emit(c, data, lambda: _render_new(info, phrase))


def _render_new(info: AccountInfo, phrase: str) -> None:
    _render_created(info, "created")
    console = stdout_console()
    console.print()
    console.print(
        "[bold yellow]Write down this seed phrase now. It is shown only once.[/]\n"
        "Anyone who has it controls the account; with it you can rebuild the account "
        "(`nuclux keys recover`) if the keystore or its passphrase is lost."
    )
    words = phrase.split()
    for start in range(0, len(words), 4):
        cells = (f"{i + 1:>2}. {words[i]:<8}" for i in range(start, min(start + 4, len(words))))
        console.print("  ".join(cells).rstrip(), markup=False)


@keys_app.command("recover")
def recover(
    ctx: typer.Context,
    name: NameArg,
    index: Annotated[int, typer.Option(help="BIP-44 account index.")] = 0,
    json: JsonFlag = False,
) -> None:
    """Rebuild an account from its seed phrase ($NUCLUX_MNEMONIC or a hidden prompt)."""
    c = command_ctx(ctx, json=json)
    keystore = open_keystore(c)
    keystore.ensure_new(name)
    phrase = validate_mnemonic(_secret(MNEMONIC_ENV, "Seed phrase", confirm=False, env=c.env))
    keys = from_mnemonic(phrase, index=index)
    keystore.ensure_new(name, keys.address)
    info = keystore.create(name, keys, get_passphrase(confirm=True, env=c.env))
    _show_created(c, info, "recovered")


@keys_app.command("list")
def list_accounts(ctx: typer.Context, json: JsonFlag = False) -> None:
    """List the accounts in the keystore."""
    c = command_ctx(ctx, json=json)
    infos = open_keystore(c).list()
    data = [{**_account_dict(i), "problem": i.problem} for i in infos]
    rows = [(i.name, i.address, i.x25519_public, i.problem or "ok") for i in infos]

    def render() -> None:
        if not infos:
            stdout_console().print(f"No accounts in {c.config.keystore_dir}.", markup=False)
            return
        table("Accounts", ["name", "address", "x25519 public", "status"], rows)

    emit(c, data, render)


@keys_app.command("show")
def show(ctx: typer.Context, account: AccountArg, json: JsonFlag = False) -> None:
    """Show an account's address, X25519 public key and keystore file (no secrets)."""
    c = command_ctx(ctx, json=json)
    info = open_keystore(c).info(account)
    pairs: list[tuple[str, object]] = [("name", info.name), ("address", info.address)]
    pairs += [("x25519 public", info.x25519_public), ("keystore", info.path)]
    emit(c, _account_dict(info), lambda: show_fields(pairs))


@keys_app.command("export-public")
def export_public(ctx: typer.Context, account: AccountArg, json: JsonFlag = False) -> None:
    """Print the public keys to give to others: address and X25519 public key."""
    c = command_ctx(ctx, json=json)
    info = open_keystore(c).info(account)
    data = {"address": info.address, "x25519_public": info.x25519_public}
    emit(c, data, lambda: typer.echo(f"address {info.address}\nx25519 {info.x25519_public}"))


@keys_app.command("import")
def import_account(
    ctx: typer.Context,
    name: NameArg,
    keystore_file: Annotated[
        Path | None,
        typer.Option("--keystore", help="Keystore v3 JSON file from another wallet."),
    ] = None,
    private_key_env: Annotated[
        str | None,
        typer.Option(help="Name of an environment variable holding a hex private key."),
    ] = None,
    json: JsonFlag = False,
) -> None:
    """Import an account from a keystore file or a raw private key."""
    c = command_ctx(ctx, json=json)
    if (keystore_file is None) == (private_key_env is None):
        raise UsageError("give exactly one of --keystore FILE or --private-key-env VAR")
    keystore = open_keystore(c)
    keystore.ensure_new(name)
    if keystore_file is not None:
        info = keystore.import_file(keystore_file, name, get_passphrase(False, c.env))
    else:
        hexkey = c.env.get(str(private_key_env))
        if not hexkey:
            raise UsageError(f"environment variable {private_key_env} is not set")
        info = keystore.import_private_key(name, hexkey, get_passphrase(True, c.env))
    _show_created(c, info, "imported")
