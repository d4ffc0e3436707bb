"""The records the chain adapter returns: providers, storage books, seeds, demands, conflict
reports, events,
block headers; and the decoding of raw contract tuples into them. No web3 here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nuclux.core.lease import Lease, LeaseState
from nuclux.core.types import Address, LeaseId, ResourceClass, Wei
from nuclux.errors import UsageError

PROVIDER_STATUS = ("none", "active", "paused", "leaving")


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    owner: Address
    operator: Address
    status: str
    faults: int
    suspended_until: int
    stake: Wei
    release_at: int
    cert_fingerprint: bytes
    x25519_key: bytes
    capacity: tuple[int, int, int]
    price: tuple[int, int, int]
    endpoint: str


@dataclass(frozen=True, slots=True)
class ProviderOffer:
    """What a provider registers: capacities and posted prices per class, indexed by class."""

    endpoint: str
    cert_fingerprint: bytes
    x25519_key: bytes
    capacity: tuple[int, int, int]
    price: tuple[int, int, int]

    def __post_init__(self) -> None:
        if not self.endpoint or len(self.endpoint.encode()) > 256:
            raise UsageError("endpoint must be 1..256 bytes")
        if len(self.cert_fingerprint) != 32 or len(self.x25519_key) != 32:
            raise UsageError("certificate fingerprint and X25519 key must be 32 bytes each")
        if any(c < 0 or c >= 2**64 for c in self.capacity):
            raise UsageError("capacities must fit in 64 bits")
        if any(p < 0 or p >= 2**128 for p in self.price):
            raise UsageError("prices must fit in 128 bits")


@dataclass(frozen=True, slots=True)
class StorageBook:
    """The storage module's record of a lease."""

    root: bytes
    revision: int
    share_count: int
    cursor: int  # first epoch not yet decided for pay
    paid_epochs: int
    run: int  # unsampled epochs waiting for the next proof to vouch for them
    proven: int  # bit i: epoch cursor + i proven


@dataclass(frozen=True, slots=True)
class SeedInfo:
    value: int  # 0 until recorded
    target: int  # the block whose hash is the seed; 0 until armed
    recorded_epoch: int


@dataclass(frozen=True, slots=True)
class DemandInfo:
    target: int
    seed: int
    deadline: int
    share_index: int


@dataclass(frozen=True, slots=True)
class ConflictReport:
    """A reported pair of conflicting revisions: the fault it counted on the lease."""

    lease_id: int
    revision: int
    reporter: str
    lease_failed: bool  # the fault reached the LeaseManager's fail threshold
    faults: int  # the lease's faults after this one


@dataclass(frozen=True, slots=True)
class ChainEvent:
    name: str
    args: dict[str, Any]
    block: int
    log_index: int


@dataclass(frozen=True, slots=True)
class BlockHeader:
    number: int
    hash: bytes
    timestamp: int


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """An event with the contract that logged it and the block (number and hash) it is in."""

    contract: str
    name: str
    args: dict[str, Any]
    block: int
    block_hash: bytes
    log_index: int


def provider_from_raw(owner: str, p: Any) -> ProviderInfo:
    """A ``getProvider`` result as a ``ProviderInfo``."""
    return ProviderInfo(
        owner=Address(owner),
        operator=Address(p[0]),
        status=PROVIDER_STATUS[int(p[1])],
        faults=int(p[2]),
        suspended_until=int(p[3]),
        stake=Wei(int(p[5])),
        release_at=int(p[6]),
        cert_fingerprint=bytes(p[7]),
        x25519_key=bytes(p[8]),
        capacity=(int(p[9][0]), int(p[9][1]), int(p[9][2])),
        price=(int(p[10][0]), int(p[10][1]), int(p[10][2])),
        endpoint=str(p[11]),
    )


def lease_from_raw(lease_id: int, raw: Any) -> Lease:
    """A ``getLease`` result (of an existing lease) as a ``Lease``."""
    (
        consumer,
        cls,
        state,
        faults,
        start,
        end,
        provider,
        deadline,
        ext_epochs,
        escrow,
        paid,
        price,
        units,
        term,
        ext_escrow,
        ext_deadline,
    ) = raw
    return Lease(
        id=LeaseId(lease_id),
        consumer=Address(consumer),
        provider=Address(provider),
        cls=ResourceClass(int(cls)),
        state=LeaseState(int(state)),
        units=int(units),
        price=Wei(int(price)),
        term_epochs=int(term),
        start_epoch=int(start),
        end_epoch=int(end),
        escrow=Wei(int(escrow)),
        paid=Wei(int(paid)),
        faults=int(faults),
        deadline=int(deadline),
        ext_epochs=int(ext_epochs),
        ext_escrow=Wei(int(ext_escrow)),
        ext_deadline=int(ext_deadline),
    )
