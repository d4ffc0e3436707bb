"""Reaching the chain from a CLI command: which endpoint, which deployment, which key.

The deployment file is ``--deployment``/``$NUCLUX_DEPLOYMENT``/config ``deployment``, else the
one ``nuclux devnet up`` wrote under the data directory. The endpoint is the configured chain
unless that is ``embedded`` (which lives inside one process only), in which case the
deployment's own RPC URL is used. Signing keys come from the keystore (``--account``) or, for
scripts on a devnet, from an environment variable holding a raw private key.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from nuclux.chain import ChainConnection, Deployment, Ledger
from nuclux.cli.keys_cmd import unlock_account
from nuclux.cli.output import Ctx
from nuclux.errors import DeploymentNotFound, UsageError
from nuclux.keys.derive import parse_private_key_hex


def devnet_dir(c: Ctx) -> Path:
    return c.config.data_dir / "devnet"


def deployment_path(c: Ctx, override: Path | None = None) -> Path:
    if override is not None:
        return override
    if c.config.deployment is not None:
        return c.config.deployment
    return devnet_dir(c) / "deployment.json"


def load_deployment(c: Ctx, override: Path | None = None) -> Deployment:
    path = deployment_path(c, override)
    if not path.exists():
        raise DeploymentNotFound(
            f"no deployment at {path}: start a devnet with `nuclux devnet up`, deploy with "
            "`nuclux chain deploy --rpc URL`, or set NUCLUX_DEPLOYMENT"
        )
    return Deployment.load(path)


def rpc_url(c: Ctx, deployment: Deployment) -> str:
    chain = c.config.chain
    if chain == "embedded":
        if deployment.rpc_url == "embedded":
            raise UsageError(
                "this deployment lives on an embedded chain, which exists only inside one "
                "process; use `nuclux devnet up` for a chain that commands can share"
            )
        return deployment.rpc_url
    return chain


def signer(c: Ctx, account: str | None, key_env: str | None) -> LocalAccount:
    """The signing key: a raw key from ``$key_env`` (devnet scripts) or a keystore account."""
    if key_env:
        text = os.environ.get(key_env, c.env.get(key_env, ""))
        if not text:
            raise UsageError(f"environment variable {key_env} is empty or unset")
        acct: LocalAccount = Account.from_key(parse_private_key_hex(text))
        return acct
    keys = unlock_account(c, account)
    out: LocalAccount = Account.from_key(keys.eth_private_key)
    return out


@asynccontextmanager
async def ledger_session(
    c: Ctx, acct: LocalAccount | None, deployment: Path | None = None
) -> AsyncIterator[Ledger]:
    """A connected ``Ledger`` for ``acct`` (or a read-only throwaway key)."""
    dep = load_deployment(c, deployment)
    conn = await ChainConnection.open(
        rpc_url(c, dep), confirmations=c.config.confirmations, tx_timeout=c.config.tx_timeout
    )
    try:
        reader: LocalAccount = acct or Account.create()
        yield Ledger(conn, dep, reader)
    finally:
        await conn.close()
