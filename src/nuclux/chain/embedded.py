"""Gas estimates for the embedded EVM (eth-tester's py-evm backend) in two executions instead
of about thirteen (``tune(provider)`` installs them in a new ``AsyncEthereumTesterProvider``).

py-evm estimates by binary search between the intrinsic gas and the block's gas limit, to a
tolerance of 21,000: about 13 executions of the transaction per estimate, which made the
estimate most of the cost of every transaction sent to the embedded chain (tests, the demo).

``quick_estimate`` runs the transaction once with the block's gas limit and reads the gas it
used before refunds (what its gas limit must cover), adds 1/63 of it (EIP-150 keeps that
share of the remaining gas back at every call, so a transaction with nested calls needs a
little more than it uses) plus a call stipend, and confirms that limit with a second
execution. Only when that fails (a transaction whose path depends on ``gasleft()``) does it
fall back to the binary search, between that limit and the block's. An estimate is an
upper bound either way; ``TxQueue`` adds its margin on top, as for any chain.
"""

from __future__ import annotations

from typing import Any, cast

from eth.abc import ComputationAPI, SignedTransactionAPI, StateAPI
from eth.vm.spoof import SpoofTransaction

CALL_STIPEND = 2_300


def _run(state: StateAPI, transaction: SignedTransactionAPI, gas: int) -> ComputationAPI:
    """Execute ``transaction`` with ``gas`` and undo it; its computation."""
    spoofed = cast(SignedTransactionAPI, SpoofTransaction(transaction, gas=gas, gas_price=0))
    snapshot = state.snapshot()
    try:
        return state.apply_transaction(spoofed)
    finally:
        state.revert(snapshot)


def quick_estimate(state: StateAPI, transaction: SignedTransactionAPI) -> int:
    """The gas ``transaction`` needs in ``state``; raises its error if it fails even with the
    block's gas limit (as py-evm's estimator does)."""
    limit = state.gas_limit
    top = _run(state, transaction, limit)
    if top.is_error:
        raise top.error
    if top.get_gas_used() == 0:
        return transaction.intrinsic_gas  # no code ran (a plain transfer)
    needed = transaction.intrinsic_gas + top.get_gas_used()
    guess = min(limit, needed + needed // 63 + CALL_STIPEND)
    if not _run(state, transaction, guess).is_error:
        return guess
    low, high = guess, limit  # low fails, high succeeds
    while high - low > 21_000:
        mid = (low + high) // 2
        if _run(state, transaction, mid).is_error:
            low = mid
        else:
            high = mid
    return high


def tune(provider: Any) -> None:
    """Give ``provider``'s chain (an ``AsyncEthereumTesterProvider``'s) the quick estimate. Its
    chain class is made per tester, so this changes only this one: the
    class for the chains a revert to genesis builds, the instance for the one built already."""
    chain = provider.ethereum_tester.backend.chain
    type(chain).gas_estimator = staticmethod(quick_estimate)
    chain.gas_estimator = quick_estimate
