"""A deployed Nuclux world on the embedded EVM, shared by the chain tests.

Built once per test session (deploying costs ~1 s); each test runs from a snapshot and the
chain is reverted afterwards, so tests stay independent and fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from nuclux.chain import ChainConnection, Deployment, DeployParams, Ledger, deploy
from nuclux.chain.deployment import _deploy_one
from nuclux.chain.ledger import ProviderOffer
from nuclux.core.types import ONE_NUX, ResourceClass

PARAMS = DeployParams(
    epoch_length=60,
    accept_window=300,
    dispute_window=300,
    fail_threshold=3,
    min_stake=100 * ONE_NUX,
    unbonding_delay=3600,
    suspend_after=3,
    slash_after=5,
    suspension_period=86_400,
    slash_cap=20 * ONE_NUX,
    sample_one_in=2,  # tests meet sampled and unsampled epochs quickly
    seed_delay=2,
    demand_window=120,
)
PRICES = (2 * 10**15, 10**15, 3 * 10**15)
START_NUX = 10_000 * ONE_NUX
STAKE = 200 * ONE_NUX


def test_account(label: str) -> LocalAccount:
    acct: LocalAccount = Account.from_key(keccak(text=f"nuclux-test/{label}"))
    return acct


def offer(i: int) -> ProviderOffer:
    return ProviderOffer(
        endpoint=f"https://127.0.0.1:{9000 + i}",
        cert_fingerprint=keccak(text=f"cert{i}"),
        x25519_key=keccak(text=f"x{i}"),
        capacity=(1000, 8, 10_000),
        price=PRICES,
    )


@dataclass
class World:
    conn: ChainConnection
    deployment: Deployment
    deployer: Ledger
    providers: list[Ledger]
    consumers: list[Ledger]
    operators: list[Ledger]
    outsider: Ledger

    @property
    def lm_address(self) -> str:
        return self.deployment.address("LeaseManager")

    @property
    def registry_address(self) -> str:
        return self.deployment.address("ProviderRegistry")

    async def epoch(self) -> int:
        return await self.conn.now() // self.deployment.params.epoch_length

    async def next_epoch(self) -> int:
        """Move chain time to the start of the next epoch; returns that epoch."""
        length = self.deployment.params.epoch_length
        now = await self.conn.now()
        await self.conn.advance_time(length - now % length)
        return await self.epoch()

    async def seed_epoch(self, epoch: int | None = None, by: Ledger | None = None) -> int:
        """Arm an epoch's seed (the current one by default), mine past its block and record
        it; returns the seed. Devnet only (it mines blocks)."""
        who = by or self.outsider
        e = await self.epoch() if epoch is None else epoch
        await who.arm_seed(e)
        # + 1: gas estimation runs in the context of the latest block, not the next one
        for _ in range(self.deployment.params.seed_delay + 1):
            await self.conn.mine()
        await who.record_seed(e)
        return (await who.seed(e)).value

    def holders(self) -> list[str]:
        people = [self.deployer, *self.providers, *self.consumers, *self.operators, self.outsider]
        return [p.address for p in people] + [self.lm_address, self.registry_address]


async def build_world(
    conn: ChainConnection,
    n_providers: int = 3,
    n_consumers: int = 2,
    register: int = 3,
    default_modules: bool = False,
    params: DeployParams = PARAMS,
) -> World:
    """Deploy; fund and register providers.

    Unless ``default_modules``, storage and bandwidth leases settle through a test module
    (time accrual, plus a trigger that reports faults), so lease and node tests need no
    proofs; with ``default_modules`` every class has its real module (storage proofs)."""
    deployer = test_account("deployer")
    await conn.fund_gas(deployer.address, 10**21)
    modules = {}
    if not default_modules:
        fault_module = await _deploy_one(conn, deployer, "TestFaultModule", [], [])
        modules = {ResourceClass.STORAGE: fault_module, ResourceClass.BANDWIDTH: fault_module}
    dep = await deploy(conn, deployer, params, modules=modules)
    d = Ledger(conn, dep, deployer)
    provs = [d.for_account(test_account(f"provider{i}")) for i in range(n_providers)]
    ops = [d.for_account(test_account(f"operator{i}")) for i in range(n_providers)]
    cons = [d.for_account(test_account(f"consumer{i}")) for i in range(n_consumers)]
    outsider = d.for_account(test_account("outsider"))
    for who in [*provs, *cons, *ops, outsider]:
        await conn.fund_gas(who.address, 10**20)
    for who in [*provs, *cons]:
        await d.transfer(who.address, START_NUX)
    for i in range(register):
        await provs[i].register_provider(offer(i), STAKE, operator=ops[i].address)
    return World(conn, dep, d, provs, cons, ops, outsider)
