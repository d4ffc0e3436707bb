"""The consumer's side of each compute lease's account: the co-signed usage and paying jobs.

Theory of operation
-------------------
Per lease the consumer keeps a lock and the latest ``UsageState`` both sides signed, with
both signatures. On first use it reads the node's account (``ComputeNode.account``), checks
that the latest state there carries *its own* signature (EIP-712 ``Usage`` under the compute
module's domain) and the provider operator's, and pays every job the node lists as pending
(work done for this consumer that it did not countersign, e.g. before a crash): a provider
that ran a job is owed it.

After each job the consumer sends the next revision: ``UsageUpdate(revision + 1, paid,
declined, fuel_paid, cumulative = charge(fuel_paid, price))``, signed with
``Ledger.sign_usage``; the provider answers with its signature over the same ``Usage``, which
is checked against its registered operator before the new state is kept. The total is exact:
fuel x price over the lease, rounded once, so what a job costs is the difference of totals.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from nuclux.chain import Ledger
from nuclux.chain.usage import Usage, usage_signer
from nuclux.core.compute_account import UsageState, UsageUpdate, charge
from nuclux.core.types import ResourceClass
from nuclux.errors import IntegrityError
from nuclux.sdk.compute.leases import ComputeLease

COMPUTE = ResourceClass.COMPUTE


@dataclass
class _Account:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    state: UsageState | None = None  # None: not read from the node yet
    consumer_signature: bytes = b""
    provider_signature: bytes = b""


@dataclass(frozen=True, slots=True)
class Paid:
    """One countersignature: the new state and what it added (wei)."""

    state: UsageState
    cost: int


class Accounts:
    def __init__(self, ledger: Ledger, *, timeout: float = 30.0) -> None:
        self.ledger = ledger
        self.timeout = timeout  # one account read or countersignature
        self._accounts: dict[int, _Account] = {}
        self._module = ledger.module_of(COMPUTE)

    def _signer(self, usage: Usage, signature: bytes) -> str:
        who = usage_signer(usage, signature, self.ledger.conn.chain_id, self._module)
        return "" if who is None else who.lower()

    def latest(self, lease_id: int) -> tuple[Usage, bytes, bytes] | None:
        """The latest co-signed usage of a lease (usage, ours, the provider's), if any."""
        acct = self._accounts.get(lease_id)
        if acct is None or acct.state is None or acct.state.revision == 0:
            return None
        usage = Usage(lease_id, acct.state.revision, acct.state.cumulative)
        return usage, acct.consumer_signature, acct.provider_signature

    def state(self, lease_id: int) -> UsageState | None:
        acct = self._accounts.get(lease_id)
        return None if acct is None else acct.state

    async def sync(self, cl: ComputeLease) -> None:
        """Read the node's account of ``cl`` once (or again after ``forget``) and pay what
        it lists as pending."""
        acct = self._accounts.setdefault(cl.id, _Account())
        async with acct.lock:
            if acct.state is not None:
                return
            async with asyncio.timeout(self.timeout):
                remote = await cl.node.account(cl.id)
            if remote.lease_id != cl.id or remote.price != cl.lease.price:
                raise IntegrityError(
                    f"provider {cl.provider}: its account of lease {cl.id} names lease"
                    f" {remote.lease_id} at price {remote.price}, not {cl.lease.price}"
                )
            if remote.state.revision > 0:
                usage = Usage(cl.id, remote.state.revision, remote.state.cumulative)
                if self._signer(usage, remote.consumer_signature) != self.ledger.address.lower():
                    raise IntegrityError(
                        f"provider {cl.provider}: lease {cl.id} revision {usage.revision} is"
                        " not signed by this account"
                    )
                self._check_provider(cl, usage, remote.provider_signature)
                if charge(remote.state.fuel_paid, cl.lease.price) != remote.state.cumulative:
                    raise IntegrityError(f"lease {cl.id}: the node's total is not fuel x price")
            acct.state = remote.state
            acct.consumer_signature = remote.consumer_signature
            acct.provider_signature = remote.provider_signature
            if remote.pending:
                paid = {job: p.fuel_used for job, p in remote.pending.items()}
                await self._countersign(cl, acct, paid, ())

    def forget(self, lease_id: int) -> None:
        """Read the node's account again before the next job (after ``CountersignRequired``)."""
        acct = self._accounts.get(lease_id)
        if acct is not None and not acct.lock.locked():
            acct.state = None

    async def settle(
        self, cl: ComputeLease, paid: dict[bytes, int], declined: tuple[bytes, ...] = ()
    ) -> Paid:
        """Countersign jobs of ``cl``: pay ``paid`` (job id -> fuel used), decline
        ``declined``. Returns the new state and the wei it added."""
        await self.sync(cl)
        acct = self._accounts[cl.id]
        async with acct.lock:
            return await self._countersign(cl, acct, paid, declined)

    async def _countersign(
        self,
        cl: ComputeLease,
        acct: _Account,
        paid: dict[bytes, int],
        declined: tuple[bytes, ...],
    ) -> Paid:
        before = acct.state or UsageState()
        fuel = before.fuel_paid + sum(paid.values())
        update = UsageUpdate(
            lease_id=cl.id,
            revision=before.revision + 1,
            cumulative=charge(fuel, cl.lease.price),
            fuel_paid=fuel,
            paid=tuple(paid),
            declined=declined,
        )
        usage = Usage(cl.id, update.revision, update.cumulative)
        ours = self.ledger.sign_usage(COMPUTE, usage)
        async with asyncio.timeout(self.timeout):
            theirs = await cl.node.countersign(update, ours)
        self._check_provider(cl, usage, theirs)
        acct.state = UsageState(update.revision, update.fuel_paid, update.cumulative)
        acct.consumer_signature, acct.provider_signature = ours, theirs
        return Paid(acct.state, update.cumulative - before.cumulative)

    def _check_provider(self, cl: ComputeLease, usage: Usage, signature: bytes) -> None:
        if self._signer(usage, signature) != cl.info.operator.lower():
            raise IntegrityError(
                f"provider {cl.provider}: the usage of lease {cl.id} revision"
                f" {usage.revision} is not signed by its operator {cl.info.operator}"
            )
