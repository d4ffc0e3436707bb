"""The chain adapter against a real anvil node, over JSON-RPC.

One anvil per module on a free loopback port, contracts deployed once; each test uses its own
dev accounts so tests do not interfere. Covers: NuxCoin through a plain web3 ERC-20 client, the
lease lifecycle with exact balance conservation and revert decoding on the JSON-RPC path,
concurrent sends from one account, and fee bumping of a stuck transaction.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.types import TxParams, Wei

from nuclux.chain import ChainConnection, Deployment, DeployParams, Ledger, deploy
from nuclux.chain.devnet import AnvilProcess, dev_account, find_anvil
from nuclux.chain.ledger import ProviderOffer
from nuclux.chain.txqueue import TIP_JITTER, TxQueue
from nuclux.core.lease import LeaseState
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.errors import ContractRevert, InvalidLeaseState

pytestmark = pytest.mark.anvil

# every epoch sampled: storage pay needs a proof of each epoch (blockhash seeds on anvil)
PARAMS = DeployParams(epoch_length=60, accept_window=300, dispute_window=300, sample_one_in=1)
START_NUX = 10_000 * ONE_NUX
FUNDED = (1, 3, 4, 5, 7)  # dev accounts paid NuxCoin by the deployer (account 0)

ERC20_ABI: list[dict[str, Any]] = json.loads("""[
 {"type": "function", "name": "name", "stateMutability": "view", "inputs": [],
  "outputs": [{"name": "", "type": "string"}]},
 {"type": "function", "name": "symbol", "stateMutability": "view", "inputs": [],
  "outputs": [{"name": "", "type": "string"}]},
 {"type": "function", "name": "decimals", "stateMutability": "view", "inputs": [],
  "outputs": [{"name": "", "type": "uint8"}]},
 {"type": "function", "name": "totalSupply", "stateMutability": "view", "inputs": [],
  "outputs": [{"name": "", "type": "uint256"}]},
 {"type": "function", "name": "balanceOf", "stateMutability": "view",
  "inputs": [{"name": "owner", "type": "address"}],
  "outputs": [{"name": "", "type": "uint256"}]},
 {"type": "function", "name": "transfer", "stateMutability": "nonpayable",
  "inputs": [{"name": "to", "type": "address"}, {"name": "value", "type": "uint256"}],
  "outputs": [{"name": "", "type": "bool"}]},
 {"type": "event", "name": "Transfer", "anonymous": false,
  "inputs": [{"name": "from", "type": "address", "indexed": true},
             {"name": "to", "type": "address", "indexed": true},
             {"name": "value", "type": "uint256", "indexed": false}]}
]""")


@dataclass
class Chain:
    node: AnvilProcess
    conn: ChainConnection
    deployment: Deployment

    def ledger(self, index: int) -> Ledger:
        return Ledger(self.conn, self.deployment, dev_account(index))


@pytest_asyncio.fixture(scope="module")
async def chain(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Chain]:
    binary = find_anvil()  # scripts/bootstrap installs it; a missing anvil is a failure
    node = AnvilProcess(tmp_path_factory.mktemp("anvil"), binary=binary)
    await node.start(timeout=20)
    try:
        async with await ChainConnection.open(node.rpc_url, tx_timeout=30) as conn:
            deployment = await deploy(conn, dev_account(0), PARAMS)
            faucet = Ledger(conn, deployment, dev_account(0))
            payees = [dev_account(i).address for i in FUNDED]
            await asyncio.gather(*(faucet.transfer(a, START_NUX) for a in payees))
            yield Chain(node, conn, deployment)
    finally:
        await node.stop(timeout=10)
    assert not node.running


async def test_nuxcoin_is_a_plain_erc20(chain: Chain) -> None:
    w3 = AsyncWeb3(AsyncHTTPProvider(chain.node.rpc_url))
    try:
        assert await w3.eth.chain_id == 31337
        coin = w3.to_checksum_address(chain.deployment.address("NuxCoin"))
        token = w3.eth.contract(address=coin, abi=ERC20_ABI)
        assert await token.functions.name().call() == "NuxCoin"
        assert await token.functions.symbol().call() == "NUX"
        assert await token.functions.decimals().call() == 18
        assert await token.functions.totalSupply().call() == PARAMS.supply

        sender, receiver = dev_account(1), dev_account(2)
        before = await token.functions.balanceOf(receiver.address).call()
        amount = 123 * ONE_NUX
        tx = await token.functions.transfer(receiver.address, amount).build_transaction(
            {
                "from": sender.address,
                "nonce": await w3.eth.get_transaction_count(sender.address, "pending"),
            }
        )
        signed = sender.sign_transaction(cast(dict[str, Any], tx))
        tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)
        assert receipt["status"] == 1
        (event,) = token.events.Transfer().process_receipt(receipt)
        assert event["args"]["from"] == sender.address
        assert event["args"]["to"] == receiver.address
        assert event["args"]["value"] == amount
        assert await token.functions.balanceOf(receiver.address).call() == before + amount
        assert await token.functions.balanceOf(sender.address).call() == START_NUX - amount
    finally:
        await w3.provider.disconnect()


async def test_lease_lifecycle_conserves_nux_and_decodes_reverts(chain: Chain) -> None:
    provider, consumer = chain.ledger(3), chain.ledger(4)
    lm = chain.deployment.address("LeaseManager")
    registry = chain.deployment.address("ProviderRegistry")
    holders = (provider.address, consumer.address, lm, registry)

    async def total() -> int:
        return sum([int(await provider.balance(a)) for a in holders])

    before = await total()
    prices = (10**15, 10**15, 10**15)
    offer = ProviderOffer("https://127.0.0.1:9000", b"\1" * 32, b"\2" * 32, (100, 4, 1000), prices)
    await provider.register_provider(offer, 100 * ONE_NUX)
    lease_id = await consumer.open_lease(
        provider.address, ResourceClass.STORAGE, 10, 5, 10**16, 10 * ONE_NUX
    )
    await provider.accept(lease_id)
    # storage pay is gated by proofs: seed each epoch from a block hash, answer it (the lease
    # holds no shares yet, so the proof is the call alone), then advance the pay cursor
    for _ in range(3):
        epoch = await provider.epoch()
        await provider.arm_seed(epoch)
        for _ in range(PARAMS.seed_delay + 1):  # gas estimation runs in the latest block
            await chain.conn.mine()
        await consumer.record_seed(epoch)
        assert await provider.is_sampled(lease_id, epoch)
        await provider.prove(lease_id, epoch, None)
        await chain.conn.advance_time(PARAMS.epoch_length)
    assert (await provider.advance(lease_id)).paid_epochs == 3
    assert await provider.claim(lease_id) == 3 * 10 * 10**15

    with pytest.raises(InvalidLeaseState) as caught:
        await provider.claim(lease_id)  # refused at gas estimation
    assert caught.value.error_name == "NothingToClaim"
    assert caught.value.error_args == (lease_id,)

    # A revert mined on chain (explicit gas skips estimation) is replayed for its reason.
    claim = provider.leases.encode_abi("claim", args=[lease_id + 1000])
    tx: TxParams = {"to": provider.leases.address, "data": claim, "gas": 200_000}
    with pytest.raises(ContractRevert) as mined:
        await chain.conn.queue(dev_account(3)).send(tx, context="mined revert")
    assert mined.value.error_name == "UnknownLease"

    await consumer.cancel(lease_id)
    await chain.conn.advance_time(PARAMS.dispute_window + PARAMS.epoch_length + 1)
    await consumer.settle(lease_id)
    assert (await consumer.lease(lease_id)).state == LeaseState.CLOSED
    assert await total() == before
    assert int(await consumer.balance(lm)) == 0


async def test_concurrent_sends_take_distinct_nonces(chain: Chain) -> None:
    sender, receiver = chain.ledger(5), dev_account(6).address
    start_nonce = await chain.conn.w3.eth.get_transaction_count(dev_account(5).address)
    before = await sender.balance(receiver)
    receipts = await asyncio.gather(*(sender.transfer(receiver, ONE_NUX + i) for i in range(20)))
    assert all(r["status"] == 1 for r in receipts)
    txs = [await chain.conn.w3.eth.get_transaction(r["transactionHash"]) for r in receipts]
    assert sorted(int(t["nonce"]) for t in txs) == list(range(start_nonce, start_nonce + 20))
    assert await sender.balance(receiver) == before + sum(ONE_NUX + i for i in range(20))


async def test_stuck_transaction_is_replaced_with_higher_fees(chain: Chain) -> None:
    account, receiver = dev_account(7), dev_account(8).address
    coin = chain.ledger(7).coin
    queue = TxQueue(chain.conn.w3, account, automine=False, bump_after=0.5, timeout=20)
    tx: TxParams = {"to": coin.address, "data": coin.encode_abi("transfer", args=[receiver, 7])}
    nonce = await chain.conn.w3.eth.get_transaction_count(account.address)
    before = await chain.ledger(7).balance(receiver)
    first_tip = int(await chain.conn.w3.eth.max_priority_fee)
    await chain.conn._dev_rpc("evm_setAutomine", [False])
    try:
        sending = asyncio.create_task(queue.send(tx, context="stuck transfer"))
        for _ in range(100):  # at most 5 s for the first replacement
            if queue.bumped or sending.done():
                break
            await asyncio.sleep(0.05)
        assert queue.bumped >= 1
        assert not sending.done()
    finally:
        await chain.conn._dev_rpc("evm_setAutomine", [True])
    await chain.conn.mine()
    receipt = await asyncio.wait_for(sending, timeout=10)
    assert receipt["status"] == 1
    mined = await chain.conn.w3.eth.get_transaction(receipt["transactionHash"])
    assert int(mined["nonce"]) == nonce
    # a replacement was mined: the first send's tip is below first_tip + TIP_JITTER
    assert int(mined["maxPriorityFeePerGas"]) > first_tip + TIP_JITTER
    assert await chain.conn.w3.eth.get_transaction_count(account.address) == nonce + 1
    assert await chain.ledger(7).balance(receiver) == before + 7  # the transfer happened once


def test_anvil_log_is_in_the_state_dir(chain: Chain) -> None:
    assert chain.node.log_path.parent == Path(chain.node.state_dir)
    assert chain.node.log_path.exists()


async def test_confirmation_depth_survives_a_reorg_that_drops_the_transaction(
    chain: Chain,
) -> None:
    """A receipt counts only once it is deep enough and still canonical: when a reorg drops
    the block holding it, the queue re-sends (same nonce) and the transfer happens once."""
    account, receiver = dev_account(4), dev_account(8).address
    coin = chain.ledger(4).coin
    w3 = chain.conn.w3
    queue = TxQueue(w3, account, confirmations=3, automine=False, bump_after=0.5, timeout=30)
    tx: TxParams = {"to": coin.address, "data": coin.encode_abi("transfer", args=[receiver, 5])}
    before = await chain.ledger(4).balance(receiver)
    nonce = await w3.eth.get_transaction_count(account.address)
    snap = await chain.conn.snapshot()
    sending = asyncio.create_task(queue.send(tx, context="deep transfer"))
    for _ in range(100):
        if await w3.eth.get_transaction_count(account.address) == nonce + 1:
            break
        await asyncio.sleep(0.05)
    first_block = await w3.eth.block_number
    await asyncio.sleep(0.3)
    assert not sending.done()  # mined, but not 3 blocks deep
    await chain.conn.revert(snap)  # the reorg: the block with the transfer is gone
    assert await w3.eth.get_transaction_count(account.address) == nonce
    for _ in range(200):
        if sending.done():
            break
        await chain.conn.mine()
        await asyncio.sleep(0.05)
    receipt = await asyncio.wait_for(sending, timeout=10)
    assert queue.bumped >= 1  # re-sent after the reorg
    canonical = await w3.eth.get_transaction_receipt(receipt["transactionHash"])
    assert canonical["blockHash"] == receipt["blockHash"]
    assert await w3.eth.block_number >= int(receipt["blockNumber"]) + 2
    assert await chain.ledger(4).balance(receiver) == before + 5  # exactly once
    assert first_block >= 1


async def test_two_signers_with_one_key_retry_a_taken_nonce(chain: Chain) -> None:
    """Two queues for one key (a CLI command beside a node's daemon): both read the same
    pending nonce; the one that loses the race re-reads it and re-signs instead of failing."""
    account = dev_account(9)
    one = TxQueue(chain.conn.w3, account, automine=True, timeout=20)
    two = TxQueue(chain.conn.w3, account, automine=True, timeout=20)
    start = await chain.conn.w3.eth.get_transaction_count(account.address, "pending")
    tx: TxParams = {"to": dev_account(8).address, "value": Wei(1), "gas": 21_000}
    receipts = await asyncio.gather(
        *(q.send(cast(TxParams, dict(tx)), context="race") for q in (one, two, one, two))
    )
    assert all(r["status"] == 1 for r in receipts)
    assert await chain.conn.w3.eth.get_transaction_count(account.address) == start + 4


async def test_a_nonce_taken_while_pending_is_sent_again_with_the_next(chain: Chain) -> None:
    """Another signer's transaction with the same nonce is mined instead of the queue's
    pending one: the queue sees its nonce used, re-signs with the next and is mined."""
    account, receiver = dev_account(9), dev_account(6).address
    w3 = chain.conn.w3
    queue = TxQueue(w3, account, automine=False, bump_after=60, timeout=20)
    nonce = await w3.eth.get_transaction_count(account.address)
    before = await w3.eth.get_balance(receiver)
    tx: TxParams = {"to": receiver, "value": Wei(5), "gas": 21_000}
    await chain.conn._dev_rpc("evm_setAutomine", [False])
    try:
        sending = asyncio.create_task(queue.send(tx, context="pending"))
        for _ in range(100):
            if queue.sent or sending.done():
                break
            await asyncio.sleep(0.05)
        assert queue.sent == 1
        assert not sending.done()
        other = account.sign_transaction(
            {
                "to": receiver,
                "value": 7,
                "gas": 21_000,
                "nonce": nonce,
                "chainId": int(await w3.eth.chain_id),
                "maxFeePerGas": 10**12,
                "maxPriorityFeePerGas": 10**11,  # outbids the queue's pending transaction
            }
        )
        await w3.eth.send_raw_transaction(other.raw_transaction)
    finally:
        await chain.conn._dev_rpc("evm_setAutomine", [True])
    await chain.conn.mine()  # the other transaction takes the nonce
    receipt = await asyncio.wait_for(sending, timeout=10)
    assert receipt["status"] == 1
    mined = await w3.eth.get_transaction(receipt["transactionHash"])
    assert int(mined["nonce"]) == nonce + 1
    assert int(mined["value"]) == 5
    assert await w3.eth.get_transaction_count(account.address) == nonce + 2
    assert await w3.eth.get_balance(receiver) == before + 12  # both transfers, once each
