"""Domain methods for one account: NuxCoin, the provider registry, the key directory, leases,
metered usage; the storage module's methods come from ``StorageLedger``
(``nuclux.chain.storage_ledger``) and the plumbing from ``LedgerBase``.

``Ledger(conn, deployment, account)`` sends through the account's ``TxQueue``; reads go
straight to the node. Every contract refusal surfaces as a ``ContractRevert`` subclass.
Opening a lease, registering and topping up approve exactly the amount needed first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from eth_account.signers.local import LocalAccount
from web3.contract import AsyncContract
from web3.exceptions import Web3RPCError
from web3.logs import DISCARD
from web3.types import TxReceipt

from nuclux.chain.logs import event_topics, tester_logs
from nuclux.chain.records import (
    BlockHeader,
    ChainEvent,
    ConflictReport,
    DemandInfo,
    LoggedEvent,
    ProviderInfo,
    ProviderOffer,
    SeedInfo,
    StorageBook,
    lease_from_raw,
    provider_from_raw,
)
from nuclux.chain.storage_ledger import StorageLedger
from nuclux.chain.usage import Usage, sign_usage
from nuclux.core.lease import Lease
from nuclux.core.types import LeaseId, ResourceClass, Wei
from nuclux.errors import ChainError, UsageError

__all__ = [
    "BlockHeader",
    "ChainEvent",
    "ConflictReport",
    "DemandInfo",
    "Ledger",
    "LoggedEvent",
    "ProviderInfo",
    "ProviderOffer",
    "SeedInfo",
    "StorageBook",
]


class Ledger(StorageLedger):
    def for_account(self, account: LocalAccount) -> Ledger:
        return Ledger(self.conn, self.deployment, account)

    # ------------------------------------------------------------------ NuxCoin

    async def balance(self, address: str | None = None) -> Wei:
        return Wei(int(await self._call(self.coin, "balanceOf", self._cs(address or self.address))))

    async def total_supply(self) -> Wei:
        return Wei(int(await self._call(self.coin, "totalSupply")))

    async def transfer(self, to: str, amount: int) -> TxReceipt:
        if amount <= 0:
            raise UsageError("amount must be positive")
        return await self._send(self.coin, "transfer", [self._cs(to), amount], "transfer")

    # ------------------------------------------------------------------ registry and keys

    async def register_provider(
        self, offer: ProviderOffer, stake: int, operator: str | None = None
    ) -> TxReceipt:
        await self._ensure_allowance(self.registry.address, stake)
        return await self._send(
            self.registry,
            "register",
            [
                self._cs(operator or self.address),
                stake,
                offer.endpoint,
                offer.cert_fingerprint,
                offer.x25519_key,
                list(offer.capacity),
                list(offer.price),
            ],
            "register provider",
        )

    async def update_provider(self, offer: ProviderOffer, provider: str | None = None) -> TxReceipt:
        return await self._send(
            self.registry,
            "update",
            [
                self._cs(provider or self.address),
                offer.endpoint,
                offer.cert_fingerprint,
                offer.x25519_key,
                list(offer.capacity),
                list(offer.price),
            ],
            "update provider",
        )

    async def set_operator(self, operator: str) -> TxReceipt:
        return await self._send(self.registry, "setOperator", [self._cs(operator)], "set operator")

    async def set_paused(self, paused: bool, provider: str | None = None) -> TxReceipt:
        return await self._send(
            self.registry,
            "setPaused",
            [self._cs(provider or self.address), paused],
            "pause provider",
        )

    async def leave(self) -> TxReceipt:
        return await self._send(self.registry, "leave", [], "leave")

    async def withdraw_stake(self) -> TxReceipt:
        return await self._send(self.registry, "withdraw", [], "withdraw stake")

    async def provider(self, address: str) -> ProviderInfo:
        p = await self._call(self.registry, "getProvider", self._cs(address))
        return provider_from_raw(self._cs(address), p)

    async def providers(self) -> list[ProviderInfo]:
        n = int(await self._call(self.registry, "providerCount"))
        out: list[ProviderInfo] = []
        for start in range(0, n, 100):
            page = await self._call(self.registry, "providersPage", start, 100)
            for addr in page:
                info = await self.provider(addr)
                if info.status != "none":
                    out.append(info)
        return out

    async def unbond_end(self, provider: str) -> int:
        return int(await self._call(self.registry, "unbondEnd", self._cs(provider)))

    async def publish_key(self, x25519_public: bytes) -> TxReceipt:
        if len(x25519_public) != 32:
            raise UsageError("an X25519 public key is 32 bytes")
        return await self._send(self.keydir, "publish", [x25519_public], "publish key")

    async def key_of(self, address: str) -> bytes | None:
        key = bytes(await self._call(self.keydir, "keyOf", self._cs(address)))
        return None if key == bytes(32) else key

    # ------------------------------------------------------------------ leases

    async def open_lease(
        self,
        provider: str,
        cls: ResourceClass,
        units: int,
        term_epochs: int,
        max_price: int,
        escrow: int,
        *,
        approved: bool = False,
    ) -> LeaseId:
        """Open a lease (Ticketed until the provider accepts), paying ``escrow`` into it.
        ``approved``: the caller has made the allowance cover it (``approve_escrow`` for
        several opens sent at once); otherwise it is approved here when short."""
        if units <= 0 or term_epochs <= 0 or escrow <= 0:
            raise UsageError("units, term and escrow must be positive")
        if not approved:
            await self._ensure_allowance(self.leases.address, escrow)
        receipt = await self._send(
            self.leases,
            "openLease",
            [self._cs(provider), int(cls), units, term_epochs, max_price, escrow],
            "open lease",
        )
        for ev in self.leases.events.LeaseOpened().process_receipt(receipt, errors=DISCARD):
            return LeaseId(int(ev["args"]["id"]))
        raise ChainError("open lease: no LeaseOpened event in the receipt")

    async def approve_escrow(self, total: int) -> None:
        """Let the LeaseManager draw ``total`` (the escrows of opens about to be sent at
        once, ``open_lease(approved=True)``): one approval when the allowance is short. An
        approval sets the allowance, so opens that approve each their own must not overlap."""
        if total > 0:
            await self._ensure_allowance(self.leases.address, total)

    async def accept(self, lease_id: int) -> TxReceipt:
        return await self._send(self.leases, "accept", [lease_id], f"accept lease {lease_id}")

    async def decline(self, lease_id: int) -> TxReceipt:
        return await self._send(self.leases, "decline", [lease_id], f"decline lease {lease_id}")

    async def extend(self, lease_id: int, epochs: int, add_escrow: int) -> TxReceipt:
        if add_escrow > 0:
            await self._ensure_allowance(self.leases.address, add_escrow)
        return await self._send(
            self.leases, "extend", [lease_id, epochs, add_escrow], f"extend lease {lease_id}"
        )

    async def accept_extension(self, lease_id: int) -> TxReceipt:
        return await self._send(
            self.leases, "acceptExtension", [lease_id], f"accept extension of lease {lease_id}"
        )

    async def decline_extension(self, lease_id: int) -> TxReceipt:
        return await self._send(
            self.leases, "declineExtension", [lease_id], f"decline extension of lease {lease_id}"
        )

    async def expire_extension(self, lease_id: int) -> TxReceipt:
        return await self._send(
            self.leases, "expireExtension", [lease_id], f"expire extension of lease {lease_id}"
        )

    async def top_up(self, lease_id: int, amount: int) -> TxReceipt:
        await self._ensure_allowance(self.leases.address, amount)
        return await self._send(
            self.leases, "topUp", [lease_id, amount], f"top up lease {lease_id}"
        )

    async def cancel(self, lease_id: int) -> TxReceipt:
        return await self._send(self.leases, "cancel", [lease_id], f"cancel lease {lease_id}")

    async def claim(self, lease_id: int) -> Wei:
        receipt = await self._send(self.leases, "claim", [lease_id], f"claim lease {lease_id}")
        for ev in self.leases.events.Claimed().process_receipt(receipt, errors=DISCARD):
            return Wei(int(ev["args"]["amount"]))
        return Wei(0)

    async def end_term(self, lease_id: int) -> TxReceipt:
        return await self._send(self.leases, "endTerm", [lease_id], f"end term of {lease_id}")

    async def expire_ticket(self, lease_id: int) -> TxReceipt:
        return await self._send(
            self.leases, "expireTicket", [lease_id], f"expire ticket {lease_id}"
        )

    async def settle(self, lease_id: int) -> TxReceipt:
        return await self._send(self.leases, "settle", [lease_id], f"settle lease {lease_id}")

    async def report_fault(self, lease_id: int, reason: bytes) -> TxReceipt:
        """Modules only: report a provable fault on a lease."""
        return await self._send(
            self.leases,
            "reportFault",
            [lease_id, reason.ljust(32, b"\0")],
            f"report fault on lease {lease_id}",
        )

    # ------------------------------------------------------------------ metered usage

    def _usage_module(self, cls: ResourceClass) -> AsyncContract:
        return self.conn.contract("CumulativeSettlement", self.module_of(cls))

    def sign_usage(self, cls: ResourceClass, usage: Usage) -> bytes:
        """This account's signature over ``usage`` for the class's module."""
        return sign_usage(self.account, usage, self.conn.chain_id, self.module_of(cls))

    async def submit_usage(
        self, cls: ResourceClass, usage: Usage, consumer_sig: bytes, provider_sig: bytes = b""
    ) -> TxReceipt:
        """Record a newer signed cumulative total (either party may submit)."""
        return await self._send(
            self._usage_module(cls),
            "submit",
            [usage.lease_id, usage.revision, usage.cumulative, consumer_sig, provider_sig],
            f"submit usage for lease {usage.lease_id}",
        )

    async def latest_usage(self, cls: ResourceClass, lease_id: int) -> tuple[int, Wei]:
        revision, total = await self._call(self._usage_module(cls), "latest", lease_id)
        return int(revision), Wei(int(total))

    async def prove_conflict(
        self, cls: ResourceClass, a: Usage, sig_a: bytes, b: Usage, sig_b: bytes
    ) -> TxReceipt:
        """Report two different totals the provider signed for one revision (a fault)."""
        if a.lease_id != b.lease_id or a.revision != b.revision:
            raise UsageError("a conflict is two totals for the same lease and revision")
        return await self._send(
            self._usage_module(cls),
            "proveConflict",
            [a.lease_id, a.revision, a.cumulative, sig_a, b.cumulative, sig_b],
            f"prove conflicting usage on lease {a.lease_id}",
        )

    # ------------------------------------------------------------------ leases (reads)

    async def lease(self, lease_id: int) -> Lease:
        raw = await self._call(self.leases, "getLease", lease_id)
        if int(raw[2]) == 0:
            raise UsageError(f"no lease with id {lease_id}")
        return lease_from_raw(lease_id, raw)

    async def leases_of(self, address: str, *, as_provider_only: bool = False) -> list[Lease]:
        """Every lease ``address`` holds as consumer (or provider), from LeaseOpened events."""
        who = self._cs(address)
        roles = ("provider",) if as_provider_only else ("consumer", "provider")
        ids = [
            int(e.args["id"])
            for e in await self.events(self.deployment.block)
            if e.name == "LeaseOpened" and who in (e.args[r] for r in roles)
        ]
        return [await self.lease(i) for i in ids]

    async def lease_count(self) -> int:
        return int(await self._call(self.leases, "leaseCount"))

    async def claimable(self, lease_id: int) -> tuple[Wei, Wei]:
        now, due = await self._call(self.leases, "claimable", lease_id)
        return Wei(int(now)), Wei(int(due))

    async def epoch(self) -> int:
        return int(await self._call(self.leases, "epoch"))

    # ------------------------------------------------------------------ history (chain followers)

    async def block_header(self, block: int | Literal["latest"] = "latest") -> BlockHeader | None:
        """A block's number, hash and timestamp; None if the chain has no such block (now)."""
        return await self.conn.block_head(block)

    async def lease_at(self, lease_id: int, block: int) -> Lease | None:
        """The lease as it was at ``block``; None if it did not exist then."""
        raw = await self._call_at(self.leases, "getLease", block, lease_id)
        return None if int(raw[2]) == 0 else lease_from_raw(lease_id, raw)

    async def provider_at(self, address: str, block: int) -> ProviderInfo | None:
        """The registry entry as it was at ``block``; None if not registered then."""
        raw = await self._call_at(self.registry, "getProvider", block, self._cs(address))
        return None if int(raw[1]) == 0 else provider_from_raw(self._cs(address), raw)

    async def registry_events(self, from_block: int, to_block: int) -> list[LoggedEvent]:
        """ProviderRegistry and LeaseManager events in a block range, in chain order: one
        eth_getLogs (on the embedded EVM, a read of its receipts)."""
        contracts = {c.address: c for c in (self.registry, self.leases)}
        logs: Sequence[Any]
        if self.conn.is_embedded:
            logs = tester_logs(self.conn, set(contracts), from_block, to_block)
        else:
            logs = await self.conn.w3.eth.get_logs(
                {"address": list(contracts), "fromBlock": from_block, "toBlock": to_block}
            )
        topics = {address: event_topics(c) for address, c in contracts.items()}
        out: list[LoggedEvent] = []
        for log in logs:
            address = self.conn.w3.to_checksum_address(log["address"])
            contract = contracts.get(address)
            if contract is None or not log["topics"]:
                continue
            name = topics[address].get(bytes(log["topics"][0]))
            if name is None:
                continue
            ev = contract.events[name]().process_log(log)
            out.append(
                LoggedEvent(
                    "LeaseManager" if contract is self.leases else "ProviderRegistry",
                    name,
                    dict(ev["args"]),
                    int(log["blockNumber"]),
                    bytes(log["blockHash"]),
                    int(log["logIndex"]),
                )
            )
        out.sort(key=lambda e: (e.block, e.log_index))
        return out

    async def _call_at(self, contract: AsyncContract, fn: str, block: int, *args: Any) -> Any:
        """A view call against the state at ``block``; the node's refusal is a ``ChainError``."""
        try:
            return await contract.get_function_by_name(fn)(*args).call(block_identifier=block)
        except Web3RPCError as exc:
            raise ChainError(f"{fn} at block {block}: {exc}") from exc

    # ------------------------------------------------------------------ events

    async def events(self, from_block: int = 0, to_block: int | None = None) -> list[ChainEvent]:
        """Every Nuclux event in a block range, in chain order."""
        last = to_block if to_block is not None else await self.conn.block_number()
        out: list[ChainEvent] = []
        for contract in (self.coin, self.registry, self.leases, self.keydir):
            logs = await self.conn.w3.eth.get_logs(
                {"address": contract.address, "fromBlock": from_block, "toBlock": last}
            )
            by_topic = event_topics(contract)
            for log in logs:
                name = by_topic.get(bytes(log["topics"][0])) if log["topics"] else None
                if name is None:
                    continue
                ev = contract.events[name]().process_log(log)
                out.append(
                    ChainEvent(
                        name, dict(ev["args"]), int(log["blockNumber"]), int(log["logIndex"])
                    )
                )
        out.sort(key=lambda e: (e.block, e.log_index))
        return out
