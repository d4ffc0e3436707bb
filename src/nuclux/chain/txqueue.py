"""One transaction queue per account: nonces, fees, fee bumping, confirmations, retries.

Several coroutines may send from one account at once. Nonces are assigned under a lock, from
the larger of the node's pending count and the queue's own counter, so concurrent senders
never collide; waiting for receipts happens outside the lock, so transactions pipeline.
A transaction is simulated (gas estimation) before it takes a nonce: a call that would revert
raises the contract's custom error and consumes nothing. A transaction not mined within
``bump_after`` seconds is re-signed with the same nonce and fees raised by ``bump_factor``
(a replacement); after ``timeout`` seconds the queue gives up with ``TransactionError``.
A receipt counts once it is ``confirmations`` blocks deep. A mined transaction that reverted
is replayed as a call at its block to recover the custom error.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any, cast

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import AsyncWeb3
from web3.exceptions import TransactionNotFound, Web3RPCError
from web3.types import Nonce, TxParams, TxReceipt
from web3.types import Wei as EthWei

from nuclux.chain.revert import decode_revert, revert_data_from_exception
from nuclux.errors import ChainError, ContractRevert, TransactionError

GAS_MARGIN = 1.2
GAS_PAD = 10_000


TIP_JITTER = 1 << 20  # wei added at random to the priority fee (``_set_fees``)
TAKEN_CHECK = 0.5  # seconds between checks that a pending transaction's nonce is not lost
NONCE_RETRIES = 5  # re-reads of the nonce when another process took it
# what nodes answer when a transaction with this nonce exists already (mined or pending);
# an identical transaction signed twice is "already imported": it must not count twice
_NONCE_TAKEN = (
    "nonce too low",
    "already imported",
    "already known",
    "replacement transaction underpriced",
)


class _NonceTaken(Exception):
    """The chain already has a transaction with the nonce this one was signed with."""


class TxQueue:
    def __init__(
        self,
        w3: AsyncWeb3[Any],
        account: LocalAccount,
        *,
        confirmations: int = 1,
        timeout: float = 120.0,
        automine: bool = False,
        bump_after: float = 20.0,
        bump_factor: float = 1.25,
        poll_interval: float = 0.05,
    ) -> None:
        self.w3 = w3
        self.account = account
        self.address = account.address
        self.confirmations = max(1, confirmations)
        self.timeout = timeout
        self.automine = automine
        self.bump_after = bump_after
        self.bump_factor = bump_factor
        self.poll_interval = poll_interval
        self._lock = asyncio.Lock()
        self._next_nonce: int | None = None
        self.sent = 0
        self.bumped = 0

    async def send(self, tx: TxParams, *, context: str = "") -> TxReceipt:
        """Sign, send and confirm ``tx``; raise ``ContractRevert`` or ``TransactionError``."""
        tx = cast(TxParams, dict(tx))
        tx["from"] = self.address
        tx["chainId"] = int(await self.w3.eth.chain_id)
        if "gas" not in tx:
            tx["gas"] = await self._estimate(tx, context)
        await self._set_fees(tx)
        for attempt in range(NONCE_RETRIES + 1):
            try:
                receipt = await self._wait(tx, await self._sign_and_send(tx, context), context)
                break
            except _NonceTaken as taken:
                # another process signing with this key (a CLI command beside the node's
                # daemon) used the nonce: read the count again and re-sign
                if attempt == NONCE_RETRIES:
                    raise TransactionError(
                        f"{context}: another sender took the nonce {NONCE_RETRIES + 1} times"
                        f" in a row: {taken}"
                    ) from None
        if receipt["status"] != 1:
            raise await self._explain_failure(tx, receipt, context)
        return receipt

    async def _sign_and_send(self, tx: TxParams, context: str) -> HexBytes:
        async with self._lock:
            tx["nonce"] = Nonce(await self._take_nonce())
            tx_hash = await self._send_signed(tx, context)
            self._next_nonce = int(tx["nonce"]) + 1
            self.sent += 1
            return tx_hash

    def forget_nonce(self) -> None:
        """Re-read the nonce from the node next time (after a devnet revert)."""
        self._next_nonce = None

    # ------------------------------------------------------------------ steps

    async def _estimate(self, tx: TxParams, context: str) -> int:
        try:
            est = int(await self.w3.eth.estimate_gas(tx))
        except Exception as exc:
            data = revert_data_from_exception(exc)
            if data is not None:
                raise decode_revert(data, context) from None
            raise TransactionError(f"{context}: gas estimation failed: {exc}") from exc
        return int(est * GAS_MARGIN) + GAS_PAD

    async def _set_fees(self, tx: TxParams) -> None:
        if "maxFeePerGas" in tx or "gasPrice" in tx:
            return
        block = await self.w3.eth.get_block("latest")
        base = int(block.get("baseFeePerGas", 0) or 0)
        try:
            tip = int(await self.w3.eth.max_priority_fee)
        except (Web3RPCError, ValueError):
            tip = 1_000_000_000
        # jitter: two queues for one key (a CLI command beside a node's daemon) that read the
        # same nonce for the same transaction would otherwise sign identical bytes, and a node
        # may take the second as the first sent again (both "sent", one transaction); with
        # different bytes the second is refused, or is seen to lose its nonce (``_wait``)
        tip += secrets.randbelow(TIP_JITTER)
        tx["maxPriorityFeePerGas"] = EthWei(tip)
        tx["maxFeePerGas"] = EthWei(2 * base + tip)

    async def _take_nonce(self) -> int:
        pending = int(await self.w3.eth.get_transaction_count(self.address, "pending"))
        if self._next_nonce is None or pending > self._next_nonce:
            return pending
        return self._next_nonce

    async def _send_signed(self, tx: TxParams, context: str) -> HexBytes:
        signed = self.account.sign_transaction(cast(dict[str, Any], tx))
        try:
            return HexBytes(await self.w3.eth.send_raw_transaction(signed.raw_transaction))
        except Exception as exc:
            data = revert_data_from_exception(exc)
            if data is not None:
                # Automining backends execute on send; the nonce is consumed by a mined revert.
                self._next_nonce = None
                raise decode_revert(data, context) from None
            self._next_nonce = None
            if any(sign in str(exc).lower() for sign in _NONCE_TAKEN):
                raise _NonceTaken(str(exc)) from exc
            raise TransactionError(f"{context}: the node refused the transaction: {exc}") from exc

    async def _wait(self, tx: TxParams, tx_hash: HexBytes, context: str) -> TxReceipt:
        """The receipt of ``tx`` (or of a replacement); ``_NonceTaken`` if another transaction
        was mined with its nonce instead."""
        hashes = [tx_hash]
        start = last_send = last_check = time.monotonic()
        while True:
            for h in hashes:
                receipt = await self._receipt(h)
                if receipt is not None and await self._await_depth(receipt, start, context):
                    return receipt
            now = time.monotonic()
            if now - last_check >= TAKEN_CHECK:
                last_check = now
                await self._check_nonce_kept(tx, hashes)
            if now - start > self.timeout:
                raise TransactionError(
                    f"{context}: transaction {tx_hash.hex()} not mined after {self.timeout:.0f}s "
                    f"(nonce {tx['nonce']}); it may still be mined later"
                )
            if not self.automine and now - last_send > self.bump_after:
                bumped = await self._bump(tx, context)
                if bumped is not None:
                    hashes.append(bumped)
                last_send = now
            await asyncio.sleep(self.poll_interval)

    async def _check_nonce_kept(self, tx: TxParams, hashes: list[HexBytes]) -> None:
        """Raise ``_NonceTaken`` if the account's mined count has passed ``tx``'s nonce and
        none of ``hashes`` was mined (receipts are read after the count, so a transaction of
        ours mined in between is seen)."""
        nonce = int(tx["nonce"])
        if int(await self.w3.eth.get_transaction_count(self.address, "latest")) <= nonce:
            return
        for h in hashes:
            if await self._receipt(h) is not None:
                return
        self._next_nonce = None
        raise _NonceTaken(f"nonce {nonce} was used by another transaction")

    async def _receipt(self, tx_hash: HexBytes) -> TxReceipt | None:
        try:
            return await self.w3.eth.get_transaction_receipt(tx_hash)
        except TransactionNotFound:
            return None

    async def _bump(self, tx: TxParams, context: str) -> HexBytes | None:
        """Replace a stuck transaction: same nonce, higher fees."""
        tx["maxPriorityFeePerGas"] = EthWei(
            int(int(tx["maxPriorityFeePerGas"]) * self.bump_factor) + 1
        )
        tx["maxFeePerGas"] = EthWei(int(int(tx["maxFeePerGas"]) * self.bump_factor) + 1)
        signed = self.account.sign_transaction(cast(dict[str, Any], tx))
        try:
            h = HexBytes(await self.w3.eth.send_raw_transaction(signed.raw_transaction))
        except Exception:  # the original may have just been mined; keep waiting for it
            return None
        self.bumped += 1
        return h

    async def _await_depth(self, receipt: TxReceipt, start: float, context: str) -> bool:
        """Wait until ``receipt`` is deep enough; False if a reorg dropped or moved it."""
        if self.automine or self.confirmations <= 1:
            return True
        target = int(receipt["blockNumber"]) + self.confirmations - 1
        while int(await self.w3.eth.block_number) < target:
            if time.monotonic() - start > self.timeout:
                raise TransactionError(f"{context}: not {self.confirmations} blocks deep in time")
            await asyncio.sleep(self.poll_interval)
        again = await self._receipt(HexBytes(receipt["transactionHash"]))
        return again is not None and again["blockHash"] == receipt["blockHash"]

    async def _explain_failure(self, tx: TxParams, receipt: TxReceipt, context: str) -> ChainError:
        call = {k: v for k, v in tx.items() if k in ("from", "to", "data", "value", "gas")}
        block = int(receipt["blockNumber"])
        for at in (block - 1, block):  # a pruning node may no longer hold the parent state
            try:
                await self.w3.eth.call(cast(TxParams, call), at)
            except Exception as exc:
                data = revert_data_from_exception(exc)
                if data is not None:
                    return decode_revert(data, context)
                continue
            break
        if int(receipt["gasUsed"]) >= int(tx["gas"]):
            return TransactionError(f"{context}: out of gas ({receipt['gasUsed']} used)")
        return ContractRevert(f"{context}: transaction reverted")
