"""The [market] section of node.toml: the bid agent's costs (defaulting to the posted prices),
bid script and poll interval round-trip; bad values are refused with the file named."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from nuclux.core.types import ONE_NUX
from nuclux.errors import ConfigError
from nuclux.node.config import CONFIG_NAME, NodeConfig, load_config, save_config


def config(data_dir: Path) -> NodeConfig:
    return NodeConfig(
        data_dir=data_dir,
        owner="0x" + "11" * 20,
        operator_account="operator",
        endpoint="https://127.0.0.1:9443",
        listen_host="127.0.0.1",
        listen_port=9443,
        storage_bytes=1 << 30,
        compute_units=2,
        egress_bytes=0,
        price_storage=2 * 10**15,
        price_compute=10**15,
        price_egress=3 * 10**15,
        stake=100 * ONE_NUX,
        chain="embedded",
        deployment=None,
    )


def test_costs_default_to_the_posted_prices(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    save_config(cfg)
    loaded = load_config(tmp_path)
    assert loaded.costs == (2 * 10**15, 10**15, 3 * 10**15)
    assert (loaded.bid_script, loaded.bid_poll) == (None, 0.15)


def test_the_market_section_round_trips(tmp_path: Path) -> None:
    cfg = replace(
        config(tmp_path),
        cost_storage=5 * 10**14,
        cost_compute=7,
        bid_script=tmp_path / "bid.py",
        bid_poll=0.25,
    )
    save_config(cfg)
    loaded = load_config(tmp_path)
    assert loaded.costs == (5 * 10**14, 7, 3 * 10**15)
    assert loaded.bid_script == tmp_path / "bid.py"
    assert loaded.bid_poll == 0.25
    assert loaded == cfg


def with_market(data_dir: Path, market: dict[str, Any]) -> None:
    """Save a node's configuration with ``market`` as its [market] section."""
    save_config(config(data_dir))
    path = data_dir / CONFIG_NAME
    raw = tomllib.loads(path.read_text())
    raw["market"] = market
    path.write_text(tomli_w.dumps(raw))


def test_a_relative_bid_script_is_relative_to_the_data_dir(tmp_path: Path) -> None:
    with_market(tmp_path, {"bid_script": "scripts/bid.sh"})
    assert load_config(tmp_path).bid_script == tmp_path / "scripts" / "bid.sh"


@pytest.mark.parametrize(
    ("market", "fragment"),
    [
        ({"cost_storage": "lots"}, "lots"),
        ({"cost_compute": "0"}, "at least 1 wei"),
        ({"bid_poll": "often"}, "often"),
        ({"surprise": 1}, "unknown [market] keys: surprise"),
    ],
)
def test_bad_market_values_are_refused(
    tmp_path: Path, market: dict[str, Any], fragment: str
) -> None:
    with_market(tmp_path, market)
    with pytest.raises(ConfigError, match=r"invalid .*node\.toml") as err:
        load_config(tmp_path)
    assert fragment in str(err.value)
