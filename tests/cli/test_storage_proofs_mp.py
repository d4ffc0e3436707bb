"""Storage proofs on a multi-process network: anvil and two `nuclux node run` processes.

A consumer stores a file with the CLI (one share on each node). Chain time is moved on anvil
and blocks are mined; the nodes' provers, acting by themselves, get the sampled epochs proven
on chain (every epoch is sampled on this devnet) and the pay advanced, so the providers have
something to claim. Then one node's blobs are damaged on disk behind its back: it cannot
answer the consumer's demand, the deadline passes, the missed demand is reported, the share is
suspect and the fault counted. A proof with a wrong leaf is refused by the contract, through
the ledger against anvil. Finally `nuclux lease report-conflict` puts two revisions the other
provider signed with the same number on chain, a fault too.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from nuclux.chain import ChainConnection, Deployment, DeployParams, Ledger
from nuclux.chain.devnet import dev_account, devnet_down, devnet_up
from nuclux.chain.revision import Revision, revision_to_json
from nuclux.core.challenge import StorageProof
from nuclux.core.lease import Lease, LeaseState
from nuclux.core.merkle import LEAF_BYTES
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.errors import InvalidArgument
from nuclux.node.localnet import LocalNode, start_nodes, stop_nodes
from tests.cli.test_devnet_cli import Cli

pytestmark = pytest.mark.anvil

PARAMS = DeployParams(
    epoch_length=60,
    dispute_window=600,
    demand_window=120,
    sample_one_in=1,  # every epoch is sampled: the provers have work at once
    seed_delay=2,
)
CONSUMER = 1


@dataclass
class Net:
    cli: Cli
    tmp: Path
    rpc: str
    nodes: list[LocalNode]

    @property
    def deployment(self) -> Deployment:
        return Deployment.load(self.tmp / "data" / "devnet" / "deployment.json")

    def chain(self, work: Callable[[Ledger], Awaitable[Any]]) -> Any:
        """Run ``work`` with the consumer's ledger on anvil (its own event loop: the CLI runs
        ``asyncio.run`` itself, so the test is synchronous between steps)."""

        async def go() -> Any:
            async with await ChainConnection.open(self.rpc) as conn:
                return await work(Ledger(conn, self.deployment, dev_account(CONSUMER)))

        return asyncio.run(go())


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("proofs-mp")
    cli = Cli(tmp)
    state = tmp / "data" / "devnet"

    async def up() -> tuple[str, list[LocalNode]]:
        info = await devnet_up(state, params=PARAMS, funded=2, nux_each=10_000 * ONE_NUX)
        try:
            # two loopback networks: node 1 listens on 127.0.1.1 (its endpoint, on chain)
            return info.rpc_url, await start_nodes(state, 2, poll=0.2, networks=2)
        except BaseException:
            await down()
            raise

    async def down() -> None:
        try:
            await asyncio.wait_for(stop_nodes(state), 60)  # every recorded node, by PID
        finally:
            await asyncio.wait_for(devnet_down(state), 60)

    rpc, nodes = asyncio.run(up())
    try:
        yield Net(cli, tmp, rpc, nodes)
    finally:
        asyncio.run(down())


async def until(ledger: Ledger, done: Callable[[], Awaitable[bool]], what: str) -> None:
    """Mine a block every 0.2 s (the provers act on new blocks) until ``done``; a generous
    bound turns a stuck network into a failure that says what it waited for."""
    for _ in range(600):
        if await done():
            return
        await ledger.conn.mine()
        await asyncio.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


async def storage_leases(ledger: Ledger) -> list[Lease]:
    return [
        lease
        for lease in await ledger.leases_of(ledger.address)
        if lease.cls is ResourceClass.STORAGE and lease.state is LeaseState.ACTIVE
    ]


def damage_blobs(node: LocalNode) -> int:
    """Overwrite every blob of the node's store in place (same size, other bytes)."""
    count = 0
    for blob in (Path(node.data_dir) / "store" / "blobs").rglob("*"):
        if blob.is_file():
            size = blob.stat().st_size
            with blob.open("r+b") as f:
                f.write(os.urandom(size))
            count += 1
    return count


def test_provers_prove_and_a_damaged_node_misses_its_demand(net: Net, tmp_path: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(300_000))
    key = {"KEY": "0x" + bytes(dev_account(CONSUMER).key).hex()}
    put = net.cli.json(
        "put", str(data), "--k", "1", "--n", "2", "--days", "1", "--private-key-env", "KEY",
        env=key,
    )  # fmt: skip
    assert put["size"] == 300_000
    by_node: dict[str, int] = {}

    # ---- the provers, on their own, prove sampled epochs and advance the pay
    async def proven_and_paid(ledger: Ledger) -> list[tuple[int, int, int, int]]:
        leases = await storage_leases(ledger)
        assert {lease.provider for lease in leases} == {n.owner for n in net.nodes}
        by_node.update({lease.provider: lease.id for lease in leases})

        async def all_proven() -> bool:
            for lease in leases:
                evs = await ledger.storage_events(net.deployment.block, lease_id=lease.id)
                if not any(e.name == "EpochProven" for e in evs):
                    return False
            return True

        await until(ledger, all_proven, "an epoch proven on every lease")
        await ledger.conn.advance_time(PARAMS.epoch_length)  # the proven epochs can be decided

        async def all_paid() -> bool:
            books = [await ledger.storage_book(lease.id) for lease in leases]
            return all(book.paid_epochs > 0 for book in books)

        await until(ledger, all_paid, "pay advanced on every lease")
        out: list[tuple[int, int, int, int]] = []
        for lease in leases:
            book = await ledger.storage_book(lease.id)
            now, _ = await ledger.claimable(lease.id)
            fresh = await ledger.lease(lease.id)
            assert (
                now == min(fresh.escrow, book.paid_epochs * fresh.units * fresh.price) - fresh.paid
            )
            proofs = [
                e
                for e in await ledger.storage_events(net.deployment.block, lease_id=lease.id)
                if e.name == "EpochProven"
            ]
            out.append((book.revision, book.share_count, len(proofs), now))
        return out

    for revision, shares, proofs, claimable in net.chain(proven_and_paid):
        assert revision >= 1  # the node put its co-signed revision on chain with a proof
        assert shares >= 1
        assert proofs >= 1
        assert claimable > 0

    # ---- a node whose blobs are damaged cannot answer a demand: a fault, the share suspect
    bad, good = net.nodes
    assert damage_blobs(bad) > 0
    lid = by_node[bad.owner]

    async def demand_lapses(ledger: Ledger) -> tuple[bool, bool, int, list[str]]:
        await ledger.demand_proof(lid, 0)
        demand = await ledger.open_demand(lid)
        assert demand is not None
        for _ in range(PARAMS.seed_delay + 1):
            await ledger.conn.mine()
        await ledger.record_demand_seed(lid)
        # a proof with a wrong leaf and no paths: refused on chain, the demand stays open
        wrong = StorageProof(1, os.urandom(LEAF_BYTES), (), ())
        with pytest.raises(InvalidArgument, match="BadProof"):
            await ledger.answer_demand(lid, wrong)
        assert await ledger.open_demand(lid) is not None
        for _ in range(20):  # the node's prover sees these blocks and cannot answer
            await ledger.conn.mine()
            await asyncio.sleep(0.2)
        await ledger.conn.advance_time(PARAMS.demand_window + 1)
        assert await ledger.open_demand(lid) is not None  # still unanswered
        failed = await ledger.report_missed_demand(lid)
        book = await ledger.storage_book(lid)
        suspect = await ledger.is_suspect(lid, book.revision, 0)
        faults = (await ledger.lease(lid)).faults
        names = [e.name for e in await ledger.storage_events(net.deployment.block, lease_id=lid)]
        return failed, suspect, faults, names

    failed, suspect, faults, names = net.chain(demand_lapses)
    assert (failed, suspect, faults) == (False, True, 1)
    assert "DemandMissed" in names
    assert "DemandAnswered" not in names
    assert "it is damaged" in bad.log_path.read_text()  # the prover says why it cannot prove

    # ---- two revisions the healthy provider signed with one number: reported by command
    glid = by_node[good.owner]

    async def signed_pair(ledger: Ledger) -> list[dict[str, Any]]:
        owner = ledger.for_account(Account.from_key(bytes.fromhex(good.owner_key)))
        number = (await ledger.storage_book(glid)).revision + 5
        a = Revision(glid, number, 1000, 1, bytes(range(32)))
        b = Revision(glid, number, 2000, 1, bytes(range(32)))
        return [revision_to_json(r, owner.sign_revision(r)) for r in (a, b)]

    docs = net.chain(signed_pair)
    files = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, doc in zip(files, docs, strict=True):
        path.write_text(json.dumps(doc))
    args = ("lease", "report-conflict", *map(str, files), "--private-key-env", "KEY")
    same = net.cli.run("lease", "report-conflict", str(files[0]), str(files[0]),
                       "--private-key-env", "KEY", env=key)  # fmt: skip
    assert same.exit_code == 2, same.output
    assert "are the same" in same.output
    out = net.cli.json(*args, env=key)
    assert (out["id"], out["faults"], out["lease_failed"]) == (glid, 1, False)
    again = net.cli.run(*args, env=key)
    assert again.exit_code == 5, again.output
    assert "ConflictAlreadyReported" in again.output
