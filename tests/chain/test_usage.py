"""Metered classes settle the latest signed cumulative total (compute: both sign; bandwidth:
the consumer signs), submitted while the lease runs or in its dispute window."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from nuclux.chain import ChainConnection
from nuclux.chain.usage import Usage
from nuclux.core.lease import LeaseState
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.errors import InvalidArgument, InvalidLeaseState, NotAuthorized, UsageError
from tests.chain.world import PARAMS, PRICES, World, build_world

COMPUTE = ResourceClass.COMPUTE
BANDWIDTH = ResourceClass.BANDWIDTH


@pytest_asyncio.fixture(scope="module")
async def plain_world() -> AsyncIterator[World]:
    """Default modules for every class (the shared world tests faults on bandwidth)."""
    conn = await ChainConnection.open("embedded")
    w = await build_world(conn, default_modules=True)
    yield w
    await conn.close()


@pytest_asyncio.fixture
async def pw(plain_world: World) -> AsyncIterator[World]:
    snap = await plain_world.conn.snapshot()
    yield plain_world
    await plain_world.conn.revert(snap)


async def active(w: World, cls: ResourceClass, escrow: int = ONE_NUX) -> int:
    lid = await w.consumers[0].open_lease(w.providers[0].address, cls, 1, 10, PRICES[cls], escrow)
    await w.operators[0].accept(lid)
    return lid


async def test_compute_pays_the_latest_total_both_signed(world: World) -> None:
    w = world
    c, p, op = w.consumers[0], w.providers[0], w.operators[0]
    lid = await active(w, COMPUTE)
    u1 = Usage(lid, 1, ONE_NUX // 10)
    await op.submit_usage(COMPUTE, u1, c.sign_usage(COMPUTE, u1), op.sign_usage(COMPUTE, u1))
    p0 = await p.balance()
    assert await w.outsider.claim(lid) == ONE_NUX // 10
    assert await p.balance() == p0 + ONE_NUX // 10

    u3 = Usage(lid, 3, ONE_NUX // 4)
    await c.submit_usage(COMPUTE, u3, c.sign_usage(COMPUTE, u3), p.sign_usage(COMPUTE, u3))
    assert await c.latest_usage(COMPUTE, lid) == (3, ONE_NUX // 4)
    stale = Usage(lid, 2, ONE_NUX // 2)
    with pytest.raises(InvalidLeaseState, match="StaleRevision"):
        await op.submit_usage(
            COMPUTE, stale, c.sign_usage(COMPUTE, stale), op.sign_usage(COMPUTE, stale)
        )
    lower = Usage(lid, 4, ONE_NUX // 5)
    with pytest.raises(InvalidArgument, match="TotalDecreased"):
        await op.submit_usage(
            COMPUTE, lower, c.sign_usage(COMPUTE, lower), op.sign_usage(COMPUTE, lower)
        )
    forged = Usage(lid, 5, ONE_NUX // 2)
    with pytest.raises(NotAuthorized, match="BadSignature"):  # the provider signs for both
        await op.submit_usage(
            COMPUTE, forged, op.sign_usage(COMPUTE, forged), op.sign_usage(COMPUTE, forged)
        )
    with pytest.raises(NotAuthorized, match="NotOwnerOrOperator"):  # no provider signature
        await c.submit_usage(
            COMPUTE, forged, c.sign_usage(COMPUTE, forged), w.outsider.sign_usage(COMPUTE, forged)
        )

    # cancel: in the dispute window the provider still submits its latest receipt total
    await c.cancel(lid)
    u6 = Usage(lid, 6, ONE_NUX * 3 // 10)
    await op.submit_usage(COMPUTE, u6, c.sign_usage(COMPUTE, u6), op.sign_usage(COMPUTE, u6))
    await w.conn.advance_time(PARAMS.dispute_window + 1)
    u7 = Usage(lid, 7, ONE_NUX // 2)
    with pytest.raises(InvalidLeaseState, match="SubmissionClosed"):
        await op.submit_usage(COMPUTE, u7, c.sign_usage(COMPUTE, u7), op.sign_usage(COMPUTE, u7))
    c0, p1 = await c.balance(), await p.balance()
    await w.outsider.settle(lid)
    assert await p.balance() == p1 + ONE_NUX * 3 // 10 - ONE_NUX // 10
    assert await c.balance() == c0 + ONE_NUX - ONE_NUX * 3 // 10
    assert (await c.lease(lid)).state is LeaseState.CLOSED


async def test_a_total_above_escrow_is_capped(world: World) -> None:
    w = world
    c, op = w.consumers[0], w.operators[0]
    lid = await active(w, COMPUTE, escrow=ONE_NUX // 100)
    u = Usage(lid, 1, ONE_NUX)
    await op.submit_usage(COMPUTE, u, c.sign_usage(COMPUTE, u), op.sign_usage(COMPUTE, u))
    assert await op.claim(lid) == ONE_NUX // 100


async def test_signatures_do_not_transfer_between_leases(world: World) -> None:
    w = world
    c, op = w.consumers[0], w.operators[0]
    a, b = await active(w, COMPUTE), await active(w, COMPUTE)
    u = Usage(a, 1, ONE_NUX // 10)
    sigs = (c.sign_usage(COMPUTE, u), op.sign_usage(COMPUTE, u))
    with pytest.raises(NotAuthorized):
        await op.submit_usage(COMPUTE, Usage(b, 1, ONE_NUX // 10), *sigs)


async def test_conflicting_totals_are_a_provable_fault(world: World) -> None:
    w = world
    op = w.operators[0]
    lid = await active(w, COMPUTE)
    for rev in (1, 2):
        a, b = Usage(lid, rev, 10), Usage(lid, rev, 20)
        await w.consumers[0].prove_conflict(
            COMPUTE, a, op.sign_usage(COMPUTE, a), b, w.providers[0].sign_usage(COMPUTE, b)
        )
    assert (await w.consumers[0].lease(lid)).faults == 2
    a, b = Usage(lid, 1, 10), Usage(lid, 1, 20)
    with pytest.raises(InvalidArgument, match="ConflictAlreadyProven"):
        await w.consumers[0].prove_conflict(
            COMPUTE, a, op.sign_usage(COMPUTE, a), b, op.sign_usage(COMPUTE, b)
        )
    same = Usage(lid, 3, 10)
    with pytest.raises(InvalidArgument, match="NotConflicting"):
        await w.consumers[0].prove_conflict(
            COMPUTE, same, op.sign_usage(COMPUTE, same), same, op.sign_usage(COMPUTE, same)
        )
    a, b = Usage(lid, 3, 10), Usage(lid, 3, 30)
    await w.consumers[0].prove_conflict(
        COMPUTE, a, op.sign_usage(COMPUTE, a), b, op.sign_usage(COMPUTE, b)
    )
    assert (await w.consumers[0].lease(lid)).state is LeaseState.FAILED


async def test_bandwidth_vouchers_need_only_the_consumer(pw: World) -> None:
    w = pw
    c, op, p = w.consumers[0], w.operators[0], w.providers[0]
    lid = await active(w, BANDWIDTH)
    v = Usage(lid, 1, ONE_NUX // 8)
    await op.submit_usage(BANDWIDTH, v, c.sign_usage(BANDWIDTH, v))
    p0 = await p.balance()
    await op.claim(lid)
    assert await p.balance() == p0 + ONE_NUX // 8
    bad = Usage(lid, 2, ONE_NUX // 4)
    with pytest.raises(NotAuthorized, match="BadSignature"):
        await op.submit_usage(BANDWIDTH, bad, op.sign_usage(BANDWIDTH, bad))


def test_usage_values_are_bounded() -> None:
    with pytest.raises(UsageError):
        Usage(1, 0, 5)
    with pytest.raises(UsageError):
        Usage(1, 1, -1)
    with pytest.raises(UsageError):
        Usage(0, 1, 1)


async def test_the_fast_usage_signature_is_the_eip712_one_the_module_checks(world: World) -> None:
    from eth_account import Account

    from nuclux.chain.eip712 import recover_typed, sign_typed
    from nuclux.chain.usage import sign_usage, typed_data, usage_digest, usage_signer

    c = world.consumers[0]
    module = c.module_of(COMPUTE)
    contract = c.conn.contract("CumulativeSettlement", module)
    for usage in (Usage(1, 1, 0), Usage(7, 2**64 - 1, 2**192 - 1), Usage(2**255, 3, 12345)):
        digest = usage_digest(usage, c.conn.chain_id, module)
        on_chain = await contract.functions.usageDigest(
            usage.lease_id, usage.revision, usage.cumulative
        ).call()
        assert digest == bytes(on_chain)
        fast = sign_usage(c.account, usage, c.conn.chain_id, module)
        reference = sign_typed(c.account, typed_data(usage, c.conn.chain_id, module))
        assert fast == reference  # RFC 6979 nonces: the same bytes
        assert usage_signer(usage, fast, c.conn.chain_id, module) == c.address
        assert recover_typed(typed_data(usage, c.conn.chain_id, module), fast) == c.address
        other = Usage(usage.lease_id, usage.revision, usage.cumulative ^ 1)
        assert usage_signer(other, fast, c.conn.chain_id, module) != c.address
    stranger = Account.create()
    sig = sign_usage(stranger, Usage(1, 1, 5), c.conn.chain_id, module)
    assert usage_signer(Usage(1, 1, 5), sig, c.conn.chain_id, module) == stranger.address
    high_s = (
        sig[:32]
        + (
            0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
            - int.from_bytes(sig[32:64], "big")
        ).to_bytes(32, "big")
        + bytes([55 - sig[64]])
    )
    assert usage_signer(Usage(1, 1, 5), high_s, c.conn.chain_id, module) is None
    assert usage_signer(Usage(1, 1, 5), sig[:64] + b"\x01", c.conn.chain_id, module) is None
    assert usage_signer(Usage(1, 1, 5), b"\0" * 65, c.conn.chain_id, module) is None
