"""The embedded EVM's gas estimate (``nuclux.chain.embedded``): enough for the transaction
to succeed with exactly that gas, and close to the exact minimum py-evm's binary search finds
(a plain transfer, an ERC-20 transfer, an auction request whose permit runs in a try/catch,
a bid whose commit calls the registry)."""

from __future__ import annotations

from typing import Any

from eth.estimators.gas import binary_gas_search_exact
from web3.types import TxParams, Wei

from nuclux.chain.embedded import CALL_STIPEND
from nuclux.chain.ledger import Ledger
from nuclux.core.types import ResourceClass
from tests.chain.auction_kit import market, salt
from tests.chain.world import World

RESERVE, UNITS, TERM = 10**15, 10, 4


def chain_of(w: World) -> Any:
    return w.conn.w3.provider.ethereum_tester.backend.chain


async def check(w: World, who: Ledger, tx: TxParams) -> int:
    """The quick estimate of ``tx``, checked against the exact one and by sending it."""
    tx = {**tx, "from": who.address}
    quick = int(await w.conn.w3.eth.estimate_gas(tx))
    chain = chain_of(w)
    chain.gas_estimator = binary_gas_search_exact
    try:
        exact = int(await w.conn.w3.eth.estimate_gas(tx))
    finally:
        chain.gas_estimator = type(chain).gas_estimator
    assert exact <= quick <= exact + exact // 63 + CALL_STIPEND + 1
    receipt = await w.conn.queue(who.account).send({**tx, "gas": quick}, context="send")
    assert receipt["status"] == 1
    return quick


async def test_estimates_suffice_and_are_near_the_minimum(world: World) -> None:
    w = world
    c = w.consumers[0]
    other = w.consumers[1].address
    plain = await check(w, c, {"to": other, "value": Wei(1)})
    assert plain == 21_000
    await check(w, c, {"to": c.coin.address, "data": c.coin.encode_abi("transfer", [other, 5])})
    house = market(c)
    escrow = UNITS * TERM * RESERVE
    deadline, v, r, s = await house.permit_escrow(escrow)
    terms = (int(ResourceClass.STORAGE), UNITS, TERM, 1, 1, RESERVE, escrow)
    data = house.auctions.encode_abi("postWithPermit", [terms, [], deadline, v, r, s])
    await check(w, c, {"to": house.auctions.address, "data": data})
    bidder = market(w.providers[0])
    await bidder.ensure_deposit_allowance()
    sealed = house.auctions.functions.commitmentOf(RESERVE, salt("g"), bidder.address, 1)
    commitment = await sealed.call()
    data = bidder.auctions.encode_abi("commit", [1, bidder.address, commitment])
    await check(w, w.providers[0], {"to": bidder.auctions.address, "data": data})
