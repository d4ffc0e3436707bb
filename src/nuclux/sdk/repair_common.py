"""What the repair modules share: the report types, the error for a file beyond repair, and
the steps both kinds of file end with (recording the new state in the index, removing what the
old providers still hold)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nuclux.core.file_index import MAX_LOCATORS, IndexEntry
from nuclux.core.reference import Reference, parse_reference
from nuclux.core.types import LeaseId
from nuclux.errors import NucluxError, ObjectNotFound, UsageError
from nuclux.sdk.context import StorageContext
from nuclux.sdk.index import IndexUnavailable
from nuclux.sdk.leases import Placement
from nuclux.sdk.leftover_record import Leftover
from nuclux.sdk.nodeapi import manifest_id
from nuclux.sdk.peers import PEER_ERRORS
from nuclux.sdk.reading import OpenedFile
from nuclux.sdk.repair_check import FileTerm, ShareCheck


class NotEnoughShares(NucluxError):
    """Fewer than ``k`` healthy shares remain: the file cannot be rebuilt."""


@dataclass(frozen=True, slots=True)
class MovedShare:
    """A share (packed: a manifest copy) rebuilt on a new provider and lease."""

    share: int
    old_provider: str
    old_lease: int
    provider: str
    lease_id: int
    committed: bool  # the new lease's revision listing it was co-signed


@dataclass(frozen=True, slots=True)
class RepairReport:
    reference: Reference
    packed: bool
    version: int  # the manifest version found
    new_version: int | None  # the version published; None when none was needed
    shares: tuple[ShareCheck, ...]  # every share (packed: copy) as judged
    moved: tuple[MovedShare, ...] = ()
    problems: tuple[str, ...] = ()  # did not fail the repair (an old share left in place)
    swept: int = 0  # leftovers of earlier repairs of this file removed first (sdk.leftovers)

    @property
    def bad(self) -> tuple[ShareCheck, ...]:
        return tuple(s for s in self.shares if not s.healthy)

    @property
    def nothing_to_do(self) -> bool:
        return not self.bad

    @property
    def unrepaired(self) -> tuple[ShareCheck, ...]:
        """The bad shares (copies) this repair did not move: still bad."""
        moved = {m.share for m in self.moved}
        return tuple(s for s in self.bad if s.share not in moved)


@dataclass(frozen=True, slots=True)
class RepairFailure:
    """A file that could not be repaired (``reference`` None: the round itself failed)."""

    reference: Reference | None
    error: str
    exit_code: int = 1


Outcome = RepairReport | RepairFailure
OnRound = Callable[[int, list[Outcome]], None]


def as_reference(ref: Reference | str) -> Reference:
    if isinstance(ref, Reference):
        return ref
    if not isinstance(ref, str) or not ref.strip().startswith("nux:"):
        raise UsageError(f"{str(ref)[:20]!r} is not a file reference (nux:...)")
    return parse_reference(ref)


def days_left(ctx: StorageContext, term: FileTerm) -> float:
    """The term a new lease needs: what is left of the file's, else the default."""
    left = term.end_epoch - term.epoch
    if left <= 0:
        return ctx.settings.default_days
    return left * ctx.ledger.deployment.params.epoch_length / 86_400


async def placement_of(ctx: StorageContext, provider: str, lease_id: int) -> Placement:
    info = await ctx.peers.provider(provider)
    return Placement(info, LeaseId(lease_id), ctx.peers.client(info))


async def record_entry(
    ctx: StorageContext, opened: OpenedFile, version: int, locators: Sequence[int], healthy: int
) -> None:
    """The file's index entry names ``version`` and its homes (written by the next flush)."""
    try:
        entry = await ctx.entry(opened.reference)
    except IndexUnavailable:
        entry = None
    homes = tuple(LeaseId(x) for x in locators[:MAX_LOCATORS])
    if entry is None:
        body, m = opened.body, opened.manifest
        entry = IndexEntry(opened.reference.file_id, body.name, body.size, m.created_at, 1, homes)
    ctx.index.put(
        dataclasses.replace(
            entry, manifest_version=version, locators=homes, healthy_shares=min(healthy, 64)
        )
    )


async def drop_old(
    ctx: StorageContext,
    opened: OpenedFile,
    old: list[tuple[int | None, int, bool]],
    homes: set[int],
) -> list[str]:
    """Remove old shares (share None: only a manifest copy) given as (share, lease, reachable):
    a revision of the lease drops the share, and a manifest copy there that is not a home of
    the new version is deleted. What a provider does not answer (or did not, when checked) is
    recorded as a leftover for a later sweep (``nuclux.sdk.leftovers``). Failures are
    reported, not raised."""
    fid = opened.reference.file_id
    problems: list[str] = []

    async def one(share: int | None, lease_id: int, reachable: bool) -> None:
        shares = () if share is None else (share,)
        copy = lease_id in opened.manifest_leases and lease_id not in homes
        objects = (manifest_id(fid),) if copy else ()
        if not reachable:  # whether it holds a manifest copy is unknown: removing none is fine
            away = () if lease_id in homes else (manifest_id(fid),)
            ctx.leftovers.add(Leftover(lease_id, fid, shares, away))
            return
        try:
            _, client = await ctx.peers.client_for_lease(lease_id)
            if share is not None:
                done = await ctx.revisions.commit(client, lease_id, remove=[(fid, share)])
                if done.error is not None:
                    problems.append(f"share {share} left on lease {lease_id}: {done.error}")
                    ctx.leftovers.add(Leftover(lease_id, fid, shares))
            if copy:
                with contextlib.suppress(ObjectNotFound):
                    await asyncio.wait_for(
                        client.delete(lease_id, manifest_id(fid)), ctx.settings.request_timeout
                    )
        except PEER_ERRORS as err:
            problems.append(f"lease {lease_id}: {err or type(err).__name__}")
            ctx.leftovers.add(Leftover(lease_id, fid, shares, objects))
        finally:
            ctx.leases.forget_room(lease_id)

    await asyncio.gather(*(one(share, lid, ok) for share, lid, ok in old))
    return problems
