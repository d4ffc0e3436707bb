"""How the bid agent prices a bid: truthfully (the node's cost per unit) or by a user script.

Truthful is the default and, under the market's uniform-price rule, the best a provider
supplying one slot can do: its pay does not depend on its bid, only whether it wins, so the
cost per unit (``[market] cost_storage|cost_compute|cost_egress`` in ``node.toml``, by
default the posted prices) is bid as is.

A bid script (``[market] bid_script = "path"``) is run as a subprocess for each request it
could serve, with the request as one JSON object on stdin::

    {"request": 7, "class": "storage", "units": 4, "term": 10, "m": 2, "m_min": 2,
     "reserve": "0.002", "reserve_wei": 2000000000000000, "commit_end": 1700000060,
     "reveal_end": 1700000120, "commit_end_block": 1042, "reveal_end_block": 1044,
     "cost": "0.001", "cost_wei": 1000000000000000}

and prints one line: a price in NUX per unit ("0.0015", or "1500wei"), or ``skip`` to not bid.
A script that fails, exceeds its time limit, or prints anything else is a *failure*: the
default (truthful) price is used instead and the failure is logged and counted. Its stderr is
kept in the log (cut short). A script's price above the reserve means no bid is made (as for
the default price).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nuclux.chain.market_ledger import RequestInfo
from nuclux.core.types import ResourceClass, format_nux, parse_nux
from nuclux.errors import UsageError

log = logging.getLogger("nuclux.node.bids")

SCRIPT_TIMEOUT = 2.0  # seconds a bid script may take
_OUTPUT_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Quote:
    """The policy's answer: ``price`` per unit in wei (None: do not bid) and where it came
    from: ``cost`` (truthful), ``script``, ``skip`` (the script said so) or ``fallback`` (the
    script failed: ``error`` says how; the truthful price is used)."""

    price: int | None
    source: Literal["cost", "script", "skip", "fallback"]
    error: str | None = None


def request_json(info: RequestInfo, cost: int) -> bytes:
    body = {
        "request": info.id,
        "class": info.cls.name.lower(),
        "units": info.units,
        "term": info.term,
        "m": info.m,
        "m_min": info.m_min,
        "reserve": format_nux(info.reserve),
        "reserve_wei": info.reserve,
        "commit_end": info.commit_end,
        "reveal_end": info.reveal_end,
        "commit_end_block": info.commit_end_block,
        "reveal_end_block": info.reveal_end_block,
        "cost": format_nux(cost),
        "cost_wei": cost,
    }
    return json.dumps(body).encode() + b"\n"


def parse_answer(text: str) -> int | None:
    """A script's answer: a price in wei per unit, or None for ``skip``; ``UsageError`` for
    anything else."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) != 1:
        raise UsageError(f"expected one line (a price or 'skip'), got {len(lines)}")
    answer = lines[0]
    if answer.lower() == "skip":
        return None
    try:
        price = int(parse_nux(answer))
    except (UsageError, ValueError, ArithmeticError) as exc:
        raise UsageError(f"not a price: {answer[:80]!r} ({exc})") from None
    if price < 1:
        raise UsageError(f"a price must be at least 1 wei per unit, got {answer[:80]!r}")
    return price


@dataclass
class PricePolicy:
    """``costs`` per class (wei per unit) and an optional ``script``."""

    costs: dict[ResourceClass, int]
    script: Path | None = None
    timeout: float = SCRIPT_TIMEOUT

    def cost(self, cls: ResourceClass) -> int:
        return self.costs[cls]

    async def quote(self, info: RequestInfo) -> Quote:
        cost = self.cost(info.cls)
        if self.script is None:
            return Quote(cost, "cost")
        try:
            price = await self._run(info, cost)
        except UsageError as exc:
            log.warning("bid script %s on request %d: %s; bidding cost", self.script, info.id, exc)
            return Quote(cost, "fallback", str(exc))
        if price is None:
            return Quote(None, "skip")
        return Quote(price, "script")

    async def _run(self, info: RequestInfo, cost: int) -> int | None:
        assert self.script is not None
        try:
            proc = await asyncio.create_subprocess_exec(
                str(self.script),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group: a timeout kills it whole
            )
        except OSError as exc:
            raise UsageError(f"cannot run: {exc}") from None
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(request_json(info, cost)), self.timeout
            )
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.communicate()  # reaps it and closes the pipes
            raise UsageError(f"no answer within {self.timeout:g} s (killed)") from None
        if proc.returncode != 0:
            tail = err.decode(errors="replace").strip()[-200:]
            raise UsageError(f"exited with status {proc.returncode}: {tail}")
        if len(out) > _OUTPUT_LIMIT:
            raise UsageError(f"printed {len(out)} bytes; expected one short line")
        return parse_answer(out.decode(errors="replace"))
