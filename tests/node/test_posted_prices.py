"""Providers' default posted prices: the pure rule (configured, reference, floor, kept within
the threshold, kept without a reference), the ``"auto"`` face of node.toml, and a provider on
the embedded chain following the on-chain reference price with one registry update per move
(the bid agent's cost following along) and refusing to start with nothing to post."""

from __future__ import annotations

import asyncio
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from nuclux.chain.ledger import ProviderInfo, ProviderOffer
from nuclux.chain.market_ledger import MarketLedger
from nuclux.core.types import ResourceClass
from nuclux.errors import ConfigError
from nuclux.node.config import CONFIG_NAME, load_config, save_config
from nuclux.node.daemon import NodeRuntime
from nuclux.node.posted_prices import PostedPrices, PriceChoice, choose, read_choices
from tests.chain.auction_kit import market
from tests.chain.test_reference_price import one_auction
from tests.chain.world import PRICES, World
from tests.node.local_nodes import node_config
from tests.node.test_bid_config import config

STORAGE, COMPUTE, EGRESS = ResourceClass.STORAGE, ResourceClass.COMPUTE, ResourceClass.BANDWIDTH
AUTO_STORAGE = (True, False, False)

# ------------------------------------------------------------------ the rule


def test_a_configured_price_is_posted_whatever_the_market_says() -> None:
    assert choose(7, None, 100, 3, 0.05) == PriceChoice(7, "config", 100, None)


def test_an_auto_price_follows_the_reference_above_its_floor() -> None:
    assert choose(None, None, 100, 0, 0.05) == PriceChoice(100, "reference", 100, None)
    assert choose(None, 40, 100, 50, 0.05) == PriceChoice(100, "reference", 100, 40)
    # the reference below the floor: the floor
    assert choose(None, 120, 100, 100, 0.05) == PriceChoice(120, "floor", 100, 120)


def test_a_reference_within_the_threshold_keeps_the_posted_price() -> None:
    assert choose(None, None, 104, 100, 0.05).price == 100  # 4% away: no transaction
    assert choose(None, None, 96, 100, 0.05).price == 100
    assert choose(None, None, 106, 100, 0.05).price == 106  # 6%: follow
    assert choose(None, None, 94, 100, 0.05).price == 94
    assert choose(None, None, 101, 100, 0.0).price == 101  # threshold 0: every move
    # a posted price below the floor never stays, however close
    assert choose(None, 101, 100, 100, 0.05) == PriceChoice(101, "floor", 100, 101)


def test_without_a_reference_the_posted_price_is_kept_or_the_floor_taken() -> None:
    assert choose(None, None, None, 100, 0.05) == PriceChoice(100, "posted", None, None)
    assert choose(None, 150, None, 100, 0.05) == PriceChoice(150, "floor", None, 150)
    assert choose(None, 150, None, 0, 0.05) == PriceChoice(150, "floor", None, 150)
    assert choose(None, None, None, 0, 0.05) == PriceChoice(0, "unset", None, None)


# ------------------------------------------------------------------ node.toml


def test_auto_and_a_missing_price_mean_the_reference_price(tmp_path: Path) -> None:
    cfg = replace(config(tmp_path), price_storage=0, price_auto=AUTO_STORAGE)
    save_config(cfg)
    raw = tomllib.loads((tmp_path / CONFIG_NAME).read_text())
    assert raw["offer"]["price_storage"] == "auto"
    assert load_config(tmp_path) == cfg
    text = (tmp_path / CONFIG_NAME).read_text()
    text = text.replace('price_compute = "0.001"\n', "")  # no price at all: auto
    text = text.replace('price_storage = "auto"', 'price_storage = "AUTO"')
    (tmp_path / CONFIG_NAME).write_text(text)
    loaded = load_config(tmp_path)
    assert loaded.price_auto == (True, True, False)
    assert loaded.prices == (0, 0, 3 * 10**15)


@pytest.mark.parametrize(
    ("line", "bad"),
    [("price_threshold = 0.05", "price_threshold = 1.5"), ("price_poll = 30.0", "price_poll = 0")],
)
def test_bad_price_settings_are_refused(tmp_path: Path, line: str, bad: str) -> None:
    save_config(config(tmp_path))
    path = tmp_path / CONFIG_NAME
    text = path.read_text()
    assert line in text
    path.write_text(text.replace(line, bad))
    with pytest.raises(ConfigError, match=line.split()[0]):
        load_config(tmp_path)


# ------------------------------------------------------------------ on chain


def provider_config(w: World, tmp_path: Path, **changes: object) -> PostedPrices:
    """Provider 0's node config with an auto storage price, its operator signing."""
    base = replace(
        config(tmp_path),
        owner=w.providers[0].address,
        price_storage=0,
        price_compute=PRICES[1],
        price_egress=PRICES[2],
        price_auto=AUTO_STORAGE,
    )
    cfg = replace(base, **changes)  # type: ignore[arg-type]
    op = w.operators[0]
    return PostedPrices(cfg, op, MarketLedger(w.conn, w.deployment, op.account))


async def posted(w: World) -> tuple[int, int, int]:
    info = await w.deployer.provider(w.providers[0].address)
    return (info.price[0], info.price[1], info.price[2])


async def test_a_provider_follows_the_reference_price_with_one_update_per_move(
    world: World, tmp_path: Path
) -> None:
    w = world
    prices = provider_config(w, tmp_path)
    costs = {cls: 0 for cls in ResourceClass}
    prices.costs = costs
    # no reference price yet: the price registered is kept
    got = await prices.tick()
    assert got[0] == PriceChoice(PRICES[0], "posted", None, None)
    assert got[1].source == "config"
    assert prices.updates == 0
    assert await posted(w) == PRICES
    assert costs[STORAGE] == PRICES[0]  # the bid agent bids the posted price as its cost

    # three bidders clear at 8e14 (the second-lowest of three bids, m = 1): the reference
    record = await one_auction(w, STORAGE, [5 * 10**14, 8 * 10**14, 9 * 10**14], 1, 2, 2)
    assert record is not None
    reference = await market(w.deployer).reference_price(STORAGE)
    assert reference == 8 * 10**14
    before = await w.conn.block_number()
    got = await prices.tick()
    assert got[0] == PriceChoice(reference, "reference", reference, None)
    assert await posted(w) == (reference, PRICES[1], PRICES[2])  # the other classes kept
    assert await w.conn.block_number() == before + 1  # one transaction
    assert prices.updates == 1
    assert costs[STORAGE] == reference
    shown = read_choices(prices.cfg)
    assert shown["storage"]["source"] == "reference"
    assert shown["storage"]["price"] == reference
    assert shown["compute"]["source"] == "config"

    # unchanged reference: nothing is sent
    before = await w.conn.block_number()
    await prices.tick()
    assert await w.conn.block_number() == before
    assert prices.updates == 1


async def test_the_cost_floor_holds_and_nothing_to_post_is_refused(
    world: World, tmp_path: Path
) -> None:
    w = world
    await one_auction(w, STORAGE, [5 * 10**14, 8 * 10**14, 9 * 10**14], 1, 2, 2)
    floored = provider_config(w, tmp_path, cost_storage=10**15)
    got = await floored.tick()
    assert got[0] == PriceChoice(10**15, "floor", 8 * 10**14, 10**15)
    assert (await posted(w))[0] == 10**15
    # compute on auto with no reference, nothing posted and no floor, offered: refused
    nothing = provider_config(w, tmp_path, price_auto=(False, True, False), price_compute=0)
    await w.operators[0].update_provider(
        _offer_with(await w.deployer.provider(w.providers[0].address), compute=0),
        provider=w.providers[0].address,
    )
    before = await posted(w)
    with pytest.raises(ConfigError, match=r"cost_compute"):
        await nothing.tick()
    assert await posted(w) == before


def _offer_with(p: ProviderInfo, *, compute: int) -> ProviderOffer:
    price = (p.price[0], compute, p.price[2])
    return ProviderOffer(p.endpoint, p.cert_fingerprint, p.x25519_key, p.capacity, price)


async def test_a_node_started_with_an_auto_price_posts_the_reference_price(
    world: World, tmp_path: Path
) -> None:
    """The daemon's start: the registration check posts the chosen price with the offer, the
    bid agent's cost follows it, and status reads where it came from."""
    w = world
    await one_auction(w, STORAGE, [5 * 10**14, 8 * 10**14, 9 * 10**14], 1, 2, 2)
    cfg = replace(node_config(tmp_path, w, 0), price_storage=0, price_auto=AUTO_STORAGE)
    save_config(cfg, overwrite=True)
    rt = await NodeRuntime.start(cfg, w.operators[0].account, w.conn, w.deployment)
    try:
        assert (await posted(w))[0] == 8 * 10**14
        assert rt.bids is not None
        assert rt.bids.policy.cost(STORAGE) == 8 * 10**14
        assert read_choices(load_config(cfg.data_dir))["storage"] == {
            "price": 8 * 10**14,
            "source": "reference",
            "reference": 8 * 10**14,
            "floor": None,
        }
    finally:
        await asyncio.wait_for(rt.stop(), timeout=30)
