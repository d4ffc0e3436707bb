"""Leftovers: what a repair or ``rm`` meant to remove from a provider that did not answer.

Theory of operation
-------------------
A repair that moves a share off a provider drops the old share there through the lease's
next revision, and ``rm`` drops every share of the file and deletes its manifest copies and
time-stamp proofs. A provider that does not answer at that moment keeps them: a share stays
listed in the lease's co-signed revision (room the account's reservation keeps holding), an
object stays stored. Each such removal is recorded as a ``Leftover`` (lease, file id, shares,
object ids) in the leftovers record, and a later ``sweep`` does it: ``repair REF`` sweeps the
leftovers of its file first, ``repair --all`` (each ``--watch`` round too) all of them.

The record is a small JSON file per account and deployment
(``StorageSettings.leftovers_record``; the CLI keeps it in its data directory), changed under
a lock and replaced atomically; without a path it lives in memory for the client's life. A
record that cannot be read is an error naming it; deleting it forgets the leftovers (the
data then stays until its lease ends).

A sweep never removes what the file's newest manifest uses: for a file still in the index it
opens the newest version on the network and keeps a share it places on that lease (a later
repair may have put the same share back there) and a manifest copy on a lease that is one of
its homes. A leftover whose lease is no longer active is forgotten (the provider's data goes
with the lease); one whose provider still does not answer stays for the next sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nuclux.core.lease import LeaseState
from nuclux.core.reference import Reference
from nuclux.core.types import Address
from nuclux.errors import NucluxError, ObjectNotFound
from nuclux.sdk.context import StorageContext
from nuclux.sdk.leftover_record import Leftover, LeftoverRecord
from nuclux.sdk.nodeapi import manifest_id
from nuclux.sdk.peers import PEER_ERRORS
from nuclux.sdk.reading import open_file

_LIVE = (LeaseState.ACTIVE, LeaseState.ACTIVE_TICKETED)


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What a sweep removed, and what is still waiting (with why)."""

    removed: tuple[Leftover, ...] = ()
    forgotten: tuple[Leftover, ...] = ()  # their lease ended, or the file uses them again
    waiting: tuple[tuple[Leftover, str], ...] = ()


async def sweep(ctx: StorageContext, *, file_id: bytes | None = None) -> SweepReport:
    """Remove the recorded leftovers (of ``file_id`` only, if given); see the module doc."""
    todo = ctx.leftovers.pending(file_id)
    uses: dict[bytes, asyncio.Future[_Uses | None]] = {}  # one manifest read per file

    async def uses_of(fid: bytes) -> _Uses | None:
        if fid not in uses:  # started by the first leftover of the file that needs it
            uses[fid] = asyncio.ensure_future(_uses(ctx, fid))
        return await asyncio.shield(uses[fid])

    outcomes = await asyncio.gather(*(_one(ctx, item, uses_of) for item in todo))
    removed: list[Leftover] = []
    forgot: list[Leftover] = []
    waiting: list[tuple[Leftover, str]] = []
    for item, (kind, why) in zip(todo, outcomes, strict=True):
        if kind == "removed":
            removed.append(item)
        elif kind == "forgot":
            forgot.append(item)
        else:
            waiting.append((item, why))
    return SweepReport(tuple(removed), tuple(forgot), tuple(waiting))


@dataclass(frozen=True, slots=True)
class _Uses:
    """What a file's newest manifest keeps where: its shares' leases, its copies' leases."""

    share_leases: tuple[int, ...]
    homes: frozenset[int]


async def _uses(ctx: StorageContext, file_id: bytes) -> _Uses | None:
    """What the file's newest manifest uses; None once the file is out of the index."""
    reference = Reference(Address(ctx.address), file_id)
    if await ctx.entry(reference) is None:
        return None
    opened = await open_file(ctx, reference)
    layout = opened.body.layout
    leases = tuple(s.lease_id for s in layout.shares) if layout is not None else ()
    return _Uses(leases, frozenset(opened.manifest_leases))


async def _one(
    ctx: StorageContext, item: Leftover, uses_of: Callable[[bytes], Awaitable[_Uses | None]]
) -> tuple[str, str]:
    try:
        lease = await ctx.ledger.lease(item.lease_id)
        if lease.state not in _LIVE:
            ctx.leftovers.settle(item)
            return "forgot", f"lease {item.lease_id} is {lease.state.name.lower()}"
        shares, objects = _still_unused(item, await uses_of(item.file_id))
        if not shares and not objects:
            ctx.leftovers.settle(item)
            return "forgot", "the file uses them again"
        _, client = await ctx.peers.client_for_lease(item.lease_id)
        if shares:
            done = await ctx.revisions.commit(
                client, item.lease_id, remove=[(item.file_id, s) for s in shares]
            )
            if done.error is not None:
                return "waiting", done.error
        for oid in objects:
            with contextlib.suppress(ObjectNotFound):
                await asyncio.wait_for(
                    client.delete(item.lease_id, oid), ctx.settings.request_timeout
                )
    except (NucluxError, *PEER_ERRORS) as err:
        return "waiting", str(err) or type(err).__name__
    finally:
        ctx.leases.forget_room(item.lease_id)
    ctx.leftovers.settle(item)
    return "removed", ""


def _still_unused(item: Leftover, uses: _Uses | None) -> tuple[list[int], list[bytes]]:
    """The leftover's shares and objects the file's newest manifest does not use (all of them
    once the file is out of the index)."""
    if uses is None:
        return list(item.shares), list(item.objects)
    here = {i for i, lid in enumerate(uses.share_leases) if lid == item.lease_id}
    shares = [s for s in item.shares if s not in here]
    copy = manifest_id(item.file_id) if item.lease_id in uses.homes else None
    return shares, [o for o in item.objects if o != copy]


__all__ = ["Leftover", "LeftoverRecord", "SweepReport", "sweep"]
