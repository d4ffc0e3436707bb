"""Storing a file (``storage-protocol.md`` §4): packed into its manifest, or spread as shares.

Files of at most 4 KiB travel inside their manifest (no shares, no revisions): one small
object written to up to three of the account's leases. Larger files are placed on ``n``
providers (leases reused, extended or opened first: the only transactions), streamed through
``Uploader``, committed by one revision per provider, and described by a manifest written to
the first ``min(n, 3)`` of them. Either way the file joins the index in memory; the index is
written by ``flush`` (once per command), and the manifest's digest waits for the next anchor.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path

from nuclux.core.envelope import seal_key
from nuclux.core.erasure import Layout
from nuclux.core.file_index import MAX_LOCATORS, IndexEntry
from nuclux.core.manifest import (
    INLINE_MAX_BYTES,
    MAX_MANIFEST_BYTES,
    NO_PREVIOUS,
    Manifest,
    ManifestBody,
    Share,
    encode_name,
    inline_body,
    seal_manifest,
    spread_body,
)
from nuclux.core.reference import Reference
from nuclux.core.segment import SegmentCipher
from nuclux.core.spread import network_of, spread_order
from nuclux.core.types import Address, LeaseId
from nuclux.errors import NucluxError, UsageError
from nuclux.sdk.context import Pending, StorageContext
from nuclux.sdk.leases import Placement
from nuclux.sdk.nodeapi import manifest_id
from nuclux.sdk.peers import PEER_ERRORS, Probe
from nuclux.sdk.settings import (
    INLINE_COPIES,
    NotEnoughProviders,
    Progress,
    choose_code,
    manifest_copies,
)
from nuclux.sdk.upload import Uploader

OVERHEAD_BYTES = 2 * MAX_MANIFEST_BYTES  # room a lease needs beside a share: the manifest


def _open_file(path: str | os.PathLike[str]) -> tuple[Path, int]:
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise UsageError(f"{p}: no such file") from None
    except OSError as err:
        raise UsageError(f"{p}: cannot read it ({err.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{p}: not a regular file")
    if not os.access(p, os.R_OK):
        raise UsageError(f"{p}: permission denied")
    return p, st.st_size


async def put(
    ctx: StorageContext,
    path: str | os.PathLike[str],
    *,
    k: int | None,
    n: int | None,
    days: float | None,
    max_price: int | None,
    name: str | None,
    progress: Progress | None,
) -> Reference:
    p, size = _open_file(path)
    label = p.name if name is None else name
    encode_name(label)  # a bad name fails before anything moves
    term = ctx.settings.default_days if days is None else days
    ctx.settings.epochs_for(term, ctx.ledger.deployment.params.epoch_length)
    file_id, file_key = os.urandom(16), os.urandom(32)
    reference = Reference(Address(ctx.address), file_id)
    if size <= INLINE_MAX_BYTES:
        data = p.read_bytes()
        if len(data) > INLINE_MAX_BYTES:
            raise UsageError(f"{p}: the file grew while it was being read; store it again")
        probes = await ctx.leases.candidates(OVERHEAD_BYTES, max_price)
        if not probes:
            raise NotEnoughProviders("no provider can take the file (active, within the price)")
        copies = min(INLINE_COPIES, len(probes))
        placements = await ctx.leases.ensure(probes, copies, OVERHEAD_BYTES, term, max_price)
        body = inline_body(data, name=label)
        healthy = len(placements)
        if progress is not None:
            progress(size, size)
    else:
        placements, body = await _spread(
            ctx, p, size, file_id, file_key, k, n, term, max_price, label, progress
        )
        healthy = len(placements)
    manifest = _seal(ctx, reference, file_key, body)
    copies = INLINE_COPIES
    if body.layout is not None:
        copies = manifest_copies(body.layout.k, body.layout.n)
    targets = placements[:copies]
    if body.layout is None:  # packed: the write goes on in the background until flush
        write = write_manifest(ctx, manifest, targets, linger=ctx.settings.behind_linger)
        await ctx.behind.submit(reference, write)
        locators = [p.lease_id for p in targets]
    else:
        locators = await write_manifest(ctx, manifest, targets)
    entry = IndexEntry(
        file_id, label, size, manifest.created_at, 1, tuple(locators[:MAX_LOCATORS]), healthy
    )
    ctx.index.put(entry)
    ctx.digests.append(Pending(reference, manifest.version, manifest.digest, tuple(locators)))
    return reference


def _seal(ctx: StorageContext, ref: Reference, file_key: bytes, body: ManifestBody) -> Manifest:
    envelope = seal_key(
        file_key,
        recipient_public=ctx.keys.x25519_public,
        ephemeral_private=os.urandom(32),
        context=ref.to_bytes(),
    )
    return seal_manifest(
        ctx.keys.eth_private_key,
        file_id=ref.file_id,
        version=1,
        created_at=int(time.time()),
        previous=NO_PREVIOUS,
        envelopes=[envelope],
        body=body,
        file_key=file_key,
        body_nonce=os.urandom(12),
    )


async def write_manifest(
    ctx: StorageContext, manifest: Manifest, placements: list[Placement], *, linger: float = 0.0
) -> list[LeaseId]:
    """PUT the manifest to each placement; the leases that took it (at least one)."""
    data = manifest.encode()
    oid = manifest_id(manifest.file_id)
    # a manifest is small: coalesced with other small writes (each batch is time-bounded)
    outcomes = await asyncio.gather(
        *(ctx.batcher.put(p.lease_id, p.client, oid, data, linger=linger) for p in placements),
        return_exceptions=True,
    )
    ok = [
        p.lease_id
        for p, o in zip(placements, outcomes, strict=True)
        if not isinstance(o, BaseException)
    ]
    if not ok:
        why = "; ".join(
            f"{p.provider.owner}: {o}" for p, o in zip(placements, outcomes, strict=True)
        )
        raise NucluxError(f"the manifest of {manifest.reference} could not be stored ({why})")
    return ok


async def replacement(
    ctx: StorageContext,
    share: int,
    old: Placement,
    reason: str,
    *,
    in_use: set[str],
    failed: set[str],
    need: int,
    days: float,
    max_price: int | None,
    spares: Sequence[Probe] = (),
) -> Placement:
    """Another provider and lease for ``share`` after ``old`` failed (``reason``): a spare
    probed already if one is left, else a fresh candidate; never one in ``in_use`` or
    ``failed`` (``old`` joins ``failed``, the new provider ``in_use``), and one in a network
    the other shares do not use where there is one."""
    ctx.leases.invalidate()
    failed.add(old.provider.owner.lower())
    registry = await ctx.peers.registry(max_age=ctx.settings.directory_ttl)
    taken = {network_of(p.endpoint) for p in registry if p.owner.lower() in in_use}
    pool = [p for p in spares if p.provider.owner.lower() not in in_use | failed]
    if pool:
        pool = spread_order(pool, lambda p: p.network, taken)
    else:
        pool = await ctx.leases.candidates(need, max_price, exclude=in_use | failed, avoid=taken)
    try:
        (new,) = await ctx.leases.ensure(pool, 1, need, days, max_price, taken)
    except NotEnoughProviders:
        raise NotEnoughProviders(
            f"share {share}: provider {old.provider.owner} failed ({reason}) and no other"
            " provider can take its place"
        ) from None
    in_use.add(new.provider.owner.lower())
    return new


async def _spread(
    ctx: StorageContext,
    path: Path,
    size: int,
    file_id: bytes,
    file_key: bytes,
    k: int | None,
    n: int | None,
    term: float,
    max_price: int | None,
    label: str,
    progress: Progress | None,
) -> tuple[list[Placement], ManifestBody]:
    settings = ctx.settings
    probes = await ctx.leases.candidates(OVERHEAD_BYTES, max_price)
    k, n = choose_code(k, n, len(probes))
    layout = Layout(k, n, settings.block_bytes_for(n))
    need = layout.share_size(size) + OVERHEAD_BYTES
    probes = [p for p in probes if p.held or (p.free_bytes or 0) >= need]
    if len(probes) < n:
        raise NotEnoughProviders(
            f"{k}-of-{n} coding needs {n} providers with {need} bytes free, only {len(probes)}"
            " have them; nothing was paid"
        )
    placements = await ctx.leases.ensure(probes, n, need, term, max_price)
    in_use = {p.provider.owner.lower() for p in placements}
    spares = [p for p in probes if p.provider.owner.lower() not in in_use]
    failed: set[str] = set()

    async def replace(share: int, old: Placement, reason: str) -> Placement:
        in_use.discard(old.provider.owner.lower())
        return await replacement(
            ctx,
            share,
            old,
            reason,
            in_use=in_use,
            failed=failed,
            need=need,
            days=term,
            max_price=max_price,
            spares=spares,
        )

    data_id = os.urandom(32)
    uploader = Uploader(
        path=str(path),
        size=size,
        layout=layout,
        cipher=SegmentCipher(file_key, data_id),
        file_id=file_id,
        placements=placements,
        replace=replace,
        settings=settings,
        executor=ctx.executor,
        progress=progress,
    )
    try:
        result = await uploader.run()
    except BaseException:
        for lane in uploader.lanes:  # what was promised on them was not all used: read again
            ctx.leases.forget_room(lane.placement.lease_id)
        raise
    roots = result.share_roots
    commits = await asyncio.gather(
        *(
            ctx.revisions.commit(
                p.client,
                p.lease_id,
                add=[(file_id, i, (roots[i], result.leaf_count, result.share_size))],
            )
            for i, p in enumerate(result.placements)
        )
    )
    for p, done in zip(result.placements, commits, strict=True):
        if done.error is not None:
            ctx.warnings.append(
                f"provider {p.provider.owner} did not co-sign lease {p.lease_id}'s revision"
                f" (kept for the next one): {done.error}"
            )
    shares = [
        Share(p.provider.owner, p.lease_id, roots[i]) for i, p in enumerate(result.placements)
    ]
    body = spread_body(
        size, data_id=data_id, block_bytes=layout.block_bytes, k=k, shares=shares, name=label
    )
    return result.placements, body


__all__ = ["PEER_ERRORS", "put", "write_manifest"]
