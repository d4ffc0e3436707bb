"""``nuclux market requests|bids ID|prices``: what the market is doing.

``requests`` lists the most recent auction requests (newest first) with their state and,
once cleared, the uniform price; ``bids ID`` the sealed bids of one request (prices appear
once revealed); ``prices`` the reference price of each class (or ``--class``) and the
clearing prices it is computed from. Reading needs no key.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from nuclux.chain.market_ledger import RequestInfo
from nuclux.cli.chain_cmd import DeploymentOpt
from nuclux.cli.output import JsonFlag, command_ctx, emit, stdout_console, table
from nuclux.cli.session import ledger_session
from nuclux.core.types import ResourceClass
from nuclux.errors import UsageError
from nuclux.sdk.market import Market, PriceView

market_app = typer.Typer(
    help="Auctions for new leases: requests, bids and reference prices.", no_args_is_help=True
)

ClassOpt = Annotated[
    str | None,
    typer.Option("--class", help="storage, compute or bandwidth (default: every class)."),
]


def _cls(name: str) -> ResourceClass:
    try:
        return ResourceClass[name.upper()]
    except KeyError:
        raise UsageError(
            f"unknown resource class {name!r}: use storage, compute or bandwidth"
        ) from None


def request_dict(r: RequestInfo) -> dict[str, Any]:
    return {
        "id": r.id,
        "status": r.status.name.lower(),
        "class": r.cls.name.lower(),
        "consumer": r.consumer,
        "units": r.units,
        "term_epochs": r.term,
        "m": r.m,
        "m_min": r.m_min,
        "excluded": r.excluded,
        "reserve_wei": r.reserve,
        "escrow_wei": r.escrow,
        "commits": r.commits,
        "reveals": r.reveals,
        "commit_end": r.commit_end,
        "reveal_end": r.reveal_end,
        "price_wei": r.price,
        "winners": r.winners,
    }


def price_dict(v: PriceView) -> dict[str, Any]:
    return {
        "class": v.cls.name.lower(),
        "reference_wei": v.reference,
        "history": [
            {
                "block": p.block,
                "request": p.request_id,
                "price_wei": p.price,
                "volume": p.volume,
                "bidders": p.bidders,
                "restricted": p.restricted,
            }
            for p in v.history
        ],
    }


@market_app.command("requests")
def requests_cmd(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="How many of the latest.", min=1, max=1000)] = 20,
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """The latest auction requests, newest first."""
    c = command_ctx(ctx, json=json)

    async def go() -> list[RequestInfo]:
        async with ledger_session(c, None, deployment) as ledger:
            return await Market(ledger).requests(limit=limit)

    rows = [request_dict(r) for r in asyncio.run(go())]
    emit(
        c,
        rows,
        lambda: table(
            "auction requests",
            ["id", "status", "class", "m", "units", "term", "reserve", "bids", "price"],
            [
                (
                    r["id"],
                    r["status"],
                    r["class"],
                    f"{r['m_min']}..{r['m']}",
                    r["units"],
                    r["term_epochs"],
                    r["reserve_wei"],
                    f"{r['reveals']}/{r['commits']}",
                    r["price_wei"] or "",
                )
                for r in rows
            ],
        ),
    )


@market_app.command("bids")
def bids_cmd(
    ctx: typer.Context,
    request: Annotated[int, typer.Argument(help="Request id.", min=1)],
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """The bids committed on one request (prices once revealed)."""
    c = command_ctx(ctx, json=json)

    async def go() -> dict[str, Any]:
        async with ledger_session(c, None, deployment) as ledger:
            market = Market(ledger)
            info = await market.request(request)
            bids = await market.bids(request)
        return {
            "request": request_dict(info),
            "bids": [
                {
                    "provider": who,
                    "revealed": b.revealed,
                    "price_wei": b.price if b.revealed else None,
                    "commitment": "0x" + b.commitment.hex(),
                }
                for who, b in bids
            ],
        }

    data = asyncio.run(go())
    emit(
        c,
        data,
        lambda: table(
            f"bids on request {request} ({data['request']['status']})",
            ["provider", "revealed", "price"],
            [
                (b["provider"], "yes" if b["revealed"] else "no", b["price_wei"] or "sealed")
                for b in data["bids"]
            ],
        ),
    )


@market_app.command("prices")
def prices_cmd(
    ctx: typer.Context,
    cls: ClassOpt = None,
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """The reference price per class (a value-weighted median of recent clearing prices in
    unrestricted auctions with at least 3 staked bidders) and the clearing prices behind it."""
    c = command_ctx(ctx, json=json)
    classes = [_cls(cls)] if cls is not None else list(ResourceClass)

    async def go() -> list[PriceView]:
        async with ledger_session(c, None, deployment) as ledger:
            market = Market(ledger)
            return [await market.prices(k) for k in classes]

    views = [price_dict(v) for v in asyncio.run(go())]

    def render() -> None:
        out = stdout_console()
        for v in views:
            ref = v["reference_wei"]
            shown = "none yet (no auction with 3+ staked bidders)" if ref is None else ref
            out.print(f"{v['class']}: reference price {shown} wei per unit")
            for p in v["history"][-10:]:
                out.print(
                    f"  request {p['request']} (block {p['block']}): {p['price_wei']} wei,"
                    f" volume {p['volume']}, {p['bidders']} bidders"
                    + (" (restricted: not counted)" if p["restricted"] else "")
                )

    emit(c, views if cls is None else views[0], render)
