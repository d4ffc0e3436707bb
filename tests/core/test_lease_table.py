from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nuclux.core.lease import (
    TRANSITIONS,
    Action,
    LeaseState,
    TransitionError,
    allowed_actions,
    mermaid_diagram,
    next_state,
)


def test_terminal_states_have_no_way_out() -> None:
    for s in (LeaseState.CLOSED, LeaseState.FAILED):
        assert s.is_terminal
        assert allowed_actions(s) == []


def test_every_state_is_reachable_from_none() -> None:
    seen = {LeaseState.NONE}
    frontier = [LeaseState.NONE]
    while frontier:
        s = frontier.pop()
        for a in allowed_actions(s):
            t = next_state(s, a)
            if t not in seen:
                seen.add(t)
                frontier.append(t)
    assert seen == set(LeaseState)


def test_every_live_state_can_reach_closed() -> None:
    for start in LeaseState:
        if start.is_terminal:
            continue
        seen, frontier = {start}, [start]
        while frontier:
            s = frontier.pop()
            for a in allowed_actions(s):
                t = next_state(s, a)
                if t not in seen:
                    seen.add(t)
                    frontier.append(t)
        assert LeaseState.CLOSED in seen, start


@given(st.sampled_from(list(LeaseState)), st.sampled_from(list(Action)))
def test_next_state_agrees_with_the_table(state: LeaseState, action: Action) -> None:
    if (state, action) in TRANSITIONS:
        assert next_state(state, action) is TRANSITIONS[(state, action)]
    else:
        with pytest.raises(TransitionError, match=action.value):
            next_state(state, action)


def test_money_moves_only_where_expected() -> None:
    # an extension can only be answered while one is pending
    for a in (Action.ACCEPT_EXTENSION, Action.DECLINE_EXTENSION, Action.EXPIRE_EXTENSION):
        assert [s for (s, x) in TRANSITIONS if x is a] == [LeaseState.ACTIVE_TICKETED]
    # settlement happens only after the dispute window (from Closing)
    assert [s for (s, x) in TRANSITIONS if x is Action.SETTLE] == [LeaseState.CLOSING]


def test_diagram_names_every_transition() -> None:
    text = mermaid_diagram()
    assert text.startswith("stateDiagram-v2")
    for (src, action), dst in TRANSITIONS.items():
        if src is not dst:
            assert f"{dst.name}: {action.value}" in text
