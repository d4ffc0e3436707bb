"""``nuclux renew`` on a devnet (anvil and two provider nodes as processes): the cap from
--max-spend and the config key renew_budget (a running budget), --dry-run, clear errors, a
non-zero exit while a lease holding data could not be renewed, and ls before and after."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nuclux.core.types import ONE_NUX
from tests.cli.test_devnet_cli import Cli

pytestmark = pytest.mark.anvil

TERM = 43_200  # 30 days of 60 s epochs: the default renewal
PRICE = ONE_NUX // 1000  # the devnet nodes' storage price per GiB-epoch; a lease is 1 GiB
ONE = PRICE * TERM  # one lease renewed: 43.2 NUX


class User:
    def __init__(self, cli: Cli) -> None:
        account = cli.json("devnet", "status")["accounts"][1]
        self.cli, self.address, self.env = cli, account["address"], {"KEY": account["private_key"]}

    def run(self, *args: str) -> Any:
        return self.cli.run(*args, "--private-key-env", "KEY", env=self.env)

    def json(self, *args: str, code: int = 0) -> Any:
        res = self.run(*args, "--json")
        assert res.exit_code == code, res.output
        return json.loads(res.stdout)

    def balance(self) -> int:
        return int(self.cli.json("balance", self.address)["nux_wei"])


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[User]:
    cli = Cli(tmp_path_factory.mktemp("renew-cli"))
    cli.json("devnet", "up", "--accounts", "1", "--nux", "1000", "--nodes", "2")
    try:
        yield User(cli)
    finally:
        cli.json("devnet", "down")


def test_renew_within_the_cap_then_ls_is_clear(user: User, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(os.urandom(200_000))
    ref = user.json("put", str(tmp_path / "f"), "--k", "1", "--n", "2", "--days", "1")["reference"]
    [entry] = user.json("ls")
    assert entry["at_risk"] is True  # the 1-day leases end within the 3-day window
    # a day of whole epochs from the epoch the put falls in: just under or just over 24 hours
    assert re.search(r"a lease ends in (23\.9 hours|24\.0 hours|1\.0 days)", entry["risk"])
    assert entry["risk"].endswith(" hours")
    ends = entry["expires_at"]
    balance = user.balance()

    # no cap anywhere: nothing is renewed, and the command says why and fails
    res = user.run("renew")
    assert res.exit_code == 1, res.output
    assert "no spending cap" in res.output
    assert "2 lease(s) holding data end within 3 days" in res.output
    # bad values: exit 2, nothing sent
    for args, text in [
        (("--max-spend", "lots"), "--max-spend"),
        (("--max-spend", "-1"), "--max-spend"),
        (("--max-spend", "100", "--days", "2"), "longer than the window"),
        (("--max-spend", "100", "--days", "0"), "--days"),
    ]:
        res = user.run("renew", *args)
        assert res.exit_code == 2, (args, res.output)
        assert text in res.output
        assert "Traceback" not in res.output
    planned = user.json("renew", "--max-spend", "100", "--dry-run")
    assert [x["status"] for x in planned["renewed"]] == ["planned", "planned"]
    assert planned["spent_wei"] == 2 * ONE
    assert user.balance() == balance
    assert user.json("ls")[0]["expires_at"] == ends

    # a running budget of 50 NUX: one lease fits, the other is reported with its file
    assert user.cli.run("config", "set", "renew_budget", "50").exit_code == 0
    first = user.json("renew", code=1)
    [renewed] = first["renewed"]
    assert renewed["status"] == "renewed"
    assert renewed["cost_wei"] == ONE
    assert renewed["new_end"] == renewed["old_end"] + TERM * 60
    [skipped] = first["skipped"]
    assert "more than the 6.8 NUX left under the cap" in skipped["reason"]
    assert first["files_at_risk"] == [ref]
    assert (first["budget_wei"], first["budget_spent_wei"]) == (50 * ONE_NUX, ONE)
    text = user.run("renew", "--max-spend", "100")  # the budget still binds, across runs
    assert text.exit_code == 1
    assert "Not renewed" in text.output
    assert f"at risk: {ref}" in text.output

    assert user.cli.run("config", "set", "renew_budget", "100").exit_code == 0
    second = user.json("renew")
    assert [x["lease"] for x in second["renewed"]] == [skipped["lease"]]
    assert second["skipped"] == []
    assert second["budget_spent_wei"] == 2 * ONE
    assert user.balance() == balance - 2 * ONE

    [entry] = user.json("ls")
    assert entry["at_risk"] is False
    assert entry["risk"] is None
    assert entry["expires_at"] == ends + TERM * 60
    done = user.run("renew")
    assert done.exit_code == 0, done.output
    assert "nothing to renew" in done.output
