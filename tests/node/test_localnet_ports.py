"""Local nodes listen below the kernel's ephemeral port range, on loopback addresses of the
networks they are spread over (node/localnet.py)."""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path

import pytest

from nuclux.core.spread import network_of
from nuclux.errors import UsageError
from nuclux.node import localnet


def test_ports_come_from_below_the_ephemeral_range() -> None:
    low = localnet._ephemeral_low()
    ports = {localnet._free_port() for _ in range(20)}
    assert all(localnet._PORTS_FLOOR <= p < low for p in ports)
    assert len(ports) > 1  # chosen at random, not one fixed port
    with socket.socket() as s:  # free: a node can bind it
        s.bind(("127.0.0.1", ports.pop()))


def test_a_taken_port_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        monkeypatch.setattr(localnet, "_PORTS_FLOOR", taken)
        monkeypatch.setattr(localnet, "_ephemeral_low", lambda: taken + 1_000)
        assert all(localnet._free_port() != taken for _ in range(30))


def test_no_room_below_the_range_falls_back_to_an_ephemeral_port(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(localnet, "_EPHEMERAL", tmp_path / "range")
    (tmp_path / "range").write_text("10500\t60999\n")
    assert localnet._ephemeral_low() == 10_500
    assert localnet._free_port() >= 10_500  # fewer than 1,000 ports below: port 0's choice
    (tmp_path / "range").write_text("garbage")
    assert localnet._ephemeral_low() == 32_768


def test_nodes_spread_over_loopback_networks() -> None:
    hosts = [localnet.network_host(i, 3) for i in range(7)]
    assert hosts == [f"127.0.{i % 3}.1" for i in range(7)]
    assert len({network_of(f"https://{h}:1") for h in hosts}) == 3
    assert {localnet.network_host(i, 1) for i in range(5)} == {"127.0.0.1"}
    port = localnet._free_port("127.0.2.1")
    with socket.socket() as s:  # free on that address: a node can bind it
        s.bind(("127.0.2.1", port))


def test_networks_out_of_range_are_refused_first(tmp_path: Path) -> None:
    for bad in (0, localnet.MAX_NODES + 1):
        with pytest.raises(UsageError, match="networks"):
            asyncio.run(localnet.start_nodes(tmp_path, 2, networks=bad))
    assert list(tmp_path.iterdir()) == []  # nothing was made


def test_ports_chosen_for_other_nodes_of_a_start_are_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a node given a port earlier may not have bound it yet: the next node must not get it
    free = localnet._free_port()
    draws = iter([free, free, free + 1 if free + 1 < localnet._ephemeral_low() else free - 1])

    class Scripted:
        def randrange(self, low: int, high: int) -> int:
            return next(draws)

    monkeypatch.setattr(random, "SystemRandom", Scripted)
    got = localnet._free_port("127.0.0.1", {free})
    assert got != free
    assert localnet._PORTS_FLOOR <= got < localnet._ephemeral_low()
