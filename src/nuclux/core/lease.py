"""The lease state machine: one transition table, mirrored by the LeaseManager contract.

A lease is a typed quantity of a resource over a finite term, paid from escrow::

    Nascent --assign--> Ticketed --accept--> Active --extend--> ActiveTicketed
                           |                  |  ^                 |
              decline/expire/withdraw   cancel|  +--accept_ext-----+ (or decline/expire_ext)
                           v          end_term|                    | cancel/end_term
                         Closed <--settle-- Closing <--------------+
                                              Active/ActiveTicketed/Closing --fail--> Failed

``Nascent`` is a request not yet assigned to a provider (the market assigns it); a lease
opened directly on a named provider starts ``Ticketed``. ``Closing`` is the dispute window in
which either side submits its latest co-signed state; ``settle`` pays the provider
min(escrow, entitlement) and refunds the rest. ``Failed`` is terminal, settled with a penalty.
``claim`` and ``top_up`` do not change the state and are listed for completeness.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from nuclux.core.types import Address, LeaseId, ResourceClass, Wei


class LeaseState(enum.IntEnum):
    """Numbered as the Solidity ``State`` enum."""

    NONE = 0
    NASCENT = 1
    TICKETED = 2
    ACTIVE = 3
    ACTIVE_TICKETED = 4
    CLOSING = 5
    CLOSED = 6
    FAILED = 7

    @property
    def is_terminal(self) -> bool:
        return self in (LeaseState.CLOSED, LeaseState.FAILED)

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


class Action(enum.Enum):
    OPEN = "open"
    REQUEST = "request"
    ASSIGN = "assign"
    ACCEPT = "accept"
    DECLINE = "decline"
    WITHDRAW = "withdraw"  # the consumer cancels a ticket before acceptance
    EXPIRE_TICKET = "expire_ticket"
    EXTEND = "extend"
    ACCEPT_EXTENSION = "accept_extension"
    DECLINE_EXTENSION = "decline_extension"
    EXPIRE_EXTENSION = "expire_extension"
    TOP_UP = "top_up"
    CLAIM = "claim"
    CANCEL = "cancel"
    END_TERM = "end_term"
    SETTLE = "settle"
    FAIL = "fail"


S = LeaseState
A = Action

TRANSITIONS: dict[tuple[LeaseState, Action], LeaseState] = {
    (S.NONE, A.OPEN): S.TICKETED,
    (S.NONE, A.REQUEST): S.NASCENT,
    (S.NASCENT, A.ASSIGN): S.TICKETED,
    (S.NASCENT, A.WITHDRAW): S.CLOSED,
    (S.TICKETED, A.ACCEPT): S.ACTIVE,
    (S.TICKETED, A.DECLINE): S.CLOSED,
    (S.TICKETED, A.WITHDRAW): S.CLOSED,
    (S.TICKETED, A.EXPIRE_TICKET): S.CLOSED,
    (S.ACTIVE, A.EXTEND): S.ACTIVE_TICKETED,
    (S.ACTIVE, A.TOP_UP): S.ACTIVE,
    (S.ACTIVE, A.CLAIM): S.ACTIVE,
    (S.ACTIVE, A.CANCEL): S.CLOSING,
    (S.ACTIVE, A.END_TERM): S.CLOSING,
    (S.ACTIVE, A.FAIL): S.FAILED,
    (S.ACTIVE_TICKETED, A.ACCEPT_EXTENSION): S.ACTIVE,
    (S.ACTIVE_TICKETED, A.DECLINE_EXTENSION): S.ACTIVE,
    (S.ACTIVE_TICKETED, A.EXPIRE_EXTENSION): S.ACTIVE,
    (S.ACTIVE_TICKETED, A.TOP_UP): S.ACTIVE_TICKETED,
    (S.ACTIVE_TICKETED, A.CLAIM): S.ACTIVE_TICKETED,
    (S.ACTIVE_TICKETED, A.CANCEL): S.CLOSING,
    (S.ACTIVE_TICKETED, A.END_TERM): S.CLOSING,
    (S.ACTIVE_TICKETED, A.FAIL): S.FAILED,
    (S.CLOSING, A.CLAIM): S.CLOSING,
    (S.CLOSING, A.SETTLE): S.CLOSED,
    (S.CLOSING, A.FAIL): S.FAILED,
}


class TransitionError(ValueError):
    """An action not allowed in the current state."""


def next_state(state: LeaseState, action: Action) -> LeaseState:
    """The state after ``action``, or ``TransitionError`` if the table does not allow it."""
    try:
        return TRANSITIONS[(state, action)]
    except KeyError:
        raise TransitionError(f"{action.value} is not allowed in state {state.label}") from None


def allowed_actions(state: LeaseState) -> list[Action]:
    return [a for (s, a) in TRANSITIONS if s is state]


def mermaid_diagram() -> str:
    """The table as a Mermaid state diagram (docs are generated from it)."""
    lines = ["stateDiagram-v2"]
    for (src, action), dst in TRANSITIONS.items():
        if src is S.NONE:
            lines.append(f"    [*] --> {dst.name}: {action.value}")
        elif src is not dst:
            lines.append(f"    {src.name} --> {dst.name}: {action.value}")
    lines += [f"    {t.name} --> [*]" for t in (S.CLOSED, S.FAILED)]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease as read from the chain."""

    id: LeaseId
    consumer: Address
    provider: Address
    cls: ResourceClass
    state: LeaseState
    units: int
    price: Wei
    term_epochs: int
    start_epoch: int
    end_epoch: int
    escrow: Wei
    paid: Wei
    faults: int
    deadline: int
    ext_epochs: int
    ext_escrow: Wei
    ext_deadline: int


def time_accrual_entitlement(lease: Lease, now_epoch: int) -> Wei:
    """What a time-accrual module (the tests' ``TestFaultModule``) owes: units * price * whole
    epochs elapsed in the term. Storage pays proven epochs instead (``StorageSettlement``)."""
    upto = min(now_epoch, lease.end_epoch)
    if upto <= lease.start_epoch:
        return Wei(0)
    return Wei(lease.units * lease.price * (upto - lease.start_epoch))


def due(lease: Lease, entitlement: int) -> Wei:
    """The provider's total due: min(escrow, entitlement), never below what was paid."""
    return Wei(max(lease.paid, min(lease.escrow, entitlement)))
