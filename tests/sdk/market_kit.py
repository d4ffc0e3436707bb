"""An in-process network for market tests: an embedded chain whose auctions have short
windows, provider nodes that accept leases (their own bid agents off), and a scripted bidder
that commits and reveals chosen prices from the providers' accounts on every new request."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from eth_utils.crypto import keccak

from nuclux.chain import ChainConnection
from nuclux.chain.market_ledger import MarketLedger, RequestStatus
from nuclux.errors import ChainError
from tests.chain.world import PARAMS, build_world
from tests.node.local_nodes import node_config
from tests.sdk.network import Network

WINDOW = 12  # seconds of chain time, commit and reveal each (every transaction here mines
# a block, which moves the embedded chain's time on by a second)
NODES = 4  # nodes running; provider NODES (registered too) runs none and never accepts
# nodes 0 and 1 share a /24 network, 2 and 3 have one each (placement spreads across them)
HOSTS = ("127.0.0.1", "127.0.0.1", "127.0.1.1", "127.0.2.1")
MARKET_PARAMS = dataclasses.replace(
    PARAMS, auction_commit_window=WINDOW, auction_reveal_window=WINDOW
)


async def start_market_network(tmp: Path) -> Network:
    conn = await ChainConnection.open("embedded")
    world = await build_world(
        conn, n_providers=NODES + 1, n_consumers=2, register=NODES + 1, params=MARKET_PARAMS
    )
    configs = []
    for i in range(NODES):
        cfg = node_config(tmp, world, i, HOSTS[i])
        if hasattr(cfg, "bid_poll"):  # this test bids itself
            cfg = dataclasses.replace(cfg, bid_poll=0.0)
        configs.append(cfg)
    net = Network(world, configs)
    net.nodes = [None] * NODES
    for i in range(NODES):
        await net.start(i)
    return net


async def stop_market_network(net: Network) -> None:
    for i in range(NODES):
        await net.stop(i)
    await net.conn.close()


def house(net: Network, i: int) -> MarketLedger:
    p = net.world.providers[i]
    return MarketLedger(p.conn, p.deployment, p.account)


async def _bid_on(net: Network, rid: int, prices: Mapping[int, int]) -> None:
    sealed: list[tuple[MarketLedger, int, bytes]] = []
    info = await house(net, 0).request(rid)
    for i, price in prices.items():
        if price > info.reserve:
            continue
        m = house(net, i)
        if info.excluded and await m.is_excluded(rid, m.address):
            continue  # as a bid agent does: the contract refuses its bid
        salt = keccak(text=f"market-test/{rid}/{i}")
        await m.commit_bid(rid, price, salt)
        sealed.append((m, price, salt))
    # every bid is sealed: move chain time past the commit window rather than wait it out
    now = await net.conn.now()
    if now <= info.commit_end:
        await net.conn.advance_time(info.commit_end - now + 1)
    for m, price, salt in sealed:
        with contextlib.suppress(ChainError):
            await m.reveal_bid(rid, price, salt)
    now = await net.conn.now()  # every bid is revealed: on to the end of the reveal window
    if now <= info.reveal_end:
        await net.conn.advance_time(info.reveal_end - now + 1)


@contextlib.asynccontextmanager
async def bidders(net: Network, prices: Mapping[int, int]) -> AsyncIterator[list[int]]:
    """While open: providers ``i`` bid ``prices[i]`` per unit on every new request (those at
    or below its reserve, not excluded by it). Yields the ids of the requests bid on."""
    seen = await house(net, 0).request_count()
    bid_on: list[int] = []
    errors: list[BaseException] = []

    async def bid(rid: int) -> None:
        try:
            await _bid_on(net, rid, prices)
        except Exception as err:  # reported when the block exits
            errors.append(err)

    async def loop() -> None:
        nonlocal seen
        tasks: list[asyncio.Task[None]] = []
        try:
            while True:
                count = await house(net, 0).request_count()
                for rid in range(seen + 1, count + 1):
                    if (await house(net, 0).request(rid)).status is RequestStatus.OPEN:
                        bid_on.append(rid)
                        tasks.append(asyncio.create_task(bid(rid)))
                seen = count
                await asyncio.sleep(0.1)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    task = asyncio.create_task(loop())
    try:
        yield bid_on
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if errors:
        raise errors[0]
