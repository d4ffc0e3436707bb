"""A directory of encrypted keystore v3 files, one per named account.

Theory of operation
-------------------
``<directory>/<name>.json`` is a standard Ethereum keystore v3 document (scrypt KDF, as written
by ``eth_account.Account.encrypt``) plus one extra top-level field that other wallets ignore::

    {"version": 3, "address": "...", "crypto": {...}, "id": "...",
     "nuclux": {"name": "alice", "x25519_public": "<64 hex digits>"}}

Only the Ethereum key is stored; the X25519 key is re-derived from it on ``load`` and checked
against ``x25519_public``. ``list`` and ``info`` read the public fields only and need no
passphrase.

Files are never overwritten. A new file is written to a temporary file in the same directory,
fsynced, then hard-linked to its final name (``os.link`` fails if the name exists, so two
concurrent creates cannot clobber each other) and the temporary file removed. Any failure
removes the temporary file, so a failed operation leaves nothing behind. Files are 0600 and a
directory created here is 0700.

Every decoded field is bounded: files larger than ``MAX_FILE_BYTES`` and KDF parameters above
the limits below are refused as corrupt, so a hostile import cannot exhaust memory.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from eth_account import Account
from eth_utils.address import to_checksum_address

from nuclux.errors import (
    AccountExists,
    AccountNotFound,
    CorruptKeystore,
    KeystoreError,
    UsageError,
    WrongPassphrase,
)
from nuclux.keys.derive import AccountKeys, from_private_key, parse_private_key_hex

DEFAULT_KDF_N: Final = 2**18
MAX_FILE_BYTES: Final = 64 * 1024
_MAX_SCRYPT_N: Final = 2**20
_MAX_SCRYPT_RP: Final = 64
_MAX_PBKDF2_ROUNDS: Final = 10_000_000
_NO_HARD_LINKS: Final = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ADDRESS = re.compile(r"(0x)?[0-9a-fA-F]{40}")


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """Public facts about one keystore file. ``problem`` is set (and others may be None) if the
    file cannot be read as a Nuclux keystore."""

    name: str
    path: Path
    address: str | None
    x25519_public: str | None
    problem: str | None = None


def validate_name(name: str) -> str:
    """Return ``name`` if it is 1-64 of ``A-Z a-z 0-9 _ -``, else raise ``UsageError``."""
    if not _NAME.fullmatch(name):
        raise UsageError(f"invalid account name {name!r}: use 1 to 64 letters, digits, '_' or '-'")
    return name


class Keystore:
    """The account files in ``directory``. ``kdf_n`` is the scrypt cost for new files; lower it
    only in tests."""

    def __init__(self, directory: Path, kdf_n: int = DEFAULT_KDF_N) -> None:
        if kdf_n < 2 or kdf_n & (kdf_n - 1) or kdf_n > _MAX_SCRYPT_N:
            raise UsageError(f"scrypt cost must be a power of two from 2 to 2**20, got {kdf_n}")
        self.directory = directory
        self.kdf_n = kdf_n

    def path_of(self, name: str) -> Path:
        return self.directory / f"{validate_name(name)}.json"

    def list(self) -> list[AccountInfo]:
        """Every ``*.json`` file, sorted by name; unreadable files carry a ``problem``."""
        if not self.directory.is_dir():
            return []
        paths = sorted(p for p in self.directory.glob("*.json") if not p.name.startswith("."))
        return [_read_info(p) for p in paths]

    def info(self, name_or_address: str) -> AccountInfo:
        """Public facts about one account, or ``AccountNotFound`` / ``CorruptKeystore``."""
        info = self._find(name_or_address)
        if info.problem is not None:
            raise CorruptKeystore(f"keystore file {info.path} {info.problem}")
        return info

    def load(self, name_or_address: str, passphrase: str) -> AccountKeys:
        """Decrypt an account by name or address."""
        info = self.info(name_or_address)
        document = _read_document(info.path)
        private_key = _decrypt(document, passphrase, info.path)
        keys = from_private_key(private_key)
        if info.address is None or keys.address.lower() != info.address.lower():
            raise CorruptKeystore(
                f"keystore file {info.path}: decrypted key does not match address"
            )
        if info.x25519_public not in (None, keys.x25519_public.hex()):
            raise CorruptKeystore(f"keystore file {info.path}: x25519_public does not match key")
        return keys

    def create(self, name: str, keys: AccountKeys, passphrase: str) -> AccountInfo:
        """Encrypt ``keys`` into a new file ``<name>.json``; never overwrites."""
        path = self.path_of(name)
        self.ensure_new(name, keys.address)
        document: dict[str, Any] = dict(
            Account.encrypt(keys.eth_private_key, passphrase, kdf="scrypt", iterations=self.kdf_n)
        )
        document["nuclux"] = {"name": name, "x25519_public": keys.x25519_public.hex()}
        data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
        self._ensure_directory()
        _write_new(path, data)
        return AccountInfo(name, path, keys.address, keys.x25519_public.hex())

    def import_private_key(self, name: str, hexkey: str, passphrase: str) -> AccountInfo:
        """Store a raw Ethereum private key (64 hex digits) as a new account."""
        return self.create(name, from_private_key(parse_private_key_hex(hexkey)), passphrase)

    def import_file(self, path: Path, name: str, passphrase: str) -> AccountInfo:
        """Import a keystore v3 file from another wallet, re-encrypted with this keystore's KDF
        under the same passphrase. It must decrypt first; nothing is written otherwise."""
        validate_name(name)
        if not path.is_file():
            raise UsageError(f"no keystore file at {path}")
        document = _read_document(path)
        private_key = _decrypt(document, passphrase, path)
        return self.create(name, from_private_key(private_key), passphrase)

    def _find(self, name_or_address: str) -> AccountInfo:
        if _ADDRESS.fullmatch(name_or_address):
            wanted = name_or_address.lower().removeprefix("0x")
            for info in self.list():
                if info.address is not None and info.address.lower()[2:] == wanted:
                    return info
            raise AccountNotFound(f"no account with address {name_or_address} in {self.directory}")
        path = self.path_of(name_or_address)
        if not path.exists():
            raise AccountNotFound(
                f"no account named {name_or_address!r} in {self.directory} (see `nuclux keys list`)"
            )
        return _read_info(path)

    def ensure_new(self, name: str, address: str | None = None) -> None:
        """Raise ``AccountExists`` if ``name`` (or ``address``) is taken: lets a caller fail
        before prompting for a passphrase. ``create`` checks again."""
        path = self.path_of(name)
        if path.exists():
            raise AccountExists(f"an account named {name!r} already exists at {path}")
        for info in self.list():
            if address and info.address and info.address.lower() == address.lower():
                raise AccountExists(
                    f"address {address} is already stored as account {info.name!r} ({info.path})"
                )

    def _ensure_directory(self) -> None:
        if self.directory.is_dir():
            return
        try:
            self.directory.mkdir(mode=0o700, parents=True)
            os.chmod(self.directory, 0o700)
        except FileExistsError:
            pass
        except OSError as err:
            raise KeystoreError(
                f"cannot create keystore directory {self.directory}: {err}"
            ) from err


class _BadFileError(Exception):
    """Why a file is not a usable keystore, without the path; ``kind`` is the public error."""

    def __init__(self, reason: str, kind: type[KeystoreError] = CorruptKeystore) -> None:
        super().__init__(reason)
        self.reason, self.kind = reason, kind


def _read_document(path: Path) -> dict[str, Any]:
    try:
        return _parse_file(path)
    except _BadFileError as err:
        raise err.kind(f"keystore file {path} {err.reason}") from err


def _parse_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError as err:
        raise _BadFileError("does not exist", AccountNotFound) from err
    except OSError as err:
        raise _BadFileError(f"cannot be read: {err.strerror}", KeystoreError) from err
    if len(raw) > MAX_FILE_BYTES:
        raise _BadFileError(f"is larger than {MAX_FILE_BYTES} bytes")
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _BadFileError(f"is not valid JSON ({err})") from err
    problem = _structure_problem(document)
    if problem is not None:
        raise _BadFileError(f"is not a keystore v3 file ({problem})")
    return dict(document)


def _structure_problem(document: object) -> str | None:
    """Why ``document`` is not a usable keystore v3 object, or None."""
    if not isinstance(document, dict):
        return "not a JSON object"
    if document.get("version") != 3:
        return "version is not 3"
    crypto = document.get("crypto", document.get("Crypto"))
    if not isinstance(crypto, dict) or not isinstance(crypto.get("kdfparams"), dict):
        return "missing crypto.kdfparams"
    params: dict[str, object] = crypto["kdfparams"]
    if params.get("dklen") != 32:
        return "kdfparams.dklen is not 32"
    kdf = crypto.get("kdf")
    if kdf == "scrypt":
        n, r, p = params.get("n"), params.get("r"), params.get("p")
        if not (isinstance(n, int) and isinstance(r, int) and isinstance(p, int)):
            return "scrypt parameters are not integers"
        if not (1 < n <= _MAX_SCRYPT_N and r > 0 and p > 0 and r * p <= _MAX_SCRYPT_RP):
            return "scrypt parameters are outside the accepted limits"
    elif kdf == "pbkdf2":
        c = params.get("c")
        if not (isinstance(c, int) and 0 < c <= _MAX_PBKDF2_ROUNDS):
            return "pbkdf2 round count is outside the accepted limits"
    else:
        return f"unsupported kdf {kdf!r}"
    return None


def _read_info(path: Path) -> AccountInfo:
    name = path.stem
    try:
        document = _parse_file(path)
    except _BadFileError as err:
        return AccountInfo(name, path, None, None, problem=err.reason)
    address = document.get("address")
    if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
        return AccountInfo(name, path, None, None, problem="has no valid address field")
    checksummed = str(to_checksum_address("0x" + address.lower().removeprefix("0x")))
    meta = document.get("nuclux")
    x_public = meta.get("x25519_public") if isinstance(meta, dict) else None
    if not isinstance(x_public, str) or not re.fullmatch(r"[0-9a-f]{64}", x_public):
        x_public = None
    problem = None if _NAME.fullmatch(name) else "has a name that is not a valid account name"
    return AccountInfo(name, path, checksummed, x_public, problem)


def _decrypt(document: dict[str, Any], passphrase: str, path: Path) -> bytes:
    try:
        return bytes(Account.decrypt(document, passphrase))
    except ValueError as err:
        if "MAC mismatch" in str(err):
            raise WrongPassphrase(f"wrong passphrase for keystore file {path}") from err
        raise CorruptKeystore(f"keystore file {path} cannot be decrypted ({err})") from err
    except (KeyError, TypeError, AttributeError) as err:
        raise CorruptKeystore(f"keystore file {path} has a missing or malformed field") from err


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` atomically (mode 0600); never replace an existing file."""
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError as err:
            raise AccountExists(f"{path} already exists; nothing was overwritten") from err
        except OSError as err:
            if err.errno not in _NO_HARD_LINKS:
                raise
            # A file system without hard links: check, then rename (a narrow race remains).
            if path.exists():
                raise AccountExists(f"{path} already exists; nothing was overwritten") from err
            os.replace(tmp, path)
        _fsync_directory(path.parent)
    except OSError as err:
        raise KeystoreError(f"cannot write keystore file {path}: {err}") from err
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
