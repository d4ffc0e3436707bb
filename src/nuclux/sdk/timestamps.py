"""Time-stamps (``storage-protocol.md`` §5): every manifest written is anchored on chain in a
batch, and a file can later be shown to have existed, unchanged, by the anchoring block's time.

Theory of operation
-------------------
The digests (sha256 of the whole encoding) of the manifests written since the last anchor are
the entries of one RFC 9162 tree (``nuclux.core.merkle``; a digest is an entry as it is, like a
share root in a lease tree). One ``TimestampAnchor.anchor(root)`` transaction, sent at
``flush`` (once per command), commits them all, so time-stamping costs one transaction per
batch, not per file. For each manifest a small JSON proof is stored beside it, as object
``f/<fid>/t/<v>`` on the leases holding the manifest::

    {"anchor_root": hex, "index": i, "count": n, "path": [hex, ...], "tx": hex, "block": n}

``verify`` checks a local file against a reference: the manifest (owner-signed, newest), the
file reproducing what the manifest commits to (packed: its bytes; spread: every share root,
recomputed by sealing and encoding the file again with the file key), the manifest digest's
inclusion path under the anchored root, and the chain's record of when that root was first
anchored.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import Any

from nuclux.core.erasure import Layout, share_root
from nuclux.core.merkle import inclusion_proofs, merkle_root, verify_inclusion
from nuclux.core.reference import Reference, file_prefix
from nuclux.core.segment import SegmentCipher
from nuclux.errors import IntegrityError, NucluxError, ObjectNotFound, UsageError
from nuclux.sdk.context import Pending, StorageContext
from nuclux.sdk.peers import PEER_ERRORS, gather_answers
from nuclux.sdk.reading import OpenedFile, Target, open_file
from nuclux.sdk.upload import SegmentEncoder

MAX_PROOF_BYTES = 8192


def proof_object_id(file_id: bytes, version: int) -> bytes:
    """``f/<fid>/t/<v>``: the time-stamp proof of manifest version ``version``."""
    return file_prefix(file_id) + f"t/{version}".encode("ascii")


@dataclass(frozen=True, slots=True)
class Anchored:
    root: bytes
    count: int
    tx: str
    block: int
    problems: tuple[str, ...]  # proofs that could not be stored (the anchor itself holds)


@dataclass(frozen=True, slots=True)
class Timestamp:
    """A verified time-stamp: ``path`` matches manifest ``version`` of ``reference``, whose
    digest was anchored under ``root`` at chain time ``time`` in block ``block``."""

    reference: Reference
    version: int
    digest: bytes
    root: bytes
    time: int
    block: int


async def anchor(ctx: StorageContext, pending: list[Pending]) -> Anchored | None:
    """Anchor ``pending`` in one transaction and store each manifest's proof."""
    if not pending:
        return None
    digests = [p.digest for p in pending]
    root = merkle_root(digests)
    receipt = await ctx.ledger.anchor(root)
    ctx.leases.transactions += 1
    tx, block = bytes(receipt["transactionHash"]).hex(), int(receipt["blockNumber"])
    problems: list[str] = []
    jobs = []
    paths = inclusion_proofs(digests)  # every path from one tree: not one tree per manifest
    for i, p in enumerate(pending):
        body = json.dumps(
            {
                "anchor_root": root.hex(),
                "index": i,
                "count": len(digests),
                "path": [h.hex() for h in paths[i]],
                "tx": tx,
                "block": block,
            },
            separators=(",", ":"),
        ).encode()
        oid = proof_object_id(p.reference.file_id, p.version)
        jobs += [(lid, oid, body) for lid in p.leases]
    outcomes = await asyncio.gather(*(_store(ctx, *job) for job in jobs), return_exceptions=True)
    for (lid, oid, _), outcome in zip(jobs, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            problems.append(f"proof {oid.decode()} on lease {lid}: {outcome}")
    return Anchored(root, len(digests), tx, block, tuple(problems))


async def _store(ctx: StorageContext, lease_id: int, oid: bytes, body: bytes) -> None:
    _, client = await ctx.peers.client_for_lease(lease_id)
    await ctx.batcher.put(lease_id, client, oid, body)  # batched per lease (time-bounded)


async def verify(ctx: StorageContext, path: str | os.PathLike[str], target: Target) -> Timestamp:
    opened = await open_file(ctx, target)
    await _check_file(ctx, opened, path)
    proof = await _proof(ctx, opened)
    m = opened.manifest
    try:
        root = bytes.fromhex(str(proof["anchor_root"]))
        index, count = int(proof["index"]), int(proof["count"])
        hashes = [bytes.fromhex(str(h)) for h in proof["path"]]
    except (KeyError, TypeError, ValueError):
        raise IntegrityError(f"the time-stamp proof of {m.reference} is malformed") from None
    if not verify_inclusion(m.digest, index, count, hashes, root):
        raise IntegrityError(
            f"the time-stamp proof of {m.reference} (version {m.version}) does not lead from"
            " its manifest to the anchored root"
        )
    at = await ctx.ledger.anchored_at(root)
    if at is None:
        raise IntegrityError(f"the root {root.hex()} of the time-stamp was never anchored")
    return Timestamp(m.reference, m.version, m.digest, root, at[0], at[1])


async def _proof(ctx: StorageContext, opened: OpenedFile) -> dict[str, Any]:
    ref, version = opened.reference, opened.manifest.version
    oid = proof_object_id(ref.file_id, version)

    async def one(lease_id: int) -> bytes:
        _, client = await ctx.peers.client_for_lease(lease_id)
        cap = opened.capabilities.get(lease_id)
        return await client.get(lease_id, oid, capability=cap)

    leases = list(opened.manifest_leases)
    outcomes = await gather_answers(
        [one(lid) for lid in leases], timeout=ctx.settings.request_timeout, grace=0.0
    )
    for got in outcomes:
        if isinstance(got, bytes) and len(got) <= MAX_PROOF_BYTES:
            try:
                data = json.loads(got)
            except ValueError:
                continue
            if isinstance(data, dict):
                return data
    if all(isinstance(o, ObjectNotFound) for o in outcomes):
        raise ObjectNotFound(
            f"{ref} version {version} has no time-stamp yet: it is anchored when the command"
            " that stored it finishes (flush)"
        )
    reasons = "; ".join(str(o) for o in outcomes if isinstance(o, BaseException))
    raise NucluxError(f"the time-stamp proof of {ref} could not be read ({reasons})")


async def _check_file(
    ctx: StorageContext, opened: OpenedFile, path: str | os.PathLike[str]
) -> None:
    body = opened.body
    try:
        size = os.stat(path).st_size
    except OSError as err:
        raise UsageError(f"{path}: cannot read it ({err.strerror})") from None
    mismatch = IntegrityError(f"{path} is not the file {opened.reference} names")
    if size != body.size:
        raise mismatch
    if body.inline is not None:
        if _read_small(path) != body.inline:
            raise mismatch
        return
    layout = body.layout
    if layout is None:  # pragma: no cover - a body has one or the other
        raise mismatch
    code = Layout(layout.k, layout.n, layout.block_bytes)
    encoder = SegmentEncoder(
        os.fspath(path), size, code, SegmentCipher(opened.file_key, layout.data_id)
    )
    loop = asyncio.get_running_loop()
    try:
        roots: list[list[bytes]] = [[] for _ in range(code.n)]
        for j in range(encoder.count):
            _, block_roots = await loop.run_in_executor(ctx.executor, encoder.prepare, j)
            for i, r in enumerate(block_roots):
                roots[i].append(r)
    finally:
        encoder.close()
    if [share_root(r) for r in roots] != [s.root for s in layout.shares]:
        raise mismatch


def _read_small(path: str | os.PathLike[str]) -> bytes:
    with open(path, "rb") as f:
        return f.read(MAX_PROOF_BYTES)


__all__ = ["PEER_ERRORS", "Anchored", "Pending", "Timestamp", "anchor", "verify"]
