"""The majority rule over replicated results (``nuclux.core.replication``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nuclux.core.replication import decide, majority, more_needed
from nuclux.errors import UsageError

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


def test_unanimous_replicas_are_all_paid() -> None:
    v = decide({"p1": A, "p2": A, "p3": A}, replicas=3, max_extra=2)
    assert v.final
    assert v.accepted == A
    assert v.pay == ("p1", "p2", "p3")
    assert v.decline == ()
    assert v.counts == ((A, 3),)


def test_one_liar_of_three_is_declined() -> None:
    v = decide({"p1": A, "liar": B, "p3": A}, replicas=3, max_extra=2)
    assert v.accepted == A
    assert v.pay == ("p1", "p3")
    assert v.decline == ("liar",)
    assert v.hashes == (A, B)


def test_a_tie_is_not_a_majority_and_asks_one_more() -> None:
    answers = {"p1": A, "p2": B}
    v = decide(answers, replicas=2, max_extra=2)
    assert not v.final
    assert v.accepted is None
    assert v.pay == ()
    assert v.decline == ()
    assert more_needed(answers, replicas=2, max_extra=2) == 1
    v = decide({**answers, "p3": A}, replicas=2, max_extra=2)
    assert v.final
    assert v.accepted == A
    assert v.pay == ("p1", "p3")
    assert v.decline == ("p2",)


def test_half_is_not_a_strict_majority() -> None:
    assert majority({"p1": A, "p2": A, "p3": B, "p4": C}) is None
    assert majority({"p1": A, "p2": A, "p3": B}) == A
    assert majority({}) is None


def test_no_majority_at_the_bound_pays_everyone_and_accepts_nothing() -> None:
    answers = {"p1": A, "p2": B, "p3": C, "p4": A, "p5": B}
    v = decide(answers, replicas=3, max_extra=2)
    assert v.final
    assert v.accepted is None
    assert v.pay == ("p1", "p2", "p3", "p4", "p5")
    assert v.decline == ()
    assert more_needed(answers, replicas=3, max_extra=2) == 0


def test_missing_replicas_are_asked_first() -> None:
    assert more_needed({}, replicas=3, max_extra=2) == 3
    assert more_needed({"p1": A}, replicas=3, max_extra=2) == 2
    # two agreeing answers out of three wanted: still wait for the third replica
    v = decide({"p1": A, "p2": A}, replicas=3, max_extra=2)
    assert not v.final
    assert more_needed({"p1": A, "p2": A}, replicas=3, max_extra=2) == 1


def test_single_replica_is_always_accepted() -> None:
    v = decide({"p1": B}, replicas=1, max_extra=0)
    assert v.final
    assert v.accepted == B
    assert v.pay == ("p1",)


def test_bad_arguments() -> None:
    with pytest.raises(UsageError):
        decide({}, replicas=0, max_extra=1)
    with pytest.raises(UsageError):
        decide({"p1": A, "p2": A, "p3": A}, replicas=1, max_extra=1)


@given(
    st.dictionaries(st.text(min_size=1, max_size=4), st.sampled_from([A, B, C]), max_size=7),
    st.integers(1, 5),
    st.integers(0, 3),
)
def test_verdict_invariants(answers: dict[str, bytes], replicas: int, extra: int) -> None:
    if len(answers) > replicas + extra:
        return
    v = decide(answers, replicas=replicas, max_extra=extra)
    if not v.final:
        assert len(answers) < replicas + extra
        assert v.pay == ()
        assert v.decline == ()
        return
    # a final verdict splits exactly the providers who answered
    assert sorted(v.pay + v.decline) == sorted(answers)
    if v.accepted is not None:
        assert all(answers[p] == v.accepted for p in v.pay)
        assert all(answers[p] != v.accepted for p in v.decline)
        assert 2 * len(v.pay) > len(answers)
    else:
        assert v.decline == ()
