"""What every ledger shares: the connection, the deployment, the account and its contracts,
sending through the account's ``TxQueue``, reads that turn refusals into ``ContractRevert``
subclasses, and the module address of each resource class."""

from __future__ import annotations

from typing import Any

from eth_account.signers.local import LocalAccount
from web3.contract import AsyncContract
from web3.types import TxParams, TxReceipt

from nuclux.chain.connection import ChainConnection
from nuclux.chain.deployment import Deployment
from nuclux.chain.revert import decode_revert, revert_data_from_exception
from nuclux.core.types import Address, ResourceClass
from nuclux.errors import ChainError, UsageError


class LedgerBase:
    def __init__(
        self, conn: ChainConnection, deployment: Deployment, account: LocalAccount
    ) -> None:
        if deployment.chain_id != conn.chain_id:
            raise ChainError(
                f"the deployment is for chain {deployment.chain_id}, connected to {conn.chain_id}"
            )
        self.conn = conn
        self.deployment = deployment
        self.account = account
        self.address = Address(account.address)
        self.coin = conn.contract("NuxCoin", deployment.address("NuxCoin"))
        self.registry = conn.contract("ProviderRegistry", deployment.address("ProviderRegistry"))
        self.leases = conn.contract("LeaseManager", deployment.address("LeaseManager"))
        self.keydir = conn.contract("KeyDirectory", deployment.address("KeyDirectory"))

    # ------------------------------------------------------------------ plumbing

    async def _send(
        self, contract: AsyncContract, fn: str, args: list[Any], context: str
    ) -> TxReceipt:
        tx: TxParams = {"to": contract.address, "data": contract.encode_abi(fn, args=args)}
        return await self.conn.queue(self.account).send(tx, context=context)

    async def _call(self, contract: AsyncContract, fn: str, *args: Any) -> Any:
        try:
            return await contract.get_function_by_name(fn)(*args).call()
        except Exception as exc:
            data = revert_data_from_exception(exc)
            if data is not None:
                raise decode_revert(data, fn) from None
            raise

    def _cs(self, address: str) -> str:
        try:
            return str(self.conn.w3.to_checksum_address(address))
        except ValueError:
            raise UsageError(f"{address!r} is not an Ethereum address") from None

    async def _ensure_allowance(self, spender: str, amount: int) -> None:
        have = int(await self._call(self.coin, "allowance", self.address, spender))
        if have < amount:
            await self._send(self.coin, "approve", [spender, amount], "approve NuxCoin")

    # ------------------------------------------------------------------ modules

    def module_of(self, cls: ResourceClass) -> str:
        try:
            return self.deployment.modules[cls.name.lower()]
        except KeyError:
            raise ChainError(f"the deployment names no {cls.name.lower()} module") from None
