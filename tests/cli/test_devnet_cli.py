"""The CLI across processes' worth of state: a devnet (real anvil), then balance, transfer,
provider registration and a lease driven command by command, with clear failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from nuclux.chain import ChainConnection
from nuclux.cli.main import app

pytestmark = pytest.mark.anvil


class Cli:
    def __init__(self, tmp: Path) -> None:
        cfg = tmp / "config.toml"
        cfg.write_text("")
        self.env = {
            "NUCLUX_CONFIG": str(cfg),
            "NUCLUX_DATA_DIR": str(tmp / "data"),
            "NUCLUX_MARKET": "false",  # posted prices; tests/cli/test_market_cli.py buys at auction
        }
        self.runner = CliRunner()

    def run(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return self.runner.invoke(app, list(args), env={**self.env, **(env or {})})

    def json(self, *args: str, env: dict[str, str] | None = None) -> Any:
        res = self.run(*args, "--json", env=env)
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    c = Cli(tmp_path_factory.mktemp("cli"))
    up = c.json("devnet", "up", "--accounts", "3", "--nux", "1000", "--epoch-length", "5")
    assert up["chain_id"] == 31337
    try:
        yield c
    finally:
        down = c.json("devnet", "down")
        assert down["stopped"] is True


def key_env(cli: Cli, index: int) -> tuple[str, dict[str, str]]:
    status = cli.json("devnet", "status")
    acct = status["accounts"][index]
    return acct["address"], {"DEV_KEY": acct["private_key"]}


def test_status_lists_contracts_and_accounts(cli: Cli) -> None:
    status = cli.json("devnet", "status")
    assert status["running"] is True
    assert set(status["addresses"]) >= {"NuxCoin", "ProviderRegistry", "LeaseManager"}
    assert len(status["accounts"]) == 4  # the deployer and three funded accounts


def test_balance_and_transfer(cli: Cli) -> None:
    a, env_a = key_env(cli, 1)
    b, _ = key_env(cli, 2)
    before = cli.json("balance", b)["nux_wei"]
    sent = cli.json("transfer", b, "2.5", "--private-key-env", "DEV_KEY", env=env_a)
    assert sent["amount_wei"] == 25 * 10**17
    assert cli.json("balance", b)["nux_wei"] == before + 25 * 10**17
    # bad input: exit 2, nothing sent
    res = cli.run("transfer", b, "lots", "--private-key-env", "DEV_KEY", env=env_a)
    assert res.exit_code == 2
    assert "invalid NuxCoin amount" in res.output
    # the chain refuses: exit 5 with the custom error, one line, no traceback
    res = cli.run("transfer", b, "999999", "--private-key-env", "DEV_KEY", env=env_a)
    assert res.exit_code == 5
    assert "ERC20InsufficientBalance" in res.output
    assert "Traceback" not in res.output
    assert cli.json("balance", a)["nux_wei"] == 1000 * 10**18 - 25 * 10**17


def test_provider_and_lease_by_commands(cli: Cli) -> None:
    prov, env_p = key_env(cli, 3)
    cons, env_c = key_env(cli, 2)
    reg = cli.json(
        "provider",
        "register",
        "--endpoint",
        "https://127.0.0.1:7001",
        "--stake",
        "150",
        "--storage",
        "100",
        "--price-storage",
        "0.01",
        "--private-key-env",
        "DEV_KEY",
        env=env_p,
    )
    assert reg["status"] == "active"
    assert reg["stake_wei"] == 150 * 10**18
    assert any(p["owner"] == prov for p in cli.json("provider", "list"))

    opened = cli.json(
        "lease",
        "open",
        prov,
        "--class",
        "storage",
        "--units",
        "10",
        "--epochs",
        "4",
        "--escrow",
        "1",
        "--max-price",
        "0.01",
        "--private-key-env",
        "DEV_KEY",
        env=env_c,
    )
    lid = str(opened["id"])
    assert opened["state"] == "ticketed"
    assert opened["consumer"] == cons
    accepted = cli.json("lease", "accept", lid, "--private-key-env", "DEV_KEY", env=env_p)
    assert accepted["state"] == "active"
    topped = cli.json("lease", "top-up", lid, "0.5", "--private-key-env", "DEV_KEY", env=env_c)
    assert topped["escrow_wei"] == 15 * 10**17
    assert cli.json("lease", "show", lid)["state"] == "active"
    assert [x["id"] for x in cli.json("lease", "list", cons)] == [int(lid)]

    # the wrong party is refused with a clear reason
    res = cli.run("lease", "cancel", lid, "--private-key-env", "DEV_KEY", env=env_p)
    assert res.exit_code == 5
    assert "NotConsumer" in res.output
    # a price above the cap is refused before any money moves
    res = cli.run(
        "lease",
        "open",
        prov,
        "--class",
        "storage",
        "--units",
        "1",
        "--epochs",
        "1",
        "--escrow",
        "1",
        "--max-price",
        "0.001",
        "--private-key-env",
        "DEV_KEY",
        env=env_c,
    )
    assert res.exit_code == 5
    assert "PriceAboveMax" in res.output
    res = cli.run(
        "lease",
        "open",
        prov,
        "--class",
        "gpu",
        "--units",
        "1",
        "--epochs",
        "1",
        "--escrow",
        "1",
        "--max-price",
        "1",
        "--private-key-env",
        "DEV_KEY",
        env=env_c,
    )
    assert res.exit_code == 2

    cancelled = cli.json("lease", "cancel", lid, "--private-key-env", "DEV_KEY", env=env_c)
    assert cancelled["state"] == "closing"


def test_commands_without_a_devnet_say_what_to_do(tmp_path: Path) -> None:
    c = Cli(tmp_path)
    res = c.run("balance", "0x" + "11" * 20)
    assert res.exit_code == 5
    assert "nuclux devnet up" in res.output
    st = c.json("devnet", "status")
    assert st["running"] is False
    assert c.json("devnet", "down")["stopped"] is False


def test_publish_and_lookup_an_encryption_key(cli: Cli) -> None:
    env = {"NUCLUX_PASSPHRASE": "pw", "NUCLUX_SCRYPT_N": "16"}
    made = cli.json("keys", "new", "carol", env=env)
    res = cli.run("keys", "lookup", made["address"])
    assert res.exit_code == 1  # nothing published yet
    funded = cli.json("devnet", "fund", made["address"], "--eth", "1", "--nux", "5")
    assert funded["nux_wei"] == 5 * 10**18
    cli.json("keys", "publish", "carol", env=env)
    found = cli.json("keys", "lookup", made["address"])
    assert found["x25519_public"] == made["x25519_public"].removeprefix("0x")


def test_chain_deploy_to_an_rpc(cli: Cli, tmp_path: Path) -> None:
    status = cli.json("devnet", "status")
    _, env_a = key_env(cli, 1)
    out = tmp_path / "second.json"
    dep = cli.json(
        "chain",
        "deploy",
        "--rpc",
        status["rpc_url"],
        "--out",
        str(out),
        "--epoch-length",
        "30",
        "--private-key-env",
        "DEV_KEY",
        env=env_a,
    )
    assert out.exists()
    assert dep["params"]["epoch_length"] == 30
    assert dep["addresses"]["NuxCoin"] != status["addresses"]["NuxCoin"]
    info = cli.json("chain", "info", "--deployment", str(out))
    assert info["addresses"] == dep["addresses"]
    # the deployer of the second NuxCoin holds its whole supply
    bal = cli.json("balance", dep["deployer"], "--deployment", str(out))
    assert bal["nux_wei"] == dep["params"]["supply"]
    res = cli.run("chain", "deploy", "--rpc", "ftp://x", "--private-key-env", "DEV_KEY", env=env_a)
    assert res.exit_code == 2


def test_any_erc20_client_uses_nuxcoin_on_the_devnet(cli: Cli) -> None:
    """A plain synchronous web3 client, knowing only the standard ERC-20 ABI."""
    from eth_account import Account
    from web3 import Web3

    from tests.chain.test_anvil import ERC20_ABI

    status = cli.json("devnet", "status")
    w3 = Web3(Web3.HTTPProvider(status["rpc_url"]))
    token = w3.eth.contract(address=status["addresses"]["NuxCoin"], abi=ERC20_ABI)
    assert token.functions.symbol().call() == "NUX"
    assert token.functions.decimals().call() == 18
    sender = Account.from_key(status["accounts"][1]["private_key"])
    to = status["accounts"][2]["address"]
    before = token.functions.balanceOf(to).call()
    tx = token.functions.transfer(to, 7).build_transaction(
        {"from": sender.address, "nonce": w3.eth.get_transaction_count(sender.address)}
    )
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
    )
    assert receipt["status"] == 1
    assert token.functions.balanceOf(to).call() == before + 7


def test_devnet_auction_windows_in_blocks(tmp_path: Path) -> None:
    """--auction-blocks: refused without --block-time (and a 0-second window without blocks)
    before anything starts; with it, the house counts its windows in blocks alone and takes
    the first reveal's block as the seed."""
    c = Cli(tmp_path)
    res = c.run("devnet", "up", "--auction-blocks", "2")
    assert res.exit_code == 2
    assert "--auction-blocks needs --block-time" in res.output
    res = c.run("devnet", "up", "--auction-window", "0")
    assert res.exit_code == 2
    assert c.json("devnet", "status")["running"] is False
    c.json("devnet", "up", "--accounts", "1", "--block-time", "1", "--auction-blocks", "2")
    try:
        status = c.json("devnet", "status")

        async def read() -> tuple[int, int, int, int, int]:
            async with await ChainConnection.open(status["rpc_url"]) as conn:
                house = conn.contract("AuctionHouse", status["addresses"]["AuctionHouse"])
                f = house.functions
                return (
                    await f.commitWindow().call(),
                    await f.commitBlocks().call(),
                    await f.revealWindow().call(),
                    await f.revealBlocks().call(),
                    await f.seedDelay().call(),
                )

        assert asyncio.run(read()) == (0, 2, 0, 2, 0)
    finally:
        c.json("devnet", "down")
