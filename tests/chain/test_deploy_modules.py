"""The lease manager's settlement modules are fixed at deployment (immutables).

``deploy`` creates the modules first, bound to the lease manager's predicted address, then the
lease manager with their addresses; these tests check the prediction, the binding both ways
and that a lease manager without a module for some class cannot be deployed.
"""

from __future__ import annotations

import pytest

from nuclux.chain.deployment import _deploy_one, create_address
from nuclux.chain.revert import decode_revert, revert_data_from_exception
from nuclux.core.types import ResourceClass
from nuclux.errors import ChainError
from tests.chain.world import World


def test_create_address_matches_known_vectors() -> None:
    # the addresses a well-known account's first two transactions created on mainnet
    sender = "0x6ac7ea33f8831ea9dcc53393aaa88b25a785dbf0"
    assert create_address(sender, 0) == "0xcd234A471b72ba2F1Ccf0A70FCABA648a5eeCD8d"
    assert create_address(sender, 1) == "0x343c43A37D37dfF08AE8C4A11544c718AbB4fCF8"
    assert create_address(sender, 2) != create_address(sender, 1)


async def test_modules_are_bound_both_ways(world: World) -> None:
    lm = world.conn.contract("LeaseManager", world.lm_address)
    for cls in ResourceClass:
        assert (
            await lm.functions.modules(int(cls)).call()
            == world.deployment.modules[cls.name.lower()]
        )
    try:
        await lm.functions.modules(len(ResourceClass)).call()
    except Exception as exc:  # the backend's own error type; its revert data is the contract's
        data = revert_data_from_exception(exc)
        assert data is not None
        assert "InvalidClass" in str(decode_revert(data))
    else:
        pytest.fail("modules() of an unknown class must revert")
    # the proofs' contract points at this lease manager and shares its clock
    storage = world.conn.contract(
        "StorageSettlement", world.deployment.address("StorageSettlement")
    )
    assert await storage.functions.leases().call() == world.lm_address
    assert await storage.functions.epochLength().call() == await lm.functions.epochLength().call()
    # nobody can change them: the contract has no owner left and no setter
    assert int(await lm.functions.owner().call(), 16) == 0
    assert not any(
        entry.get("name") == "setModule" for entry in lm.abi if entry.get("type") == "function"
    )


async def test_a_lease_manager_needs_every_module(world: World) -> None:
    d = world.deployer.account
    p = world.deployment.params
    a = world.deployment.address
    with pytest.raises(ChainError, match="ModuleNotSet"):
        await _deploy_one(
            world.conn,
            d,
            "LeaseManager",
            ["address", "address", "uint256", "uint256", "uint256", "uint8", "address[3]"],
            [
                a("NuxCoin"),
                a("ProviderRegistry"),
                p.epoch_length,
                p.accept_window,
                p.dispute_window,
                p.fail_threshold,
                [a("StorageSettlement"), a("StorageSettlement"), "0x" + "00" * 20],
            ],
        )
