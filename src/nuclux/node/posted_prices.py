"""Providers' default posted prices: follow the market's on-chain reference price.

Theory of operation
-------------------
A class whose posted price is configured as ``"auto"`` (``[offer] price_storage = "auto"``,
or no price at all) posts what the market says that class is worth: the reference price
``AuctionHouse.referencePrice`` keeps on chain (the value-weighted median of recent
clearings with enough staked bidders), never below the node's configured cost
(``[market] cost_*``, its floor) when it has one. ``choose`` is the rule, pure:

- a class with a configured price posts it (``config``);
- with a reference price: the larger of it and the floor (``reference`` or ``floor``),
  unless the price posted now is within ``threshold`` of that target (and not below the
  floor), which is kept as it is, so a reference that wobbles costs no transaction;
- without one (no qualifying auction yet): the price posted now (``posted``), raised to the
  floor if below it; with nothing posted yet, the floor (``floor``); with no floor either,
  nothing can be posted (``unset``) and the node refuses to start for a class it offers.

``PostedPrices`` runs it: at start (the daemon's registration check posts the choice with
the rest of the offer) and then every ``price_poll`` seconds it reads the reference prices
and, when any auto class's choice differs from the price on chain, sends one registry
``update`` with every class's price (the operator may). Where the bid agent has no
configured cost for such a class it bids the posted price, so its cost follows too. Every
choice is written to ``posted-prices.json`` in the data directory (price, where it came
from, the reference and the floor seen), which ``nuclux node status`` shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from nuclux.chain.ledger import Ledger, ProviderOffer
from nuclux.chain.market_ledger import MarketLedger
from nuclux.core.types import ResourceClass
from nuclux.errors import ConfigError, NucluxError
from nuclux.node.config import NodeConfig

log = logging.getLogger("nuclux.node.prices")

STATE_FILE = "posted-prices.json"
Source = Literal["config", "reference", "floor", "posted", "unset"]


@dataclass(frozen=True, slots=True)
class PriceChoice:
    """What a class posts (wei per unit) and why."""

    price: int
    source: Source
    reference: int | None = None  # the reference price seen (None: there is none yet)
    floor: int | None = None


def choose(
    fixed: int | None,
    floor: int | None,
    reference: int | None,
    posted: int,
    threshold: float,
) -> PriceChoice:
    """The posted price of one class (see the module docstring). ``fixed``: the configured
    price (None: "auto"); ``posted``: the price on chain now (0: none)."""
    if fixed is not None:
        return PriceChoice(fixed, "config", reference, floor)
    least = floor or 0
    if reference is not None:
        target = max(reference, least, 1)
        source: Source = "reference" if target == reference else "floor"
        if posted >= least and posted > 0 and abs(target - posted) <= threshold * posted:
            return PriceChoice(posted, source, reference, floor)
        return PriceChoice(target, source, reference, floor)
    if posted > 0 and posted >= least:
        return PriceChoice(posted, "posted", None, floor)
    if least > 0:
        return PriceChoice(least, "floor", None, floor)
    return PriceChoice(0, "unset", None, floor)


async def reference_prices(market: MarketLedger | None) -> dict[ResourceClass, int | None]:
    """The on-chain reference price of every class (None where there is none, or no house)."""
    out: dict[ResourceClass, int | None] = {}
    for cls in ResourceClass:
        out[cls] = None if market is None else await market.reference_price(cls)
    return out


async def choose_all(
    cfg: NodeConfig, market: MarketLedger | None, posted: tuple[int, ...]
) -> list[PriceChoice]:
    """Every class's choice for ``cfg`` given the prices ``posted`` on chain now; a class
    the node offers that cannot be priced is a ``ConfigError``."""
    refs = (
        await reference_prices(market)
        if any(cfg.price_auto)
        else dict.fromkeys(ResourceClass, None)
    )
    choices = []
    for cls in ResourceClass:
        i = int(cls)
        fixed = None if cfg.price_auto[i] else cfg.prices[i]
        c = choose(fixed, cfg.floors[i], refs[cls], posted[i], cfg.price_threshold)
        if c.source == "unset" and cfg.capacity[i] > 0:
            name = cls.name.lower()
            raise ConfigError(
                f"the posted {name} price is auto, but the market has no reference price for "
                f"{name} yet and this provider posts none: set [market] cost_"
                f"{'egress' if cls is ResourceClass.BANDWIDTH else name} (the least it takes)"
                f" or [offer] price_{'egress' if cls is ResourceClass.BANDWIDTH else name}"
            )
        choices.append(c)
    return choices


def prices_of(choices: list[PriceChoice]) -> tuple[int, int, int]:
    a, b, c = (x.price for x in choices)
    return (a, b, c)


def save_choices(data_dir: Path, choices: list[PriceChoice], updated: bool) -> None:
    body = {
        "at": int(time.time()),
        "updated": updated,
        "classes": {
            cls.name.lower(): asdict(c) for cls, c in zip(ResourceClass, choices, strict=True)
        },
    }
    tmp = data_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(body, indent=1))
    os.replace(tmp, data_dir / STATE_FILE)


def read_choices(cfg: NodeConfig) -> dict[str, dict[str, Any]]:
    """What ``nuclux node status`` shows: per class the posted price and where it came from
    (from the running node's last choice; configured prices without it)."""
    try:
        raw = json.loads((cfg.data_dir / STATE_FILE).read_text())
        classes: dict[str, dict[str, Any]] = raw["classes"]
    except (OSError, ValueError, KeyError):
        classes = {}
    out = {}
    for cls in ResourceClass:
        name = cls.name.lower()
        i = int(cls)
        if name in classes and (cfg.price_auto[i] or classes[name]["source"] == "config"):
            out[name] = classes[name]
        elif cfg.price_auto[i]:
            out[name] = asdict(PriceChoice(0, "unset", None, cfg.floors[i]))
        else:
            out[name] = asdict(PriceChoice(cfg.prices[i], "config", None, cfg.floors[i]))
    return out


@dataclass
class PostedPrices:
    """Keeps this provider's registry prices on their rule (the operator key signs)."""

    cfg: NodeConfig
    ledger: Ledger
    market: MarketLedger | None
    costs: dict[ResourceClass, int] | None = None  # the bid agent's, where they follow price
    updates: int = 0

    async def tick(self) -> list[PriceChoice]:
        """Choose again; send one registry update when an auto class's price moves."""
        info = await self.ledger.provider(self.cfg.owner)
        choices = await choose_all(self.cfg, self.market, info.price)
        wanted = prices_of(choices)
        moved = wanted != tuple(info.price)
        if moved:
            offer = ProviderOffer(
                info.endpoint, info.cert_fingerprint, info.x25519_key, info.capacity, wanted
            )
            await self.ledger.update_provider(offer, provider=self.cfg.owner)
            self.updates += 1
            log.info("posted prices %s (was %s): %s", wanted, tuple(info.price), _why(choices))
        self.follow(choices)
        save_choices(self.cfg.data_dir, choices, moved)
        return choices

    def follow(self, choices: list[PriceChoice]) -> None:
        """Bid costs that are not configured follow the posted prices."""
        if self.costs is None:
            return
        for cls, cost in zip(ResourceClass, self.cfg.costs_given(prices_of(choices)), strict=True):
            self.costs[cls] = cost

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.cfg.price_poll)
            if stop.is_set():
                break
            try:
                await self.tick()
            except NucluxError as exc:
                log.warning("posted prices: %s", exc)


def _why(choices: list[PriceChoice]) -> str:
    return ", ".join(
        f"{cls.name.lower()} {c.price} ({c.source})"
        for cls, c in zip(ResourceClass, choices, strict=True)
    )
