"""Gas used by each ledger operation on the embedded EVM, as ``name=value`` lines.

    .venv/bin/python bench/gas.py

Goals: open lease <= 200k gas, claim <= 60k, one storage proof <= 60k. Each figure is the
gasUsed of one transaction (approvals are separate transactions and listed on their own).
Claim is measured as the provider's second claim on a storage lease (the common case: the
provider already holds NuxCoin), after `advance` confirmed a proven epoch.

Storage proofs are measured on lease trees of three shapes, the challenged leaf a full
256-byte leaf (``LEAF_BYTES``) of random bytes (ciphertext): ``gas_proof`` a lease of 256
shares of 1 MiB (20 path hashes), ``gas_proof_small`` one share of one leaf (no path),
``gas_proof_large`` 65,536 shares of 1 GiB (38 path hashes). The revision and the epoch's
seed are already on chain. ``gas_proof_calldata`` is the typical proof's calldata cost (16
gas per non-zero byte, 4 per zero byte), ``gas_proof_floor`` the EIP-7623 floor it implies
(21000 + 10 gas per calldata token; the embedded EVM runs Prague rules) and
``gas_proof_execution`` what the transaction paid beyond 21000 and that calldata cost: a
proof pays the larger of ``21000 + calldata + execution`` and the floor.
``gas_advance_per_epoch`` is the marginal cost of deciding one more epoch in a batched
`advance`.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3.logs import DISCARD

from nuclux.chain import ChainConnection, DeployParams, Ledger, deploy
from nuclux.chain.ledger import ProviderOffer
from nuclux.chain.revision import Revision, SignedRevision
from nuclux.chain.usage import Usage
from nuclux.core.challenge import (
    StorageProof,
    challenged_leaf,
    challenged_share,
    seed_from_block_hash,
)
from nuclux.core.merkle import LEAF_BYTES, entry_hash, leaf_hash, path_root, proof_length
from nuclux.core.types import ONE_NUX, ResourceClass

GOALS = {"gas_open_lease": 200_000, "gas_claim": 60_000, "gas_proof": 60_000}
# name: (shares in the lease, leaves per share)
SHAPES = {
    "gas_proof_small": (1, 1),
    "gas_proof": (256, (1 << 20) // LEAF_BYTES),
    "gas_proof_large": (2**16, (1 << 30) // LEAF_BYTES),
}


def key(label: str) -> LocalAccount:
    acct: LocalAccount = Account.from_key(keccak(text=f"nuclux-bench/{label}"))
    return acct


async def main() -> dict[str, int]:
    out: dict[str, int] = {}
    conn = await ChainConnection.open("embedded")
    try:
        d = key("deployer")
        await conn.fund_gas(d.address, 10**21)
        p = DeployParams(epoch_length=60)
        dep = await deploy(conn, d, p)
        # deployment gas from the receipts of the creating transactions
        names = {addr: name for name, addr in dep.addresses.items()}
        names[dep.modules["compute"]] = "CumulativeSettlement"
        for n in range(1, dep.block + 1):
            for tx_hash in (await conn.w3.eth.get_block(n))["transactions"]:
                r = await conn.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
                name = names.get(str(r["contractAddress"]))
                if name:
                    out[f"gas_deploy_{name}"] = int(r["gasUsed"])
        reg, lm = dep.address("ProviderRegistry"), dep.address("LeaseManager")
        bank = Ledger(conn, dep, d)
        prov, op, cons = (bank.for_account(key(x)) for x in ("provider", "operator", "consumer"))
        for who in (prov, op, cons):
            await conn.fund_gas(who.address, 10**20)

        async def gas(who: Ledger, contract: Any, fn: str, args: list[Any]) -> int:
            r = await who._send(contract, fn, args, fn)
            return int(r["gasUsed"])

        out["gas_erc20_transfer_new_holder"] = await gas(
            bank, bank.coin, "transfer", [cons.address, 10_000 * ONE_NUX]
        )
        out["gas_erc20_transfer"] = await gas(
            bank, bank.coin, "transfer", [cons.address, 1_000 * ONE_NUX]
        )
        await bank.transfer(prov.address, 1_000 * ONE_NUX)
        out["gas_erc20_approve"] = await gas(prov, prov.coin, "approve", [reg, 500 * ONE_NUX])
        offer = ProviderOffer(
            "https://127.0.0.1:7000",
            b"\1" * 32,
            b"\2" * 32,
            (1000, 4, 1000),
            (10**15, 10**15, 10**15),
        )
        out["gas_register"] = await gas(
            prov,
            prov.registry,
            "register",
            [
                op.address,
                200 * ONE_NUX,
                offer.endpoint,
                offer.cert_fingerprint,
                offer.x25519_key,
                list(offer.capacity),
                list(offer.price),
            ],
        )
        out["gas_publish_key"] = await gas(cons, cons.keydir, "publish", [b"\3" * 32])
        await gas(cons, cons.coin, "approve", [lm, 10**30])

        async def open_one(term: int = 10) -> tuple[int, int]:
            r = await cons._send(
                cons.leases, "openLease", [prov.address, 0, 10, term, 10**15, ONE_NUX], "open"
            )
            lid = cons.leases.events.LeaseOpened().process_receipt(r, errors=DISCARD)[0]["args"][
                "id"
            ]
            return int(lid), int(r["gasUsed"])

        lid, out["gas_open_lease"] = await open_one(term=100)
        out["gas_accept"] = await gas(op, op.leases, "accept", [lid])
        # storage pay needs proofs: seed every epoch from the lease's first until one is
        # sampled, prove it (the lease holds nothing yet, so the call is the proof), confirm
        # it with `advance`, claim. Every block moves the embedded chain's clock, so an epoch
        # may end while one is seeded: none may be skipped, or `advance` stops at the gap.
        e = (await op.lease(lid)).start_epoch
        for name in ("gas_claim_first", "gas_claim"):
            while True:
                if e > await op.epoch():
                    await next_epoch(conn, p)
                await seed_epoch(conn, op, p, e)
                sampled = await op.is_sampled(lid, e)
                if sampled:
                    await op.prove(lid, e, None)
                e += 1
                if sampled:
                    break
            if e > await op.epoch():
                await next_epoch(conn, p)
            await op.advance(lid)
            out[name] = await gas(op, op.leases, "claim", [lid])
        out["gas_extend"] = await gas(cons, cons.leases, "extend", [lid, 5, ONE_NUX])
        out["gas_accept_extension"] = await gas(op, op.leases, "acceptExtension", [lid])
        out["gas_top_up"] = await gas(cons, cons.leases, "topUp", [lid, ONE_NUX])
        out["gas_cancel"] = await gas(cons, cons.leases, "cancel", [lid])
        await conn.advance_time(p.dispute_window + 1)
        out["gas_settle"] = await gas(cons, cons.leases, "settle", [lid])
        lid2, _ = await open_one()
        out["gas_decline"] = await gas(op, op.leases, "decline", [lid2])
        lid3, _ = await open_one()
        await gas(op, op.leases, "accept", [lid3])
        await conn.advance_time(11 * 60)
        out["gas_end_term"] = await gas(cons, cons.leases, "endTerm", [lid3])
        lid4, _ = await open_one()
        await conn.advance_time(p.accept_window + 1)
        out["gas_expire_ticket"] = await gas(cons, cons.leases, "expireTicket", [lid4])

        # a metered (compute) lease: the provider submits a co-signed cumulative total
        r = await cons._send(
            cons.leases, "openLease", [prov.address, 1, 1, 10, 10**15, ONE_NUX], "open"
        )
        ev = cons.leases.events.LeaseOpened().process_receipt(r, errors=DISCARD)[0]
        lid5 = int(ev["args"]["id"])
        await op.accept(lid5)
        compute = ResourceClass.COMPUTE
        for rev in (1, 2):
            u = Usage(lid5, rev, rev * 10**15)
            r = await op.submit_usage(
                compute, u, cons.sign_usage(compute, u), op.sign_usage(compute, u)
            )
            out["gas_submit_usage_first" if rev == 1 else "gas_submit_usage"] = int(r["gasUsed"])
        out["gas_claim_metered"] = await gas(op, op.leases, "claim", [lid5])
        out.update(await storage_figures(conn, p, cons, prov, op))
    finally:
        await conn.close()
    return out


async def next_epoch(conn: ChainConnection, p: DeployParams) -> None:
    await conn.advance_time(p.epoch_length - await conn.now() % p.epoch_length)


async def seed_epoch(
    conn: ChainConnection, who: Ledger, p: DeployParams, epoch: int | None = None
) -> tuple[int, int]:
    """Arm and record an epoch's seed (the current epoch's by default); (epoch, seed)."""
    e = await who.epoch() if epoch is None else epoch
    await who.arm_seed(e)
    for _ in range(p.seed_delay + 1):
        await conn.mine()
    await who.record_seed(e)
    return e, (await who.seed(e)).value


def bench_tree(
    seed: int, lid: int, shares: int, leaves: int, share: int | None = None
) -> tuple[bytes, StorageProof]:
    """A lease root of ``shares`` shares of ``leaves`` leaves each and the proof of the leaf a
    challenge with ``seed`` picks (in share ``share`` for a demand); only that leaf's bytes
    are real, every other hash in the trees is random (so the paths are random hashes and the
    roots are where they lead)."""
    rng = random.Random(shares * leaves)
    s = challenged_share(seed, lid, shares) if share is None else share
    j = challenged_leaf(seed, lid, leaves)
    leaf = rng.randbytes(LEAF_BYTES)
    share_path = tuple(rng.randbytes(32) for _ in range(proof_length(j, leaves)))
    lease_path = tuple(rng.randbytes(32) for _ in range(proof_length(s, shares)))
    share_root = path_root(leaf_hash(leaf), j, leaves, share_path) or _missing()
    root = path_root(entry_hash(share_root, leaves), s, shares, lease_path) or _missing()
    return root, StorageProof(leaves, leaf, share_path, lease_path)


def calldata_gas(data: bytes) -> int:
    return sum(4 if b == 0 else 16 for b in data)


async def storage_figures(
    conn: ChainConnection, p: DeployParams, cons: Ledger, prov: Ledger, op: Ledger
) -> dict[str, int]:
    out: dict[str, int] = {}
    store = op._storage()

    async def gas(who: Ledger, fn: str, args: list[Any]) -> int:
        r = await who._send(store, fn, args, fn)
        return int(r["gasUsed"])

    async def open_storage() -> int:
        lid = await cons.open_lease(prov.address, ResourceClass.STORAGE, 10, 500, 10**15, ONE_NUX)
        await op.accept(lid)
        return lid

    lid = await open_storage()
    revision = 0

    def signed(root: bytes, shares: int, leaves: int) -> SignedRevision:
        nonlocal revision
        revision += 1
        rev = Revision(lid, revision, shares * leaves * LEAF_BYTES, shares, root)
        return SignedRevision(rev, cons.sign_revision(rev), op.sign_revision(rev))

    # a seed: armed, then recorded once its block exists
    await next_epoch(conn, p)
    e = await op.epoch()
    out["gas_arm_seed"] = await gas(op, "armSeed", [e])
    for _ in range(p.seed_delay + 1):
        await conn.mine()
    out["gas_record_seed"] = await gas(op, "recordSeed", [e])
    seed = (await op.seed(e)).value

    # proofs against a revision already on chain, for three lease shapes
    for i, (name, (shares, leaves)) in enumerate(SHAPES.items()):
        if i:
            await next_epoch(conn, p)
            e, seed = await seed_epoch(conn, op, p)
        root, proof = bench_tree(seed, lid, shares, leaves)
        r = await op.submit_revision(signed(root, shares, leaves))
        out["gas_revision_first" if i == 0 else "gas_revision"] = int(r["gasUsed"])
        r = await op.prove(lid, e, proof)
        out[name] = int(r["gasUsed"])
        if name == "gas_proof":
            tx = await conn.w3.eth.get_transaction(r["transactionHash"])
            out["gas_proof_calldata"] = calldata_gas(bytes(tx["input"]))
            # EIP-7623 (Prague): a transaction pays at least 21000 + 10 gas per calldata
            # token (a zero byte is one token, a non-zero byte four); proofs are bound by it
            out["gas_proof_floor"] = 21_000 + 10 * out["gas_proof_calldata"] // 4
            out["gas_proof_execution"] = out[name] - 21_000 - out["gas_proof_calldata"]
            out["gas_proof_path_hashes"] = len(proof.share_path) + len(proof.lease_path)

    # the provider brings a newer co-signed revision along with its proof
    shares, leaves = SHAPES["gas_proof"]
    await next_epoch(conn, p)
    e, seed = await seed_epoch(conn, op, p)
    root, proof = bench_tree(seed, lid, shares, leaves)
    r = await op.prove(lid, e, proof, revision=signed(root, shares, leaves))
    out["gas_proof_with_revision"] = int(r["gasUsed"])

    # the first transaction that needs a seed records it: here, the proof
    await next_epoch(conn, p)
    e = await op.epoch()
    await op.arm_seed(e)
    for _ in range(p.seed_delay + 1):
        await conn.mine()
    target = (await op.seed(e)).target
    seed = seed_from_block_hash(bytes((await conn.w3.eth.get_block(target))["hash"]))
    root, proof = bench_tree(seed, lid, shares, leaves)
    await op.submit_revision(signed(root, shares, leaves))
    out["gas_proof_recording_seed"] = int((await op.prove(lid, e, proof))["gasUsed"])

    # a demand on share 5, answered (the answer records the demand's seed)
    out["gas_demand"] = await gas(cons, "demand", [lid, 5])
    for _ in range(p.seed_delay + 1):
        await conn.mine()
    demand_target = (await op.open_demand(lid) or _missing()).target
    block = await conn.w3.eth.get_block(demand_target)
    root, proof = bench_tree(seed_from_block_hash(bytes(block["hash"])), lid, shares, leaves, 5)
    await op.submit_revision(signed(root, shares, leaves))
    out["gas_answer_demand"] = int((await op.answer_demand(lid, proof))["gasUsed"])
    # a demand left unanswered: reported as a fault
    await next_epoch(conn, p)
    await gas(cons, "demand", [lid, 7])
    await conn.advance_time(p.demand_window + 1)
    out["gas_report_missed_demand"] = await gas(cons, "reportMissedDemand", [lid])

    # batched advance on an empty lease (its sampled epochs are proven by the call alone)
    empty = await open_storage()
    for _ in range(17):
        e, _ = await seed_epoch(conn, op, p)
        if await op.is_sampled(empty, e):
            await op.prove(empty, e, None)
        await next_epoch(conn, p)
    await gas(op, "advance", [empty, 1])  # the first write of the book's slot
    one = await gas(op, "advance", [empty, 1])
    fifteen = await gas(op, "advance", [empty, 15])
    out["gas_advance_one_epoch"] = one
    out["gas_advance_per_epoch"] = (fifteen - one) // 14

    # one anchor transaction time-stamps a batch of manifests
    anchors = op._anchors()
    r = await op._send(anchors, "anchor", [random.Random(3).randbytes(32)], "anchor")
    out["gas_anchor"] = int(r["gasUsed"])
    # last (the fault suspends the provider): two revisions the provider signed with one
    # number, reported by the consumer
    a = Revision(lid, revision + 1, LEAF_BYTES, 1, bytes(range(32)))
    b = Revision(lid, revision + 1, 2 * LEAF_BYTES, 1, bytes(range(32)))
    pair = [a.as_args(), op.sign_revision(a), b.as_args(), op.sign_revision(b)]
    out["gas_report_conflict"] = await gas(cons, "reportConflict", [lid, *pair])
    return out


def _missing() -> Any:
    raise AssertionError("the demand is gone")


if __name__ == "__main__":
    figures = asyncio.run(main())
    for name, value in figures.items():
        print(f"{name}={value}")
    for name, goal in GOALS.items():
        print(f"{name}_goal={goal}")
        print(f"{name}_within_goal={'true' if figures[name] <= goal else 'false'}")
