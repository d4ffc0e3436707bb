"""One exception tree for all of Nuclux.

Every error a user can meet is a ``NucluxError``. The CLI prints ``str(err)`` as one line and
exits with ``err.exit_code``; a traceback appears only with ``--debug``.

::

    NucluxError                      exit 1
    ├── UsageError                   exit 2   bad arguments or input from the caller
    ├── ConfigError                  exit 3   unreadable or invalid configuration
    ├── KeystoreError                exit 4
    │   ├── WrongPassphrase
    │   ├── CorruptKeystore
    │   ├── AccountNotFound
    │   └── AccountExists
    ├── ChainError                   exit 5
    │   ├── ChainUnavailable              the RPC endpoint cannot be reached
    │   ├── DeploymentNotFound            no contracts known for this chain
    │   ├── TransactionError              sent but not confirmed (dropped, timed out, out of gas)
    │   └── ContractRevert                the contract refused; carries the custom error
    │       ├── NotAuthorized
    │       ├── InvalidLeaseState
    │       ├── InsufficientFunds
    │       ├── ProviderUnavailable
    │       └── InvalidArgument
    ├── IntegrityError               exit 6   data failed a hash, tag or signature check
    ├── StoreError                   exit 7   the node's shard store refused or failed
    │   ├── ObjectNotFound
    │   ├── LeaseNotFound                 the store holds no reservation for that lease
    │   ├── QuotaExceeded                 a write past a lease's reserved bytes
    │   └── CapacityExceeded              more reserved than the node offered
    └── AuthError                    exit 8   a request or peer failed authentication
        ├── Unauthenticated               missing, malformed or bad signature (HTTP 401)
        ├── StaleRequest                  timestamp outside the freshness window (401)
        ├── ReplayedRequest               nonce seen before (401)
        ├── Forbidden                     authenticated, but not allowed (HTTP 403)
        └── PeerIdentityMismatch          TLS certificate differs from the registry's

Errors are split by whose fault they are where it matters: ``UsageError`` is the caller's,
``ChainUnavailable`` the environment's, ``ContractRevert`` the state of the world.
"""

from __future__ import annotations

from typing import ClassVar


class NucluxError(Exception):
    """Base of every error Nuclux raises on purpose."""

    exit_code: ClassVar[int] = 1


class UsageError(NucluxError):
    """The caller passed something invalid (argument, file, message)."""

    exit_code: ClassVar[int] = 2


class ConfigError(NucluxError):
    """The configuration file or environment is invalid."""

    exit_code: ClassVar[int] = 3


class KeystoreError(NucluxError):
    """A key could not be created, read or unlocked."""

    exit_code: ClassVar[int] = 4


class WrongPassphrase(KeystoreError):
    """The passphrase does not decrypt the keystore."""


class CorruptKeystore(KeystoreError):
    """A keystore file is not valid keystore v3 JSON."""


class AccountNotFound(KeystoreError):
    """No account with that name or address."""


class AccountExists(KeystoreError):
    """An account with that name or address already exists; nothing was overwritten."""


class ChainError(NucluxError):
    """Anything that went wrong talking to the chain."""

    exit_code: ClassVar[int] = 5


class ChainUnavailable(ChainError):
    """The chain endpoint cannot be reached."""


class DeploymentNotFound(ChainError):
    """No Nuclux contracts are known for this chain."""


class TransactionError(ChainError):
    """A transaction was not confirmed: dropped, replaced, timed out or out of gas."""


class ContractRevert(ChainError):
    """A contract refused a call with a custom error.

    ``error_name`` is the Solidity error's name and ``args`` its decoded arguments.
    """

    def __init__(self, message: str, error_name: str = "", args: tuple[object, ...] = ()) -> None:
        super().__init__(message)
        self.error_name = error_name
        self.error_args = args


class NotAuthorized(ContractRevert):
    """The sender may not do this (not the consumer, provider, operator or module)."""


class InvalidLeaseState(ContractRevert):
    """The lease is not in a state that allows this transition, or a deadline passed."""


class InsufficientFunds(ContractRevert):
    """Not enough NuxCoin balance, allowance, stake or escrow."""


class ProviderUnavailable(ContractRevert):
    """The provider is not registered, suspended, paused or leaving."""


class InvalidArgument(ContractRevert):
    """An argument the contract checked is out of range."""


class IntegrityError(NucluxError):
    """Data failed a hash, authentication tag or signature check."""

    exit_code: ClassVar[int] = 6


class StoreError(NucluxError):
    """The shard store refused or failed an operation."""

    exit_code: ClassVar[int] = 7


class ObjectNotFound(StoreError):
    """No such object under that lease."""


class LeaseNotFound(StoreError):
    """The store holds no reservation for that lease."""


class QuotaExceeded(StoreError):
    """Writing this would exceed the lease's reserved bytes."""


class CapacityExceeded(StoreError):
    """Reserving this would exceed the capacity the node offered."""


class AuthError(NucluxError):
    """A request or a peer failed authentication or authorisation."""

    exit_code: ClassVar[int] = 8


class Unauthenticated(AuthError):
    """Missing, malformed or invalid credentials (HTTP 401)."""


class StaleRequest(Unauthenticated):
    """The request's timestamp is outside the freshness window (HTTP 401)."""


class ReplayedRequest(Unauthenticated):
    """The request's nonce was already used (HTTP 401)."""


class Forbidden(AuthError):
    """Authenticated, but not allowed to do this (HTTP 403)."""


class PeerIdentityMismatch(AuthError):
    """The peer's TLS certificate does not match its on-chain registry entry."""
