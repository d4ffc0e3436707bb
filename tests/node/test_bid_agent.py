"""The provider's bid agent on the embedded chain: truthful sealed bids committed and revealed,
capacity reserved before bidding and never promised twice, released when a bid loses, fails
or was never revealed, the winner's Ticketed lease accepted on the capacity its bid held,
bid scripts (a price, ``skip``, and failures falling back to the cost), and a restart between
commit and reveal still revealing."""

from __future__ import annotations

import stat
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from nuclux.chain.market_ledger import STANDING_ALLOWANCE, MarketLedger, RequestStatus
from nuclux.core.auction import commitment
from nuclux.core.lease import LeaseState
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.node.agent import LeaseAgent
from nuclux.node.bid_agent import BidAgent
from nuclux.node.bid_agent_policy import PricePolicy
from nuclux.node.bid_agent_state import BidBook, read_summary
from nuclux.node.follower import ChainView
from nuclux.node.store import ShardStore
from tests.chain.auction_kit import after_commits, after_reveals, market
from tests.chain.world import World

STORAGE, COMPUTE = ResourceClass.STORAGE, ResourceClass.COMPUTE
UNIT = 1 << 20  # one storage unit is 1 MiB here, so a 10 MiB store holds 10 units
CAPACITY_UNITS = 10
RESERVE = 3 * 10**15
COSTS = {STORAGE: 10**15, COMPUTE: 2 * 10**15, ResourceClass.BANDWIDTH: 10**15}
TERM = 4


@dataclass
class Node:
    index: int
    view: ChainView
    store: ShardStore
    agent: LeaseAgent
    bids: BidAgent

    @property
    def owner(self) -> str:
        return self.agent.owner

    @property
    def book(self) -> BidBook:
        return self.bids.book

    async def tick(self) -> None:
        await self.view.catch_up()
        await self.bids.tick()
        await self.view.catch_up()
        await self.agent.tick()


@dataclass
class Nodes:
    world: World
    tmp: Path
    made: list[Node]

    async def start(
        self,
        index: int,
        *,
        costs: dict[ResourceClass, int] | None = None,
        script: Path | None = None,
        compute_units: int = 0,
        book_dir: Path | None = None,
    ) -> Node:
        w = self.world
        home = book_dir or self.tmp / f"node{index}-{len(self.made)}"
        home.mkdir(parents=True, exist_ok=True)
        view = ChainView(w.deployer)
        store = await ShardStore.open(
            home / f"store{len(self.made)}", CAPACITY_UNITS * UNIT, grace_seconds=60
        )
        op = w.operators[index]
        agent = LeaseAgent(
            w.providers[index].address,
            op,
            view,
            store,
            unit_bytes=UNIT,
            claim_every=3600,
            compute_units=compute_units,
        )
        policy = PricePolicy(dict(costs or COSTS), script, timeout=1.0)
        bids = BidAgent(
            agent,
            MarketLedger(w.conn, w.deployment, op.account),
            BidBook(home / "bids.sqlite3"),
            policy,
        )
        node = Node(index, view, store, agent, bids)
        self.made.append(node)
        return node

    async def stop(self, node: Node) -> None:
        self.made.remove(node)
        node.book.close()
        await node.store.close()
        node.view.close()


@pytest_asyncio.fixture
async def nodes(world: World, tmp_path: Path) -> AsyncIterator[Nodes]:
    for op in world.operators:  # operators pay the bid deposits
        await world.deployer.transfer(op.address, 10 * ONE_NUX)
    n = Nodes(world, tmp_path, [])
    try:
        yield n
    finally:
        for node in list(n.made):
            await n.stop(node)


async def post(
    w: World, cls: ResourceClass = STORAGE, units: int = 4, m: int = 1, m_min: int | None = None
) -> int:
    return await market(w.consumers[0]).post_request(cls, units, TERM, m, RESERVE, m_min=m_min)


async def run_auction(w: World, rid: int, *nodes: Node) -> None:
    """The nodes (which bid already) reveal, one of them finalises, and the winners' lease
    agents answer their tickets. ``rid`` is the latest request of the test: time moves past
    its windows, so past those of every request posted before it."""
    await after_commits(w, rid)
    for n in nodes:
        await n.tick()
    await after_reveals(w, rid)
    for n in nodes:
        await n.tick()
    for n in nodes:  # the lease agents see the Ticketed leases and answer them
        await n.tick()


def states(node: Node) -> dict[int, str]:
    return {b.request_id: b.state for b in node.book.all()}


# ------------------------------------------------------------------ truthful bidding


async def test_a_truthful_bid_is_committed_revealed_finalised_and_its_lease_accepted(
    nodes: Nodes,
) -> None:
    w = nodes.world
    node = await nodes.start(0)
    rid = await post(w, units=CAPACITY_UNITS)  # the whole store: the bid holds all of it
    await node.tick()
    bid = node.book.get(rid)
    assert bid is not None
    assert bid.state == "committed"
    assert bid.price == COSTS[STORAGE]
    on_chain = await market(w.deployer).bid(rid, node.owner)
    assert on_chain.commitment == commitment(COSTS[STORAGE], bid.salt, node.owner, rid)
    assert on_chain.depositor == w.operators[0].address
    assert node.book.reserved(STORAGE) == CAPACITY_UNITS

    await after_commits(w, rid)
    await node.tick()
    on_chain = await market(w.deployer).bid(rid, node.owner)
    assert on_chain.revealed
    assert on_chain.price == COSTS[STORAGE]

    await after_reveals(w, rid)  # nobody finalises: the bid agent does
    await node.tick()
    info = await market(w.deployer).request(rid)
    assert info.status is RequestStatus.CLEARED
    assert info.price == RESERVE
    won = node.book.get(rid)
    assert won is not None
    assert won.state in ("won", "leased")
    assert won.lease_id is not None
    await node.tick()
    # the lease needs the whole store, which only the winning bid held: accepted, not declined
    assert (await w.deployer.lease(won.lease_id)).state is LeaseState.ACTIVE
    assert node.agent.stats.declined == 0
    assert states(node)[rid] == "leased"
    assert node.book.reserved(STORAGE) == 0
    cap = await node.store.capacity()
    assert cap.reserved == CAPACITY_UNITS * UNIT
    assert node.book.counters()["won"] == 1
    assert node.book.counters()["finalized"] == 1


async def test_bids_above_the_reserve_and_classes_not_served_are_not_made(nodes: Nodes) -> None:
    w = nodes.world
    node = await nodes.start(0, costs={**COSTS, STORAGE: RESERVE + 1})
    expensive = await post(w)
    compute = await post(w, COMPUTE, units=1)  # this node offers no compute units
    await node.tick()
    assert node.book.get(expensive) is None
    assert node.book.get(compute) is None
    assert await market(w.deployer).bidders(expensive) == []
    assert await market(w.deployer).bidders(compute) == []
    assert node.book.counters()["skipped_reserve"] == 1


# ------------------------------------------------------------------ capacity


async def test_capacity_is_reserved_and_never_over_committed(nodes: Nodes) -> None:
    w = nodes.world
    node = await nodes.start(0, compute_units=4)
    first, second = await post(w, units=6), await post(w, units=6)  # 12 units, 10 in the store
    c1, c2 = await post(w, COMPUTE, units=3), await post(w, COMPUTE, units=3)
    await node.tick()
    assert [states(node).get(r) for r in (first, second, c1, c2)] == [
        "committed",
        None,
        "committed",
        None,
    ]
    assert node.book.reserved(STORAGE) == 6
    assert node.book.reserved(COMPUTE) == 3
    assert node.book.counters()["skipped_capacity"] == 2
    assert await market(w.deployer).bidders(second) == []

    # a direct lease asking for what the pending bids hold is declined
    direct = await w.consumers[1].open_lease(node.owner, STORAGE, 5, TERM, 2 * 10**15, ONE_NUX)
    small = await w.consumers[1].open_lease(node.owner, STORAGE, 4, TERM, 2 * 10**15, ONE_NUX)
    await node.tick()
    assert (await w.deployer.lease(direct)).state is LeaseState.CLOSED  # declined
    assert (await w.deployer.lease(small)).state is LeaseState.ACTIVE  # 6 held + 4 = 10

    # both won auctions become leases: 6 + 4 storage units, 3 compute units, nothing more
    await run_auction(w, c2, node)
    assert states(node)[first] == "leased"
    assert states(node)[c1] == "leased"
    assert (await node.store.capacity()).reserved == CAPACITY_UNITS * UNIT
    assert node.book.reserved(STORAGE) == 0
    assert node.book.reserved(COMPUTE) == 0


async def test_a_losing_bid_releases_its_capacity(nodes: Nodes) -> None:
    w = nodes.world
    cheap = await nodes.start(0)
    dear = await nodes.start(1, costs={**COSTS, STORAGE: 2 * 10**15})
    rid = await post(w, units=8)
    await cheap.tick()
    await dear.tick()
    assert dear.book.reserved(STORAGE) == 8
    follow = await post(w, units=8)  # dear cannot bid on it while its first bid is pending
    await dear.tick()
    assert dear.book.get(follow) is None

    await run_auction(w, rid, cheap, dear)
    assert states(cheap)[rid] == "leased"
    assert states(dear)[rid] == "lost"
    assert dear.book.reserved(STORAGE) == 0
    info = await market(w.deployer).request(rid)
    assert info.price == 2 * 10**15  # the second-lowest bid: dear's true cost
    assert (await dear.store.capacity()).reserved == 0

    later = await post(w, units=8)  # the capacity is free again
    await dear.tick()
    assert states(dear)[later] == "committed"


async def test_a_failed_request_and_an_unrevealed_bid_release_capacity(nodes: Nodes) -> None:
    w = nodes.world
    node = await nodes.start(0)
    failing = await post(w, units=3, m=2)  # only one bidder: fewer than m_min = 2 reveal
    await node.tick()
    await run_auction(w, failing, node)
    assert states(node)[failing] == "failed"
    assert (await market(w.deployer).request(failing)).status is RequestStatus.FAILED

    missed = await post(w, units=3)
    await node.tick()
    await after_reveals(w, missed)  # the agent was not running during the reveal window
    await node.tick()
    assert states(node)[missed] == "unrevealed"
    assert node.book.reserved(STORAGE) == 0
    counters = node.book.counters()
    assert counters["failed_requests"] == 1
    assert counters["unrevealed"] == 1


# ------------------------------------------------------------------ scripts


def script(tmp: Path, name: str, body: str) -> Path:
    path = tmp / name
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


HALF_RESERVE = f"""#!{sys.executable}
import json, sys
req = json.load(sys.stdin)
assert req["class"] == "storage" and req["cost_wei"] > 0
print(f"{{req['reserve_wei'] // 2}}wei")
"""
SLOW = "#!/bin/sh\nsleep 30\necho 0.001\n"
BROKEN = "#!/bin/sh\necho 'no price today' >&2\nexit 3\n"
NONSENSE = "#!/bin/sh\necho banana\n"
SKIP = "#!/bin/sh\ncat >/dev/null\necho skip\n"


@pytest.mark.parametrize(
    ("body", "price", "counter"),
    [
        (HALF_RESERVE, lambda: RESERVE // 2, "script_ok"),
        (SLOW, lambda: COSTS[STORAGE], "script_failures"),
        (BROKEN, lambda: COSTS[STORAGE], "script_failures"),
        (NONSENSE, lambda: COSTS[STORAGE], "script_failures"),
        (SKIP, lambda: None, "script_skip"),
    ],
    ids=["good", "slow", "broken", "nonsense", "skip"],
)
async def test_a_bid_script_prices_the_bid_or_falls_back_to_the_cost(
    nodes: Nodes,
    tmp_path: Path,
    body: str,
    price: Callable[[], int | None],
    counter: str,
) -> None:
    w = nodes.world
    node = await nodes.start(0, script=script(tmp_path, "bid.sh", body))
    rid = await post(w)
    await node.tick()
    expected = price()
    assert node.book.counters()[counter] == 1
    if expected is None:
        assert node.book.get(rid) is None
        assert await market(w.deployer).bidders(rid) == []
        return
    await after_commits(w, rid)
    await node.tick()
    on_chain = await market(w.deployer).bid(rid, node.owner)
    assert on_chain.revealed
    assert on_chain.price == expected
    summary = read_summary(node.book.path.parent)
    assert summary is not None
    assert summary["counters"][counter] == 1


# ------------------------------------------------------------------ restarts


async def test_a_restart_between_commit_and_reveal_still_reveals(nodes: Nodes) -> None:
    w = nodes.world
    home = nodes.tmp / "home"
    first = await nodes.start(0, book_dir=home)
    rid = await post(w)
    await first.tick()
    salt = first.book.get(rid).salt  # type: ignore[union-attr]
    await nodes.stop(first)  # the node goes down with the bid committed

    await after_commits(w, rid)
    again = await nodes.start(0, book_dir=home)
    assert states(again)[rid] == "committed"
    assert again.book.reserved(STORAGE) == 4
    await again.tick()
    on_chain = await market(w.deployer).bid(rid, again.owner)
    assert on_chain.revealed
    assert on_chain.price == COSTS[STORAGE]
    assert on_chain.commitment == commitment(COSTS[STORAGE], salt, again.owner, rid)
    await after_reveals(w, rid)
    await again.tick()
    await again.tick()
    assert states(again)[rid] == "leased"


async def test_a_runner_up_node_accepts_the_ticket_a_declining_winner_gave_up(
    nodes: Nodes,
) -> None:
    w = nodes.world
    cheap = await nodes.start(0)
    dear = await nodes.start(1, costs={**COSTS, STORAGE: 2 * 10**15})
    rid = await post(w, units=4)
    await cheap.tick()
    await dear.tick()
    await after_commits(w, rid)
    await cheap.tick()
    await dear.tick()
    await after_reveals(w, rid)
    await dear.tick()  # the runner-up finalises and learns it lost
    assert states(dear)[rid] == "lost"
    ((winner, lease),) = await market(w.deployer).winner_leases(rid)
    assert winner == cheap.owner
    await w.operators[0].decline(lease)  # the winner gives its ticket up: a fault
    await dear.tick()  # the runner-up's lease agent answers the ticket the house opened
    mine = [x for x in dear.view.leases_of_provider(dear.owner) if x.id != lease]
    assert len(mine) == 1
    got = await w.deployer.lease(mine[0].id)
    assert got.state is LeaseState.ACTIVE
    assert got.price == (await market(w.deployer).request(rid)).price == 2 * 10**15
    assert (await w.deployer.provider(cheap.owner)).faults == 1


# ------------------------------------------------------------------ latency


async def test_the_agent_bids_in_one_transaction_and_its_win_is_accepted_at_once(
    nodes: Nodes,
) -> None:
    """A standing deposit allowance (approved once, so each later bid is one transaction)
    and the won ticket accepted by the bid agent's own step, before the follower has seen
    the lease (the lease agent does not tick here)."""
    w = nodes.world
    node = await nodes.start(0)
    await node.view.catch_up()  # the registry, once: the view is not kept up to date here
    op = market(w.operators[0])
    first = await post(w)
    await node.bids.tick()
    allowance = await op._call(op.coin, "allowance", op.address, op.auctions.address)
    assert allowance == STANDING_ALLOWANCE  # never drawn down
    second = await post(w)
    before = await w.conn.block_number()
    await node.bids.tick()
    assert await w.conn.block_number() == before + 1  # the commit alone
    assert states(node)[second] == "committed"
    await after_commits(w, second)
    await node.bids.tick()
    await after_reveals(w, second)
    await node.bids.tick()  # finalises both and answers both tickets
    for rid in (first, second):
        won = node.book.get(rid)
        assert won is not None
        assert won.lease_id is not None
        assert won.state == "leased"
        assert (await w.deployer.lease(won.lease_id)).state is LeaseState.ACTIVE
        assert node.view.lease(won.lease_id) is None  # the follower never looked
