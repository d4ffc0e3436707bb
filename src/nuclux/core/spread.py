"""Spreading a file's shares across networks, not only across providers.

Theory of operation
-------------------
Every share of a file goes to a distinct provider, but distinct providers can still fail
together: several nodes behind one address block share a link, a rack or an operator. So
placement treats a provider's *network* as its failure domain and takes at most one provider
per network while providers in networks not yet used remain (as Storj takes at most one node
per /24): ``network_of`` maps an endpoint to its network (an IPv4 /24, an IPv6 /48, else the
host name), and ``spread_order`` reorders an already ranked list of candidates so that the
first of each network comes first, in rank order, and the rest follow in rank order. A caller
that takes the first ``n`` thus gets ``n`` networks when there are that many, and otherwise
fills up from the networks already used (a devnet on one machine, a small network).

An auction picks its winners by bid, not by the consumer's order, so there the spread is made
by who may bid: ``spread_bars`` names the candidates to keep out so that every bidder, hence
every winner, is in its own network: it admits the best-ranked candidate of each network not
in ``avoid``, and of the avoided networks' best only as many (best first) as it takes to
admit ``keep``; with fewer networks than ``keep`` it bars nobody (the lowest bids win
wherever they are). A request for ``m`` winners asks to keep ``m + 1``: the uniform price is
the lowest losing bid (``nuclux.core.auction``), and with only ``m`` bidders it would be the
reserve.

A host name is its own network (it is not resolved): two names for one address block count as
two networks. That is the price of not doing DNS lookups while placing; providers that want
to look independent can always register in other networks, so this is a default against
accidents, not a defence against a Sybil.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

IPV4_PREFIX = 24
IPV6_PREFIX = 48


def network_of(endpoint: str) -> str:
    """The network of a provider's endpoint (``https://HOST:PORT``): ``a.b.c.0/24`` for an IPv4
    host, its /48 for IPv6, else the host name in lower case. A malformed endpoint is its own
    network (the whole text)."""
    host = _host(endpoint)
    if not host:
        return endpoint
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host.lower().rstrip(".")
    prefix = IPV4_PREFIX if addr.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def _host(endpoint: str) -> str | None:
    """The host of ``scheme://HOST[:PORT][/...]`` (an IPv6 host in brackets), else None."""
    _, sep, rest = endpoint.partition("://")
    authority = rest.split("/", 1)[0].rpartition("@")[2]
    if not sep or not authority:
        return None
    if authority.startswith("["):
        inside, close, _ = authority[1:].partition("]")
        return inside if close else None
    return authority.rpartition(":")[0] if ":" in authority else authority


def spread_order(
    ranked: Sequence[T], network: Callable[[T], K], avoid: Iterable[K] = ()
) -> list[T]:
    """``ranked`` reordered: the first candidate of each network not in ``avoid`` (in rank
    order), then every other candidate (in rank order)."""
    seen = set(avoid)
    first: list[T] = []
    rest: list[T] = []
    for item in ranked:
        net = network(item)
        if net in seen:
            rest.append(item)
        else:
            seen.add(net)
            first.append(item)
    return first + rest


def spread_bars(
    ranked: Sequence[T], network: Callable[[T], K], avoid: Iterable[K], keep: int
) -> list[T]:
    """The candidates of ``ranked`` (best first) to keep out of an auction. The others are
    the best-ranked candidate of each network, those outside ``avoid`` first, then as few in
    ``avoid`` (best first) as make them ``keep``. Empty when there are fewer networks than
    ``keep``."""
    avoided = set(avoid)
    seen: set[K] = set()
    fresh: list[int] = []  # positions of the best of each network not avoided
    stale: list[int] = []  # ... and of each avoided one
    for i, item in enumerate(ranked):
        net = network(item)
        if net not in seen:
            seen.add(net)
            (stale if net in avoided else fresh).append(i)
    if len(fresh) + len(stale) < keep:
        return []
    admitted = set(fresh) | set(stale[: max(0, keep - len(fresh))])
    return [item for i, item in enumerate(ranked) if i not in admitted]
