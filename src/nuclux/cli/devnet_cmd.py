"""``nuclux devnet up|status|down``: a local anvil with the contracts deployed and funded."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Annotated

import typer

from nuclux.chain.deployment import DeployParams
from nuclux.chain.devnet import (
    DevAccount,
    DevnetDown,
    DevnetInfo,
    devnet_down,
    devnet_fund,
    devnet_status,
    devnet_up,
)
from nuclux.cli.output import JsonFlag, command_ctx, emit, show_fields, stdout_console, table
from nuclux.cli.session import devnet_dir
from nuclux.core.types import ONE_NUX, format_nux, parse_nux
from nuclux.core.units import parse_size
from nuclux.errors import UsageError

if TYPE_CHECKING:  # the local nodes' module (and the node daemon) is imported when used
    from nuclux.node.localnet import LocalNode, NodeState

devnet_app = typer.Typer(
    help="Run a local multi-process chain (anvil on 127.0.0.1).", no_args_is_help=True
)


def _accounts_table(accounts: tuple[DevAccount, ...]) -> None:
    table(
        "Devnet accounts (private keys are public knowledge: devnet only)",
        ["#", "address", "NUX", "private key"],
        [
            (a.index, a.address, format_nux(a.nux) if a.nux is not None else "?", a.private_key)
            for a in accounts
        ],
    )


@devnet_app.command("up")
def up_cmd(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option(help="RPC port (default: a free one).")] = None,
    accounts: Annotated[int, typer.Option(help="Accounts to fund with NuxCoin.", min=0, max=9)] = 5,
    nux: Annotated[int, typer.Option(help="NuxCoin per funded account.", min=0)] = 100_000,
    epoch_length: Annotated[int, typer.Option(help="Seconds per epoch.", min=1)] = 60,
    auction_window: Annotated[
        int | None,
        typer.Option(
            help="Seconds of an auction's commit window, and of its reveal window "
            "(default 4, or 0 with --auction-blocks).",
            min=0,
        ),
    ] = None,
    auction_blocks: Annotated[
        int,
        typer.Option(
            help="Blocks of an auction's commit window, and of its reveal window (needs "
            "--block-time; a window lasts until both its seconds and its blocks have passed; "
            "the tie-break seed is then the first reveal's block).",
            min=0,
            max=100,
        ),
    ] = 0,
    block_time: Annotated[
        float | None, typer.Option(help="Mine a block every this many seconds (default: per tx).")
    ] = None,
    nodes: Annotated[
        int, typer.Option(help="Provider nodes to start (registered, serving).", min=0, max=32)
    ] = 0,
    node_storage: Annotated[str, typer.Option(help="Storage each node offers.")] = "4GiB",
    node_compute: Annotated[
        int, typer.Option(help="Compute slots each node offers.", min=0, max=64)
    ] = 2,
    node_networks: Annotated[
        int,
        typer.Option(
            help="Spread the nodes over this many networks: node i listens on 127.0.X.1, "
            "X = i mod this (placement puts a file's shares in distinct networks).",
            min=1,
            max=32,
        ),
    ] = 1,
    json: JsonFlag = False,
) -> None:
    """Start anvil, deploy the contracts, fund accounts; record it for other commands.
    With --nodes N, also start N provider nodes (`nuclux devnet down` stops them)."""
    c = command_ctx(ctx, json=json)
    if port is not None and not 1024 <= port <= 65535:
        raise UsageError("--port must be between 1024 and 65535")
    if auction_blocks and block_time is None:
        raise UsageError(
            "--auction-blocks needs --block-time: without it the devnet mines a block only "
            "when a transaction arrives, so windows counted in blocks would not end by themselves"
        )
    window = auction_window if auction_window is not None else (0 if auction_blocks else 4)
    if window == 0 and not auction_blocks:
        raise UsageError("--auction-window 0 needs --auction-blocks (a window must last)")
    try:
        storage_bytes = parse_size(node_storage)
    except ValueError as err:
        raise UsageError(str(err)) from None

    params = DeployParams(
        epoch_length=epoch_length,
        auction_commit_window=window,
        auction_reveal_window=window,
        auction_commit_blocks=auction_blocks,
        auction_reveal_blocks=auction_blocks,
    )
    if auction_blocks:  # commits are closed before the first reveal's block exists
        params = dataclasses.replace(params, auction_seed_delay=0)

    from nuclux.node.localnet import NodeState, start_nodes

    async def go() -> tuple[DevnetInfo, list[LocalNode]]:
        info = await devnet_up(
            devnet_dir(c),
            port,
            params,
            funded=accounts,
            nux_each=nux * ONE_NUX,
            block_time=block_time,
        )
        try:
            started = (
                await start_nodes(
                    devnet_dir(c),
                    nodes,
                    storage_bytes=storage_bytes,
                    compute_units=node_compute,
                    networks=node_networks,
                )
                if nodes
                else []
            )
        except BaseException:
            await devnet_down(devnet_dir(c))  # all or nothing: no half-started network
            raise
        return info, started

    info, started = asyncio.run(go())
    data = info.to_json() | {"nodes": [_node_json(n, True) for n in started]}

    def render() -> None:
        show_fields(
            [
                ("rpc", info.rpc_url),
                ("chain id", info.chain_id),
                ("pid", info.pid),
                *info.addresses.items(),
                ("state", info.state_dir),
            ]
        )
        _accounts_table(info.accounts)
        if started:
            _nodes_table([NodeState(n, True) for n in started])

    emit(c, data, render)


def _node_json(node: LocalNode, running: bool) -> dict[str, object]:
    return {
        "index": node.index,
        "owner": node.owner,
        "owner_key": node.owner_key,
        "operator": node.operator,
        "endpoint": node.endpoint,
        "fingerprint": node.fingerprint,
        "data_dir": node.data_dir,
        "pid": node.pid,
        "running": running,
    }


def _nodes_table(states: list[NodeState]) -> None:
    table(
        "Local provider nodes (owner keys: devnet only, in nodes.json)",
        ["#", "owner", "endpoint", "pid", "running"],
        [(s.node.index, s.node.owner, s.node.endpoint, s.node.pid, s.running) for s in states],
    )


@devnet_app.command("status")
def status_cmd(ctx: typer.Context, json: JsonFlag = False) -> None:
    """Show whether the devnet runs, its RPC URL, contracts and funded accounts."""
    from nuclux.node.localnet import nodes_status

    c = command_ctx(ctx, json=json)
    st = asyncio.run(devnet_status(devnet_dir(c)))
    local = nodes_status(devnet_dir(c))

    def render() -> None:
        show_fields(
            [
                ("running", st.running),
                ("detail", st.detail),
                ("rpc", st.rpc_url),
                ("chain id", st.chain_id),
                ("block", st.block_number),
                *st.addresses.items(),
            ]
        )
        if st.accounts:
            _accounts_table(st.accounts)
        if local:
            _nodes_table(local)

    emit(c, st.to_json() | {"nodes": [_node_json(s.node, s.running) for s in local]}, render)


@devnet_app.command("down")
def down_cmd(ctx: typer.Context, json: JsonFlag = False) -> None:
    """Stop the devnet's provider nodes, then its anvil (only those processes)."""
    from nuclux.node.localnet import stop_nodes

    c = command_ctx(ctx, json=json)

    async def go() -> tuple[list[LocalNode], DevnetDown]:
        stopped = await stop_nodes(devnet_dir(c))
        return stopped, await devnet_down(devnet_dir(c))

    stopped, res = asyncio.run(go())
    message = (f"stopped {len(stopped)} provider nodes; " if stopped else "") + res.message
    emit(
        c,
        res.to_json() | {"nodes_stopped": len(stopped)},
        lambda: stdout_console().print(message),
    )


@devnet_app.command("fund")
def fund_cmd(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help="Address to fund.")],
    eth: Annotated[str, typer.Option(help="Ether for gas.")] = "1",
    nux: Annotated[str, typer.Option(help="NuxCoin from the deployer.")] = "0",
    json: JsonFlag = False,
) -> None:
    """The devnet faucet: ether for gas and NuxCoin (transferred, never minted)."""
    c = command_ctx(ctx, json=json)
    try:
        eth_wei, nux_wei = parse_nux(eth), parse_nux(nux)
    except ValueError as err:
        raise UsageError(str(err)) from None
    data = asyncio.run(devnet_fund(devnet_dir(c), address, eth=eth_wei, nux=nux_wei))
    emit(
        c,
        data,
        lambda: stdout_console().print(
            f"{address}: {format_nux(data['eth_wei'])} ETH, {format_nux(data['nux_wei'])} NUX"
        ),
    )
