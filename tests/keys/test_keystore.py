"""The encrypted keystore directory: create, list, load, import; nothing ever overwritten."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from eth_account import Account

from nuclux.errors import (
    AccountExists,
    AccountNotFound,
    CorruptKeystore,
    UsageError,
    WrongPassphrase,
)
from nuclux.keys import AccountKeys, Keystore, from_mnemonic, from_private_key

PHRASE = "abandon " * 11 + "about"
FAST_N = 16  # scrypt cost for tests only


@pytest.fixture
def keystore(tmp_path: Path) -> Keystore:
    return Keystore(tmp_path / "data" / "keys", kdf_n=FAST_N)


@pytest.fixture
def alice() -> AccountKeys:
    return from_mnemonic(PHRASE)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_create_list_load(keystore: Keystore, alice: AccountKeys) -> None:
    info = keystore.create("alice", alice, "pw")
    assert info.path == keystore.directory / "alice.json"
    assert keystore.load("alice", "pw") == alice
    assert keystore.load(alice.address, "pw") == alice
    assert keystore.load(alice.address.lower(), "pw") == alice
    [listed] = keystore.list()
    assert (listed.name, listed.address, listed.problem) == ("alice", alice.address, None)
    assert listed.x25519_public == alice.x25519_public.hex()


def test_file_is_standard_v3_with_nuclux_field(keystore: Keystore, alice: AccountKeys) -> None:
    info = keystore.create("alice", alice, "pw")
    document = json.loads(info.path.read_text())
    assert document["version"] == 3
    assert document["crypto"]["kdf"] == "scrypt"
    assert document["nuclux"] == {"name": "alice", "x25519_public": alice.x25519_public.hex()}
    assert bytes(Account.decrypt(document, "pw")) == alice.eth_private_key


def test_modes(keystore: Keystore, alice: AccountKeys) -> None:
    info = keystore.create("alice", alice, "pw")
    assert stat.S_IMODE(info.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keystore.directory.stat().st_mode) == 0o700
    assert _snapshot(keystore.directory).keys() == {"alice.json"}  # no temporary files left


def test_wrong_passphrase_leaves_file_unchanged(keystore: Keystore, alice: AccountKeys) -> None:
    keystore.create("alice", alice, "pw")
    before = _snapshot(keystore.directory)
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        keystore.load("alice", "not-pw")
    assert _snapshot(keystore.directory) == before


def test_duplicate_name_or_address_is_refused(keystore: Keystore, alice: AccountKeys) -> None:
    keystore.create("alice", alice, "pw")
    before = _snapshot(keystore.directory)
    with pytest.raises(AccountExists, match="named 'alice'"):
        keystore.create("alice", from_mnemonic(PHRASE, index=1), "pw")
    with pytest.raises(AccountExists, match="already stored as account 'alice'"):
        keystore.create("alice2", alice, "other")
    assert _snapshot(keystore.directory) == before


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", b'{"version": 3}', b"\xff\xfe", b'{"version": 3, "crypto": {}}'],
)
def test_corrupt_file(keystore: Keystore, alice: AccountKeys, content: bytes) -> None:
    keystore.create("alice", alice, "pw")
    (keystore.directory / "broken.json").write_bytes(content)
    with pytest.raises(CorruptKeystore, match=r"broken\.json"):
        keystore.load("broken", "pw")
    infos = {i.name: i for i in keystore.list()}
    assert infos["alice"].problem is None
    assert infos["broken"].problem is not None
    assert infos["broken"].address is None


def test_tampered_ciphertext_is_not_a_wrong_passphrase(
    keystore: Keystore, alice: AccountKeys
) -> None:
    info = keystore.create("alice", alice, "pw")
    document = json.loads(info.path.read_text())
    document["address"] = from_mnemonic(PHRASE, index=1).address[2:]
    info.path.write_text(json.dumps(document))
    with pytest.raises(CorruptKeystore, match="does not match address"):
        keystore.load("alice", "pw")


def test_hostile_kdf_parameters_are_refused(keystore: Keystore, alice: AccountKeys) -> None:
    info = keystore.create("alice", alice, "pw")
    document = json.loads(info.path.read_text())
    document["crypto"]["kdfparams"]["n"] = 2**30
    info.path.write_text(json.dumps(document))
    with pytest.raises(CorruptKeystore, match="limits"):
        keystore.load("alice", "pw")


def test_missing_account(keystore: Keystore) -> None:
    with pytest.raises(AccountNotFound, match="no account named 'bob'"):
        keystore.load("bob", "pw")
    with pytest.raises(AccountNotFound, match="no account with address"):
        keystore.info("0x" + "11" * 20)
    assert keystore.list() == []


@pytest.mark.parametrize("name", ["", "a/b", "../x", "x" * 65, "a b", "ä"])
def test_bad_names(keystore: Keystore, alice: AccountKeys, name: str) -> None:
    with pytest.raises(UsageError, match="invalid account name"):
        keystore.create(name, alice, "pw")
    assert not keystore.directory.exists()


def test_import_file_from_plain_eth_account(
    keystore: Keystore, alice: AccountKeys, tmp_path: Path
) -> None:
    foreign = tmp_path / "UTC--2024--wallet.json"
    foreign.write_text(
        json.dumps(Account.encrypt(alice.eth_private_key, "their-pw", iterations=16))
    )
    info = keystore.import_file(foreign, "imported", "their-pw")
    assert info.address == alice.address
    assert keystore.load("imported", "their-pw") == alice


def test_import_pbkdf2_file(keystore: Keystore, alice: AccountKeys, tmp_path: Path) -> None:
    foreign = tmp_path / "w.json"
    encrypted = Account.encrypt(alice.eth_private_key, "pw", kdf="pbkdf2", iterations=2)
    foreign.write_text(json.dumps(encrypted))
    assert keystore.import_file(foreign, "p", "pw").address == alice.address


def test_import_with_wrong_passphrase_writes_nothing(
    keystore: Keystore, alice: AccountKeys, tmp_path: Path
) -> None:
    foreign = tmp_path / "w.json"
    foreign.write_text(json.dumps(Account.encrypt(alice.eth_private_key, "pw", iterations=16)))
    with pytest.raises(WrongPassphrase):
        keystore.import_file(foreign, "imported", "wrong")
    assert keystore.list() == []
    with pytest.raises(UsageError, match="no keystore file"):
        keystore.import_file(tmp_path / "missing.json", "x", "pw")


def test_import_never_overwrites(keystore: Keystore, alice: AccountKeys, tmp_path: Path) -> None:
    keystore.create("alice", alice, "pw")
    before = _snapshot(keystore.directory)
    foreign = tmp_path / "w.json"
    foreign.write_text(json.dumps(Account.encrypt(alice.eth_private_key, "pw", iterations=16)))
    with pytest.raises(AccountExists):
        keystore.import_file(foreign, "again", "pw")
    with pytest.raises(AccountExists):
        keystore.import_private_key("alice", "22" * 32, "pw")
    assert _snapshot(keystore.directory) == before


def test_import_private_key(keystore: Keystore, alice: AccountKeys) -> None:
    info = keystore.import_private_key("raw", "0x" + alice.eth_private_key.hex(), "pw")
    assert info.address == alice.address
    assert keystore.load("raw", "pw") == from_private_key(alice.eth_private_key)
    with pytest.raises(UsageError):
        keystore.import_private_key("bad", "xyz", "pw")


def test_scrypt_cost_is_checked(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        Keystore(tmp_path, kdf_n=1000)
