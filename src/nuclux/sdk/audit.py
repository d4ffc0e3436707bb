"""Off-chain audits: does every provider still hold its share, bit for bit?

Theory of operation
-------------------
Cheap and frequent, by the owner, with no transaction (on-chain proofs are for sampled epochs
and disputes). For a spread file a few segments are sampled at random (the last one always:
it is the one a lazy provider would most likely drop); for each share:

* with the block-root endpoint, the share's block roots are fetched and checked against the
  share root in the manifest, then each sampled block against its root;
* without it (``nodeapi`` adapter), every share's block of a sampled segment is fetched, a
  k-subset that decodes and opens (AES-GCM) is found, the segment is encoded again, and each
  provider's block is compared with what it must be.

A packed file's "shares" are its manifest copies: each must be present and the newest.
Each provider gets one verdict: ok, corrupt, missing, stale or unreachable.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass

from nuclux.core.erasure import (
    Layout,
    decode_segment,
    encode_segment,
    verify_block,
    verify_block_roots,
)
from nuclux.core.manifest import decode_manifest
from nuclux.core.reference import Reference
from nuclux.core.segment import SegmentCipher
from nuclux.errors import IntegrityError, ObjectNotFound
from nuclux.sdk import reading
from nuclux.sdk.context import StorageContext
from nuclux.sdk.download import Source
from nuclux.sdk.nodeapi import block_object_id, manifest_id, share_roots
from nuclux.sdk.peers import PEER_ERRORS


@dataclass(frozen=True, slots=True)
class ShareAudit:
    share: int
    provider: str
    lease_id: int
    status: str  # ok, corrupt, missing, stale, unreachable
    checked: int
    detail: str = ""


@dataclass(frozen=True, slots=True)
class AuditReport:
    reference: Reference
    packed: bool
    segments: tuple[int, ...]
    shares: tuple[ShareAudit, ...]

    @property
    def ok(self) -> bool:
        return all(s.status == "ok" for s in self.shares)


async def audit_file(ctx: StorageContext, reference: Reference) -> AuditReport:
    return await audit_opened(ctx, await reading.open_file(ctx, reference))


async def audit_opened(ctx: StorageContext, opened: reading.OpenedFile) -> AuditReport:
    """The audit of a file already opened (repair judges shares with it)."""
    reference = opened.reference
    layout = opened.body.layout
    if layout is None:
        return await _audit_copies(ctx, opened)
    size = opened.body.size
    code = Layout(layout.k, layout.n, layout.block_bytes)
    count = code.segment_count(size)
    picks = {count - 1} | set(random.sample(range(count), min(ctx.settings.audit_samples, count)))
    segments = tuple(sorted(picks))
    sources = await reading.sources_for(ctx, opened)
    cipher = SegmentCipher(opened.file_key, layout.data_id)
    timeout = ctx.settings.request_timeout

    async def fetch(src: Source, j: int) -> bytes:
        oid = block_object_id(reference.file_id, src.share, j)
        return await asyncio.wait_for(src.client.get(src.lease_id, oid), timeout)

    verdicts: dict[int, ShareAudit] = {}
    rooted: dict[int, tuple[bytes, ...]] = {}
    for src, got in zip(
        sources,
        await asyncio.gather(
            *(
                asyncio.wait_for(
                    share_roots(src.client, src.lease_id, reference.file_id, src.share, None),
                    timeout,
                )
                for src in sources
            ),
            return_exceptions=True,
        ),
        strict=True,
    ):
        if got is None:
            continue
        if isinstance(got, BaseException):
            verdicts[src.share] = _failed(src, got, 0)
            continue
        try:
            verify_block_roots(got.block_roots, src.root, share=src.share, segments=count)
            rooted[src.share] = got.block_roots
        except IntegrityError as err:
            verdicts[src.share] = ShareAudit(
                src.share, src.provider, src.lease_id, "corrupt", 0, str(err)
            )
    checked = dict.fromkeys(range(code.n), 0)
    for j in segments:
        live = [s for s in sources if s.share not in verdicts]
        blocks = await asyncio.gather(*(fetch(s, j) for s in live), return_exceptions=True)
        good: dict[int, bytes] = {}
        for src, block in zip(live, blocks, strict=True):
            if isinstance(block, BaseException):
                verdicts[src.share] = _failed(src, block, checked[src.share])
                continue
            if src.share in rooted:
                try:
                    verify_block(block, rooted[src.share][j], share=src.share, segment=j)
                except IntegrityError as err:
                    verdicts[src.share] = ShareAudit(
                        src.share,
                        src.provider,
                        src.lease_id,
                        "corrupt",
                        checked[src.share] + 1,
                        str(err),
                    )
                    continue
                checked[src.share] += 1
            good[src.share] = block
        unrooted = [i for i in good if i not in rooted]
        if not unrooted:
            continue
        loop = asyncio.get_running_loop()
        expected = await loop.run_in_executor(
            ctx.executor, _reencode, code, cipher, size, j, count, good
        )
        for i in unrooted:
            src = sources[i]
            checked[i] += 1
            if expected is None or bytes(expected[i]) != good[i]:
                why = "no k blocks of this segment open" if expected is None else "block differs"
                verdicts[i] = ShareAudit(
                    i, src.provider, src.lease_id, "corrupt", checked[i], f"segment {j}: {why}"
                )
    shares = tuple(
        verdicts.get(s.share) or ShareAudit(s.share, s.provider, s.lease_id, "ok", checked[s.share])
        for s in sources
    )
    return AuditReport(reference, False, segments, shares)


def _reencode(
    code: Layout, cipher: SegmentCipher, size: int, j: int, count: int, blocks: dict[int, bytes]
) -> list[memoryview] | None:
    """The segment's n blocks as they must be, from the first k-subset that opens."""
    sealed_size = code.sealed_size(size, j)
    for subset in itertools.combinations(sorted(blocks), code.k):
        sealed = decode_segment(code, {i: blocks[i] for i in subset}, sealed_size)
        try:
            cipher.decrypt(j, sealed, last=j == count - 1)
        except IntegrityError:
            continue
        return encode_segment(code, sealed)
    return None


def _failed(src: Source, err: BaseException, checked: int) -> ShareAudit:
    if isinstance(err, ObjectNotFound):
        return ShareAudit(src.share, src.provider, src.lease_id, "missing", checked, str(err))
    if isinstance(err, IntegrityError):
        return ShareAudit(src.share, src.provider, src.lease_id, "corrupt", checked, str(err))
    return ShareAudit(
        src.share,
        src.provider,
        src.lease_id,
        "unreachable",
        checked,
        str(err) or type(err).__name__,
    )


async def _audit_copies(ctx: StorageContext, opened: reading.OpenedFile) -> AuditReport:
    entry = await ctx.entry(opened.reference)
    leases = sorted(set(opened.manifest_leases) | set(entry.locators if entry else ()))
    newest = opened.manifest.version
    out: list[ShareAudit] = []
    for i, lid in enumerate(leases):
        try:
            info, client = await ctx.peers.client_for_lease(lid)
        except PEER_ERRORS as err:
            out.append(ShareAudit(i, "?", lid, "unreachable", 0, str(err)))
            continue
        try:
            data = await asyncio.wait_for(
                client.get(lid, manifest_id(opened.reference.file_id)),
                ctx.settings.request_timeout,
            )
            m = decode_manifest(data)
            status = "ok" if m.version == newest and m.reference == opened.reference else "stale"
            out.append(ShareAudit(i, info.owner, lid, status, 1, f"version {m.version}"))
        except (IntegrityError, *PEER_ERRORS) as err:
            fake = Source(i, info.owner, lid, client, b"")
            out.append(_failed(fake, err, 0))
    return AuditReport(opened.reference, True, (), tuple(out))
