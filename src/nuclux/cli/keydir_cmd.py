"""``nuclux keys publish|lookup``: X25519 public keys in the on-chain KeyDirectory.

Publishing lets others envelope file keys to an address (sharing); lookup reads one back.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from eth_account import Account
from eth_account.signers.local import LocalAccount

from nuclux.cli.chain_cmd import DeploymentOpt
from nuclux.cli.keys_cmd import AccountArg, unlock_account
from nuclux.cli.output import JsonFlag, command_ctx, emit, stdout_console
from nuclux.cli.session import ledger_session


def publish_cmd(
    ctx: typer.Context,
    account: AccountArg,
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """Publish an account's X25519 public key in the KeyDirectory."""
    c = command_ctx(ctx, json=json)
    keys = unlock_account(c, account)
    acct: LocalAccount = Account.from_key(keys.eth_private_key)

    async def go() -> dict[str, Any]:
        async with ledger_session(c, acct, deployment) as ledger:
            receipt = await ledger.publish_key(keys.x25519_public)
            return {
                "address": keys.address,
                "x25519_public": keys.x25519_public.hex(),
                "tx": receipt["transactionHash"].hex(),
            }

    data = asyncio.run(go())
    emit(
        c,
        data,
        lambda: stdout_console().print(f"published {data['x25519_public']} for {data['address']}"),
    )


def lookup_cmd(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help="Address whose key to read.")],
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """Read an address's published X25519 public key (exit 1 if it has none)."""
    c = command_ctx(ctx, json=json)

    async def go() -> bytes | None:
        async with ledger_session(c, None, deployment) as ledger:
            return await ledger.key_of(address)

    key = asyncio.run(go())
    data = {"address": address, "x25519_public": key.hex() if key else None}
    emit(
        c,
        data,
        lambda: stdout_console().print(data["x25519_public"] or f"{address} has published no key"),
    )
    if key is None:
        raise typer.Exit(1)
