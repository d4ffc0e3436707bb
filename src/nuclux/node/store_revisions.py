"""Shares and revisions in the shard store's index (database thread; see ``store_index``).

Theory of operation
-------------------
Blocks are ordinary objects whose index rows also carry their Merkle roots, so a share's
summary is one range scan over ``f/<fid>/s/<i>/`` (``block_rows``), no blob reads.

Each lease keeps its latest co-signed revision (table ``revisions``) and that revision's share
list in order (``revision_shares``: position, share, root, leaf count, size). The shares a
latest revision lists are frozen: ``store_txn.check_not_in_revision`` refuses to replace or
delete their blocks, so their entries can be reused as they are by the next revision, and only
shares new to a revision are summarised from their block rows.

Co-signing takes two steps around the signatures (which run off this thread):
``plan_revision`` computes the entries, used bytes and root the node would sign (or raises
``RevisionConflict`` / ``MalformedShare``); ``commit_revision`` recomputes that plan inside its
transaction (a concurrent upload may have changed a new share's blocks meanwhile:
``RevisionMismatch``), then deletes the blocks of the removed shares and replaces the lease's
revision and share list, and commits (``synchronous=FULL``: durable when it returns). The
removals thus take effect together with the revision that drops those shares, never before
it: a refused request leaves everything as it was.
"""

from __future__ import annotations

from nuclux.core.reference import parse_block_id, share_prefix
from nuclux.node.shares import (
    BlockRow,
    MalformedShare,
    RevisionConflict,
    RevisionMismatch,
    RevisionPlan,
    RevisionRequest,
    ShareEntry,
    ShareKey,
    ShareSummary,
    StoredRevision,
    lease_root,
    share_name,
    summarise_share,
)
from nuclux.node.store_index import Index


def block_rows(ix: Index, lease_id: int, file_id: bytes, index: int) -> list[BlockRow]:
    """The stored blocks of one share (ids under its prefix that name a block)."""
    prefix = share_prefix(file_id, index)
    rows = ix.db.execute(
        "SELECT object_id, size, merkle_root FROM objects "
        "WHERE lease_id = ? AND object_id > ? AND object_id < ?",
        (lease_id, prefix, prefix + b"\xff"),
    )
    out: list[BlockRow] = []
    for object_id, size, root in rows:
        parsed = parse_block_id(object_id)
        if parsed is not None:
            out.append(BlockRow(parsed[2], size, root))
    return out


def share_summary(ix: Index, lease_id: int, file_id: bytes, index: int) -> ShareSummary | None:
    """The share's summary, None when none of its blocks is stored; ``MalformedShare`` when
    its blocks do not form a well-formed share."""
    rows = block_rows(ix, lease_id, file_id, index)
    return summarise_share(file_id, index, rows) if rows else None


def latest_revision(ix: Index, lease_id: int) -> StoredRevision | None:
    row = ix.db.execute(
        "SELECT revision, used_bytes, share_count, root, consumer_sig, provider_sig, signed_at "
        "FROM revisions WHERE lease_id = ?",
        (lease_id,),
    ).fetchone()
    if row is None:
        return None
    entries = tuple(
        ShareEntry(fid, i, root, count, size)
        for fid, i, root, count, size in ix.db.execute(
            "SELECT file_id, share_index, root, leaf_count, size FROM revision_shares "
            "WHERE lease_id = ? ORDER BY position",
            (lease_id,),
        )
    )
    revision, used, count, root, consumer_sig, provider_sig, signed_at = row
    return StoredRevision(
        lease_id, revision, used, count, root, consumer_sig, provider_sig, signed_at, entries
    )


def latest_revision_number(ix: Index, lease_id: int) -> int:
    row = ix.db.execute("SELECT revision FROM revisions WHERE lease_id = ?", (lease_id,))
    found = row.fetchone()
    return 0 if found is None else int(found[0])


def frozen_shares(ix: Index, lease_id: int) -> frozenset[ShareKey]:
    """The shares the lease's latest co-signed revision lists (their blocks cannot change)."""
    return frozenset(
        (bytes(fid), int(i))
        for fid, i in ix.db.execute(
            "SELECT file_id, share_index FROM revision_shares WHERE lease_id = ?", (lease_id,)
        )
    )


def _frozen_entries(ix: Index, lease_id: int) -> dict[ShareKey, ShareEntry]:
    return {
        (fid, i): ShareEntry(fid, i, root, count, size)
        for fid, i, root, count, size in ix.db.execute(
            "SELECT file_id, share_index, root, leaf_count, size FROM revision_shares "
            "WHERE lease_id = ?",
            (lease_id,),
        )
    }


def plan_revision(ix: Index, lease_id: int, req: RevisionRequest) -> RevisionPlan:
    """What the node would sign for ``req``; ``RevisionConflict`` unless ``req.revision`` is
    the latest + 1, ``MalformedShare`` naming the first listed share that is not well formed
    (or has no blocks)."""
    latest = latest_revision_number(ix, lease_id)
    if req.revision != latest + 1:
        raise RevisionConflict(
            f"lease {lease_id}'s latest co-signed revision is {latest}: the next one is "
            f"{latest + 1}, not {req.revision}",
            latest_revision(ix, lease_id),
        )
    frozen = _frozen_entries(ix, lease_id) if latest else {}
    entries: list[ShareEntry] = []
    for key in req.shares:
        entry = frozen.get(key)
        if entry is None:
            summary = share_summary(ix, lease_id, *key)
            if summary is None:
                raise MalformedShare(f"{share_name(key)} has no blocks on this node")
            entry = summary.entry
        entries.append(entry)
    used = sum(e.size for e in entries)
    return RevisionPlan(req.revision, tuple(entries), used, lease_root(entries))


def _remove_share(ix: Index, lease_id: int, key: ShareKey) -> tuple[int, list[bytes]]:
    """Delete a share's blocks inside the caller's transaction; (bytes freed, dead blobs)."""
    prefix = share_prefix(*key)
    rows = ix.db.execute(
        "SELECT object_id, sha256, size FROM objects "
        "WHERE lease_id = ? AND object_id > ? AND object_id < ?",
        (lease_id, prefix, prefix + b"\xff"),
    ).fetchall()
    freed, dead = 0, []
    for object_id, digest, size in rows:
        if parse_block_id(object_id) is None:
            continue
        ix.db.execute(
            "DELETE FROM objects WHERE lease_id = ? AND object_id = ?", (lease_id, object_id)
        )
        freed += size
        if ix.unref(digest):
            dead.append(digest)
    return freed, dead


def commit_revision(
    ix: Index,
    lease_id: int,
    req: RevisionRequest,
    plan: RevisionPlan,
    provider_sig: bytes,
    signed_at: int,
) -> int:
    """Store the co-signed revision and apply its removals, in one transaction; returns the
    lease's used bytes afterwards. ``RevisionMismatch`` (nothing changed) if the plan no
    longer holds."""
    dead: list[bytes] = []
    with ix.tx():
        lease = ix.lease(lease_id)
        fresh = plan_revision(ix, lease_id, req)
        if fresh != plan:
            raise RevisionMismatch(
                f"the shares of lease {lease_id} changed while revision {req.revision} was "
                "being signed; ask again",
                fresh,
            )
        used = lease.used_bytes
        for key in req.remove:
            freed, gone = _remove_share(ix, lease_id, key)
            used -= freed
            dead += gone
        ix.db.execute("UPDATE leases SET used_bytes = ? WHERE lease_id = ?", (used, lease_id))
        ix.db.execute(
            "INSERT INTO revisions VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (lease_id) DO "
            "UPDATE SET revision = excluded.revision, used_bytes = excluded.used_bytes, "
            "share_count = excluded.share_count, root = excluded.root, "
            "consumer_sig = excluded.consumer_sig, provider_sig = excluded.provider_sig, "
            "signed_at = excluded.signed_at",
            (
                lease_id,
                plan.revision,
                plan.used_bytes,
                plan.share_count,
                plan.root,
                req.signature,
                provider_sig,
                signed_at,
            ),
        )
        ix.db.execute("DELETE FROM revision_shares WHERE lease_id = ?", (lease_id,))
        ix.db.executemany(
            "INSERT INTO revision_shares VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (lease_id, pos, e.file_id, e.index, e.root, e.leaf_count, e.size)
                for pos, e in enumerate(plan.entries)
            ],
        )
    ix.unlink_blobs(dead)
    return used
