from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nuclux.core.lease import Lease, LeaseState, due, time_accrual_entitlement
from nuclux.core.types import ONE_NUX, Address, LeaseId, ResourceClass, Wei, format_nux, parse_nux


@given(st.integers(min_value=0, max_value=2**256 - 1))
def test_format_then_parse_round_trips(wei: int) -> None:
    assert parse_nux(format_nux(wei)) == wei


@pytest.mark.parametrize(
    ("text", "wei"),
    [
        ("1", ONE_NUX),
        ("1.5", 3 * ONE_NUX // 2),
        ("0.000000000000000001", 1),
        ("7wei", 7),
        ("2 NUX", 2 * ONE_NUX),
        ("1_000", 1000 * ONE_NUX),
    ],
)
def test_parse_nux(text: str, wei: int) -> None:
    assert parse_nux(text) == wei


@pytest.mark.parametrize(
    "text", ["", "abc", "-1", "1e400x", "0.0000000000000000001", "nan", "1.5wei", "inf"]
)
def test_parse_nux_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_nux(text)


def test_resource_class_parse() -> None:
    assert ResourceClass.parse(" Storage ") is ResourceClass.STORAGE
    assert ResourceClass.COMPUTE.price_unit == "million fuel"
    with pytest.raises(ValueError, match="storage, compute, bandwidth"):
        ResourceClass.parse("gpu")


def _lease(start: int, end: int, escrow: int, paid: int = 0) -> Lease:
    return Lease(
        id=LeaseId(1),
        consumer=Address("c"),
        provider=Address("p"),
        cls=ResourceClass.STORAGE,
        state=LeaseState.ACTIVE,
        units=3,
        price=Wei(5),
        term_epochs=end - start,
        start_epoch=start,
        end_epoch=end,
        escrow=Wei(escrow),
        paid=Wei(paid),
        faults=0,
        deadline=0,
        ext_epochs=0,
        ext_escrow=Wei(0),
        ext_deadline=0,
    )


@given(st.integers(0, 100), st.integers(1, 50), st.integers(0, 200), st.integers(0, 10**4))
def test_entitlement_accrues_per_whole_epoch_and_due_is_capped(
    start: int, term: int, now: int, escrow: int
) -> None:
    lease = _lease(start, start + term, escrow)
    ent = time_accrual_entitlement(lease, now)
    epochs = max(0, min(now, start + term) - start)
    assert ent == 3 * 5 * epochs
    assert due(lease, ent) == min(escrow, ent)


def test_due_never_goes_below_what_was_paid() -> None:
    lease = _lease(0, 10, escrow=100, paid=60)
    assert due(lease, 10) == 60
