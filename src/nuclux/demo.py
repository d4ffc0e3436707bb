"""The product demo on the embedded chain: the lease lifecycle end to end.

Deploys the contracts in-process, creates a consumer and three providers from fresh seed
phrases, registers the providers (each with an operator hot key), then walks leases through
open, accept, decline, claim, extend, top-up, cancel and settle while chain time advances.
Returns a summary (balances and lease states) that the CLI prints as tables or JSON; the
tests check its arithmetic.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from nuclux.chain import ChainConnection, Deployment, DeployParams, Ledger, deploy
from nuclux.chain.ledger import ProviderOffer
from nuclux.chain.revision import Revision, SignedRevision
from nuclux.chain.usage import Usage
from nuclux.core.challenge import answer_from_shares, challenged_share
from nuclux.core.lease import LeaseState
from nuclux.core.merkle import leaf_count, lease_root, root_of_bytes
from nuclux.core.types import ONE_NUX, ResourceClass, format_nux
from nuclux.core.units import GIB
from nuclux.demo_compute import compute_section
from nuclux.keys.derive import from_mnemonic, generate_mnemonic
from nuclux.net.client import NodeClient
from nuclux.net.tls import NodeIdentity
from nuclux.node.config import NodeConfig, identity_paths
from nuclux.node.daemon import NodeRuntime

EPOCH = 60
PRICE = {
    ResourceClass.STORAGE: ONE_NUX // 100,
    ResourceClass.COMPUTE: ONE_NUX // 20,
    ResourceClass.BANDWIDTH: ONE_NUX // 50,
}


@dataclass
class DemoSummary:
    steps: list[str] = field(default_factory=list)
    balances: dict[str, int] = field(default_factory=dict)
    leases: list[dict[str, Any]] = field(default_factory=list)
    supply: int = 0
    held_in_escrow: int = 0
    staked: int = 0
    node: dict[str, Any] = field(default_factory=dict)
    compute: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "balances_wei": self.balances,
            "leases": self.leases,
            "supply_wei": self.supply,
            "escrow_wei": self.held_in_escrow,
            "staked_wei": self.staked,
            "node": self.node,
            "compute": self.compute,
        }


def _new_account() -> tuple[str, LocalAccount]:
    phrase = generate_mnemonic(os.urandom(32))
    keys = from_mnemonic(phrase)
    acct: LocalAccount = Account.from_key(keys.eth_private_key)
    return phrase, acct


async def run_demo(say: Callable[[str], None] = lambda _m: None) -> DemoSummary:
    out = DemoSummary()

    def step(msg: str) -> None:
        out.steps.append(msg)
        say(msg)

    async with await ChainConnection.open("embedded") as conn:
        _, deployer = _new_account()
        await conn.fund_gas(deployer.address, 10**21)
        dep = await deploy(conn, deployer, DeployParams(epoch_length=EPOCH))
        bank = Ledger(conn, dep, deployer)
        step(
            f"deployed NuxCoin, ProviderRegistry, LeaseManager on the embedded EVM "
            f"(chain {conn.chain_id}, epoch {EPOCH} s)"
        )

        _, consumer_acct = _new_account()
        consumer = bank.for_account(consumer_acct)
        providers: list[Ledger] = []
        operators: list[Ledger] = []
        for _ in range(3):
            providers.append(bank.for_account(_new_account()[1]))
            operators.append(bank.for_account(_new_account()[1]))
        for who in [consumer, *providers, *operators]:
            await conn.fund_gas(who.address, 10**19)
        await bank.transfer(consumer.address, 1_000 * ONE_NUX)
        for p in providers:
            await bank.transfer(p.address, 500 * ONE_NUX)
        step(
            "created a consumer and three providers from fresh seed phrases; "
            "faucet sent 1000 NUX to the consumer, 500 NUX to each provider"
        )

        for i, (p, op) in enumerate(zip(providers, operators, strict=True)):
            offer = ProviderOffer(
                endpoint=f"https://127.0.0.1:{7400 + i}",
                cert_fingerprint=os.urandom(32),
                x25519_key=os.urandom(32),
                capacity=(500, 4, 10_000),
                price=(
                    PRICE[ResourceClass.STORAGE],
                    PRICE[ResourceClass.COMPUTE],
                    PRICE[ResourceClass.BANDWIDTH],
                ),
            )
            await p.register_provider(offer, 200 * ONE_NUX, operator=op.address)
        step("registered 3 providers: 200 NUX stake each, operator hot keys, posted prices")

        storage = await consumer.open_lease(
            providers[0].address,
            ResourceClass.STORAGE,
            10,
            10,
            PRICE[ResourceClass.STORAGE],
            2 * ONE_NUX,
        )
        compute = await consumer.open_lease(
            providers[1].address,
            ResourceClass.COMPUTE,
            2,
            5,
            PRICE[ResourceClass.COMPUTE],
            3 * ONE_NUX,
        )
        egress = await consumer.open_lease(
            providers[2].address,
            ResourceClass.BANDWIDTH,
            50,
            5,
            PRICE[ResourceClass.BANDWIDTH],
            5 * ONE_NUX,
        )
        step(
            f"opened leases {storage} (storage, 10 GiB x 10 epochs), {compute} (compute) and "
            f"{egress} (bandwidth); escrow locked"
        )
        await operators[0].accept(storage)
        await operators[1].accept(compute)
        await operators[2].decline(egress)
        step(f"providers 1 and 2 accepted; provider 3 declined lease {egress}: full refund")

        # The lease holds one share; both sides sign a revision naming its root. Every epoch
        # gets a seed from a block hash; a sampled epoch is answered with a leaf and its
        # Merkle paths; a proof vouches for the unsampled epochs before it.
        share = os.urandom(3000)
        entries = [(root_of_bytes(share), leaf_count(len(share)))]
        rev = Revision(storage, 1, len(share), 1, lease_root(entries))
        signed = SignedRevision(rev, consumer.sign_revision(rev), operators[0].sign_revision(rev))
        await operators[0].submit_revision(signed)

        async def storage_epoch() -> None:
            """What the provider's agent does each epoch: seed every epoch of the lease up
            to now that has no seed yet, prove the sampled ones; then time moves on."""
            op = operators[0]
            start = (await op.lease(storage)).start_epoch
            for epoch in range(start, await op.epoch() + 1):
                if (await op.seed(epoch)).target:
                    continue
                await op.arm_seed(epoch)
                for _ in range(dep.params.seed_delay + 1):
                    await conn.mine()
                await op.record_seed(epoch)
                if await op.is_sampled(storage, epoch):
                    seed = (await op.seed(epoch)).value
                    index = challenged_share(seed, storage, len(entries))
                    proof = answer_from_shares(entries, index, seed, storage, share)
                    await op.prove(storage, epoch, proof)
            await conn.advance_time(EPOCH - await conn.now() % EPOCH)  # to the next epoch

        for _ in range(3):
            await storage_epoch()
        book = await operators[0].advance(storage)
        now, _ = await operators[0].claimable(storage)
        paid = await operators[0].claim(storage) if now else 0
        step(
            f"lease {storage}: the consumer stored a share and both sides signed revision 1; "
            f"3 epochs later {book.paid_epochs} were vouched for by proofs of storage and "
            f"provider 1 claimed {format_nux(paid)} NUX"
        )
        await consumer.extend(storage, 5, ONE_NUX)
        await operators[0].accept_extension(storage)
        await consumer.top_up(storage, ONE_NUX // 2)
        step(f"extended lease {storage} by 5 epochs (+1 NUX, accepted) and topped up 0.5 NUX")

        for revision, fuel_millions in enumerate((12, 30), start=1):
            receipt = Usage(compute, revision, fuel_millions * PRICE[ResourceClass.COMPUTE])
            both = (
                consumer.sign_usage(ResourceClass.COMPUTE, receipt),
                operators[1].sign_usage(ResourceClass.COMPUTE, receipt),
            )
        await operators[1].submit_usage(ResourceClass.COMPUTE, receipt, *both)
        step(
            f"lease {compute}: jobs used 30 million fuel; consumer and provider co-signed "
            f"cumulative receipts, the latest ({format_nux(receipt.cumulative)} NUX) "
            "submitted on chain"
        )

        for _ in range(2):
            await storage_epoch()
        await consumer.cancel(storage)
        await storage_epoch()  # the last epoch of a term is always sampled
        await conn.advance_time(4 * EPOCH)
        await operators[0].advance(storage)
        await consumer.end_term(compute)
        step(
            f"cancelled lease {storage}; lease {compute} reached the end of its term; "
            "both entered the dispute window"
        )
        await conn.advance_time(dep.params.dispute_window + 1)
        await consumer.settle(storage)
        await consumer.settle(compute)
        step(
            "after the dispute window both leases settled: providers paid "
            "min(escrow, entitlement), the residue refunded to the consumer"
        )

        await _node_section(conn, dep, consumer, providers[2], operators[2], step, out)

        names = {
            consumer.address: "consumer",
            dep.address("LeaseManager"): "lease escrow",
            dep.address("ProviderRegistry"): "registry stakes",
            deployer.address: "faucet",
        }
        for i, p in enumerate(providers):
            names[p.address] = f"provider {i + 1}"
        for addr, name in names.items():
            out.balances[name] = await bank.balance(addr)
        for lid in (storage, compute, egress):
            lease = await bank.lease(lid)
            out.leases.append(
                {
                    "id": lid,
                    "class": lease.cls.name.lower(),
                    "state": lease.state.label,
                    "provider": lease.provider,
                    "units": lease.units,
                    "epochs": max(0, lease.end_epoch - lease.start_epoch),
                    "price_wei": lease.price,
                    "paid_wei": lease.paid,
                }
            )
        out.supply = await bank.total_supply()
        out.held_in_escrow = out.balances["lease escrow"]
        out.staked = out.balances["registry stakes"]
    return out


async def _node_section(
    conn: ChainConnection,
    dep: Deployment,
    consumer: Ledger,
    owner: Ledger,
    operator: Ledger,
    step: Callable[[str], None],
    out: DemoSummary,
) -> None:
    """Run provider 3 as a real node: it accepts a storage lease and serves a file over TLS,
    then runs a compute job paid from escrow."""
    with tempfile.TemporaryDirectory(prefix="nuclux-demo-") as tmp:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        cfg = NodeConfig(
            data_dir=Path(tmp),
            owner=owner.address,
            operator_account="operator",
            endpoint=f"https://127.0.0.1:{port}",
            listen_host="127.0.0.1",
            listen_port=port,
            storage_bytes=8 * GIB,
            compute_units=2,
            egress_bytes=0,
            price_storage=PRICE[ResourceClass.STORAGE],
            price_compute=PRICE[ResourceClass.COMPUTE],
            price_egress=0,
            stake=200 * ONE_NUX,
            chain="embedded",
            deployment=None,
            grace_seconds=60,
        )
        NodeIdentity.generate(owner.address).save(*identity_paths(cfg))
        node = await NodeRuntime.start(cfg, operator.account, conn, dep, poll_interval=0.1)
        try:
            info = await consumer.provider(owner.address)
            step(
                f"provider 3 started a node at {info.endpoint}; it registered its TLS "
                f"certificate fingerprint {info.cert_fingerprint.hex()[:16]}... on chain"
            )
            lid = await consumer.open_lease(
                owner.address, ResourceClass.STORAGE, 1, 10, PRICE[ResourceClass.STORAGE], ONE_NUX
            )
            for _ in range(200):
                if (await consumer.lease(lid)).state is LeaseState.ACTIVE:
                    break
                await asyncio.sleep(0.05)
            data = b"Nuclux: the decentralized cloud. " * 1000
            key = bytes(consumer.account.key)
            async with NodeClient(info.endpoint, info.cert_fingerprint, key) as client:
                stored = await client.put(lid, b"hello.txt", data)
                back = await client.get(lid, b"hello.txt")
            step(
                f"the node's agent accepted lease {lid}; the consumer stored {len(data)} bytes "
                "over TLS pinned by the on-chain fingerprint, signed by its key, and read "
                f"them back {'intact' if back == data else 'CORRUPTED'}"
            )
            out.node = {
                "lease": lid,
                "endpoint": info.endpoint,
                "bytes": len(data),
                "sha256": stored.sha256.hex(),
                "read_back_ok": back == data,
            }
            out.compute = await compute_section(conn, dep, consumer, step)
        finally:
            await node.stop()
        await consumer.cancel(lid)
        await conn.advance_time(dep.params.dispute_window + 1)
        await consumer.settle(lid)
        out.node["paid_wei"] = (await consumer.lease(lid)).paid
        step(f"the node stopped; lease {lid} was cancelled and settled")
