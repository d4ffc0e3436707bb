"""Opening a file (as its owner, or as a grantee) and reading it to a local path.

Theory of operation
-------------------
``open_file`` turns a reference or a grant into a checked manifest, its opened body and the
file key. The owner finds the manifest through the index (which also gives the lowest
version to accept) and opens the key envelope with its X25519 key. A grantee gets the key
from the grant (which must name it, be unexpired by chain time and carry the owner's
signatures) and reads from the grant's leases, presenting the owner-signed capability for
each; the grant's manifest version is the floor.

``download`` writes to a temporary file beside the output (packed files from the manifest,
spread files through ``Downloader``), syncs it and renames it into place: a failed download
leaves no partial file.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

from nuclux.core.capability import capability_to_header
from nuclux.core.erasure import Layout
from nuclux.core.grant import Grant, grant_from_text, open_grant
from nuclux.core.manifest import Manifest, ManifestBody, manifest_file_key, open_manifest
from nuclux.core.reference import Reference, parse_reference
from nuclux.core.segment import SegmentCipher
from nuclux.errors import IntegrityError, UsageError
from nuclux.sdk.context import Location, StorageContext
from nuclux.sdk.download import BlockFault, Downloader, DownloadReport, Source
from nuclux.sdk.settings import Progress

Target = str | Reference | Grant


@dataclass(frozen=True, slots=True)
class OpenedFile:
    reference: Reference
    manifest: Manifest
    body: ManifestBody
    file_key: bytes = field(repr=False)
    manifest_leases: tuple[int, ...]
    capabilities: dict[int, str] = field(default_factory=dict)  # lease -> header (grantees)


@dataclass(frozen=True, slots=True)
class GetResult:
    reference: Reference
    path: Path
    size: int
    name: str
    version: int
    corrupt: tuple[BlockFault, ...] = ()
    unavailable: tuple[BlockFault, ...] = ()
    hedges: int = 0


def parse_target(target: Target) -> Reference | Grant:
    if isinstance(target, Reference | Grant):
        return target
    if not isinstance(target, str):
        raise UsageError("give a reference (nux:...) or a grant (nuxgrant1...)")
    text = target.strip()
    if text.startswith("nuxgrant1"):
        return grant_from_text(text)
    if text.startswith("nux:"):
        return parse_reference(text)
    raise UsageError(f"{text[:20]!r} is neither a reference (nux:...) nor a grant (nuxgrant1...)")


async def open_file(ctx: StorageContext, target: Target, *, narrow: bool = False) -> OpenedFile:
    """``narrow``: one of many files listed (``StorageContext.owner_manifest``)."""
    what = parse_target(target)
    if isinstance(what, Grant):
        return await _open_grant(ctx, what)
    ctx.own(what)
    manifest, leases = await ctx.owner_manifest(what, narrow=narrow)
    file_key = manifest_file_key(manifest, ctx.keys.x25519_private)
    body = open_manifest(manifest, file_key)
    return OpenedFile(what, manifest, body, file_key, tuple(leases))


async def _open_grant(ctx: StorageContext, grant: Grant) -> OpenedFile:
    file_key = open_grant(
        grant, me=ctx.address, x25519_private=ctx.keys.x25519_private, now=await ctx.chain_now()
    )
    caps: dict[int, str] = {c.lease_id: capability_to_header(c) for c in grant.capabilities}
    locations = [Location(lid, cap) for lid, cap in caps.items()]
    manifest, leases = await ctx.fetch_manifest(grant.reference, locations, grant.manifest_version)
    body = open_manifest(manifest, file_key)
    return OpenedFile(grant.reference, manifest, body, file_key, tuple(leases), caps)


def _output_path(out: str | os.PathLike[str], opened: OpenedFile) -> Path:
    path = Path(out)
    if path.is_dir():
        name = Path(opened.body.name).name
        if name in ("", ".", ".."):
            name = opened.reference.file_id.hex()
        path = path / name
    if not path.parent.is_dir():
        raise UsageError(f"{path.parent}: no such directory")
    return path


async def download(
    ctx: StorageContext, target: Target, out: str | os.PathLike[str], progress: Progress | None
) -> GetResult:
    opened = await open_file(ctx, target)
    path = _output_path(out, opened)
    tmp = path.parent / f".{path.name}.{os.urandom(4).hex()}.part"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as err:
        raise UsageError(f"{path.parent}: cannot write there ({err.strerror})") from None
    try:
        try:
            report = await _write(ctx, opened, fd, progress)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    body = opened.body
    return GetResult(
        opened.reference,
        path,
        body.size,
        body.name,
        opened.manifest.version,
        tuple(report.corrupt),
        tuple(report.unavailable),
        report.hedges,
    )


async def _write(
    ctx: StorageContext, opened: OpenedFile, fd: int, progress: Progress | None
) -> DownloadReport:
    body = opened.body
    if body.inline is not None:
        if os.write(fd, body.inline) != len(body.inline):
            raise OSError("short write")
        if progress is not None:
            progress(body.size, body.size)
        return DownloadReport()
    layout = body.layout
    if layout is None:  # pragma: no cover - a body has one or the other
        raise IntegrityError("the manifest describes no data")
    os.ftruncate(fd, body.size)
    sources = await sources_for(ctx, opened)
    downloader = Downloader(
        layout=Layout(layout.k, layout.n, layout.block_bytes),
        size=body.size,
        cipher=SegmentCipher(opened.file_key, layout.data_id),
        file_id=opened.reference.file_id,
        sources=sources,
        fd=fd,
        settings=ctx.settings,
        executor=ctx.executor,
        progress=progress,
    )
    return await downloader.run()


async def sources_for(ctx: StorageContext, opened: OpenedFile) -> list[Source]:
    """One source per share of a spread file, in share order."""
    layout = opened.body.layout
    if layout is None:
        return []
    infos = await asyncio.gather(*(ctx.peers.provider(s.provider) for s in layout.shares))
    out: list[Source] = []
    for i, (share, info) in enumerate(zip(layout.shares, infos, strict=True)):
        cap = opened.capabilities.get(share.lease_id) if opened.capabilities else None
        src = Source(i, share.provider, share.lease_id, ctx.peers.client(info), share.root, cap)
        if opened.capabilities and cap is None:
            src.dead = f"the grant holds no capability for lease {share.lease_id}"
        out.append(src)
    return out
