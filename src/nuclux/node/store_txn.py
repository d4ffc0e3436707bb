"""Index mutations of the shard store: leases, object commits, deletes, garbage collection.

Each function is one ``BEGIN IMMEDIATE`` transaction on the database thread (see
``store_index``). The transaction re-checks every rule the in-memory accounting already
checked (quota, capacity, lease open), so the committed state obeys them even when in-flight
estimates raced. Blob files are renamed into place inside the transaction, before COMMIT, and
unlinked only after it; a failure before COMMIT removes a freshly renamed blob again.
"""

from __future__ import annotations

import os
from pathlib import Path

from nuclux.core.reference import parse_block_id
from nuclux.errors import CapacityExceeded, ObjectNotFound, QuotaExceeded, StoreError
from nuclux.node.shares import ShareInRevision, share_name
from nuclux.node.store_index import Index, LeaseRow, fsync_dir, oid_text, unlink_quietly
from nuclux.node.store_types import GcReport, ObjectInfo


def _lease_for_write(ix: Index, lease_id: int) -> LeaseRow:
    lease = ix.lease(lease_id)
    if lease.closed_at is not None:
        raise StoreError(f"lease {lease_id} is closed; it accepts no new data")
    return lease


def check_not_in_revision(ix: Index, lease_id: int, object_id: bytes) -> None:
    """``ShareInRevision`` if ``object_id`` is a block of a share that the lease's latest
    co-signed revision lists: such a share is frozen (the node may be challenged on it) until
    a later revision removes it. Other ids cost no query."""
    block = parse_block_id(object_id)
    if block is None:
        return
    file_id, index, _ = block
    row = ix.db.execute(
        "SELECT 1 FROM revision_shares WHERE lease_id = ? AND file_id = ? AND share_index = ?",
        (lease_id, file_id, index),
    ).fetchone()
    if row is not None:
        raise ShareInRevision(
            f"{share_name((file_id, index))} is in lease {lease_id}'s latest co-signed "
            f"revision: its blocks cannot change; remove it with the next revision first"
        )


def set_lease(
    ix: Index, lease_id: int, quota_bytes: int, expires_at: int | None, capacity_bytes: int
) -> LeaseRow:
    with ix.tx():
        row = ix.db.execute(
            "SELECT quota_bytes, used_bytes, closed_at FROM leases WHERE lease_id = ?",
            (lease_id,),
        ).fetchone()
        old_quota, used = (row[0], row[1]) if row else (0, 0)
        if row is not None and row[2] is not None:
            raise StoreError(f"lease {lease_id} is closed; a closed lease cannot be reserved again")
        if quota_bytes < used:
            raise QuotaExceeded(
                f"cannot shrink lease {lease_id} to {quota_bytes} bytes: {used} bytes are stored "
                "under it; delete objects first"
            )
        if quota_bytes > old_quota:
            reserved = ix.reserved_bytes(excluding=lease_id)
            if reserved + quota_bytes > capacity_bytes:
                raise CapacityExceeded(
                    f"reserving {quota_bytes} bytes for lease {lease_id} would exceed the "
                    f"{capacity_bytes} bytes this node offers: {reserved} are reserved already, "
                    f"{max(0, capacity_bytes - reserved)} available"
                )
        ix.db.execute(
            "INSERT INTO leases (lease_id, quota_bytes, used_bytes, expires_at) "
            "VALUES (?, ?, 0, ?) "
            "ON CONFLICT (lease_id) DO UPDATE SET quota_bytes = excluded.quota_bytes, "
            "expires_at = excluded.expires_at",
            (lease_id, quota_bytes, expires_at),
        )
    return LeaseRow(lease_id, quota_bytes, used, expires_at, None)


def close_lease(ix: Index, lease_id: int, closed_at: int) -> LeaseRow:
    """Mark a lease closed (idempotent: the first closing time stands)."""
    with ix.tx():
        lease = ix.lease(lease_id)
        if lease.closed_at is not None:
            return lease
        ix.db.execute("UPDATE leases SET closed_at = ? WHERE lease_id = ?", (closed_at, lease_id))
    return LeaseRow(lease_id, lease.quota_bytes, lease.used_bytes, lease.expires_at, closed_at)


def commit_object(
    ix: Index,
    lease_id: int,
    object_id: bytes,
    digest: bytes,
    size: int,
    created_at: int,
    tmp: Path,
    merkle_root: bytes | None = None,
) -> tuple[ObjectInfo, int]:
    """Make a finished, fsynced temp file the content of ``(lease_id, object_id)``, with its
    Merkle root when it is a share block.

    Returns the object and the lease's new used bytes. The temp file is consumed either way
    (renamed into ``blobs/`` or removed) unless an error is raised."""
    infos, used = commit_objects(
        ix, lease_id, [(object_id, digest, size, tmp, merkle_root)], created_at
    )
    return infos[0], used


NewObject = tuple[bytes, bytes, int, Path, bytes | None]
"""(object id, content digest, size, fsynced temp file, Merkle root or None) of one object to
commit. The digest names the blob: the SHA-256, or a block's Merkle root when it was written
against one (``store_writer``)."""


def commit_objects(
    ix: Index, lease_id: int, objects: list[NewObject], created_at: int
) -> tuple[list[ObjectInfo], int]:
    """``commit_object`` for several objects of one lease in one transaction (one commit, one
    fsync per blob directory): all of them become visible, or none. Returns what each became
    and the lease's new used bytes."""
    renamed: list[Path] = []
    unused: list[Path] = []
    dead: list[bytes] = []
    dirs: set[Path] = set()
    infos: list[ObjectInfo] = []
    try:
        with ix.tx():
            lease = _lease_for_write(ix, lease_id)
            used = lease.used_bytes
            for object_id, digest, size, tmp, merkle_root in objects:
                check_not_in_revision(ix, lease_id, object_id)
                old = ix.db.execute(
                    "SELECT sha256, size FROM objects WHERE lease_id = ? AND object_id = ?",
                    (lease_id, object_id),
                ).fetchone()
                used = used - (old[1] if old else 0) + size
                if used > lease.quota_bytes:
                    raise QuotaExceeded(
                        f"object {oid_text(object_id)} ({size} bytes) does not fit in lease "
                        f"{lease_id}: it would use {used} of {lease.quota_bytes} reserved bytes"
                    )
                stored = False
                if old is None or old[0] != digest:
                    cur = ix.db.execute(
                        "UPDATE blobs SET refs = refs + 1 WHERE sha256 = ?", (digest,)
                    )
                    if cur.rowcount == 0:
                        final = ix.blob_path(digest)
                        ix.blob_dir(digest)
                        os.replace(tmp, final)
                        renamed.append(final)
                        dirs.add(final.parent)
                        stored = True
                        ix.db.execute("INSERT INTO blobs VALUES (?, ?, 1)", (digest, size))
                    if old is not None and ix.unref(old[0]):
                        dead.append(old[0])
                if not stored:
                    unused.append(tmp)
                ix.db.execute(
                    "INSERT INTO objects (lease_id, object_id, sha256, size, created_at, "
                    "merkle_root) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (lease_id, object_id) "
                    "DO UPDATE SET sha256 = excluded.sha256, size = excluded.size, "
                    "created_at = excluded.created_at, merkle_root = excluded.merkle_root",
                    (lease_id, object_id, digest, size, created_at, merkle_root),
                )
                infos.append(
                    ObjectInfo(lease_id, object_id, digest, size, created_at, merkle_root == digest)
                )
            for d in dirs:  # the renames are durable before the rows that name them
                fsync_dir(d)
            ix.db.execute("UPDATE leases SET used_bytes = ? WHERE lease_id = ?", (used, lease_id))
    except BaseException:
        for final in renamed:  # never referenced by a committed row: not visible, remove again
            unlink_quietly(final)
        raise
    for tmp in unused:
        unlink_quietly(tmp)
    ix.unlink_blobs(dead)
    return infos, used


def delete_object(ix: Index, lease_id: int, object_id: bytes) -> tuple[int, int]:
    """Delete one object; returns (the lease's new used bytes, the object's size)."""
    with ix.tx():
        lease = ix.lease(lease_id)
        row = ix.db.execute(
            "SELECT sha256, size FROM objects WHERE lease_id = ? AND object_id = ?",
            (lease_id, object_id),
        ).fetchone()
        if row is None:
            raise ObjectNotFound(f"lease {lease_id} has no object {oid_text(object_id)}")
        check_not_in_revision(ix, lease_id, object_id)
        ix.db.execute(
            "DELETE FROM objects WHERE lease_id = ? AND object_id = ?", (lease_id, object_id)
        )
        dead = [row[0]] if ix.unref(row[0]) else []
        used = lease.used_bytes - row[1]
        ix.db.execute("UPDATE leases SET used_bytes = ? WHERE lease_id = ?", (used, lease_id))
    ix.unlink_blobs(dead)
    return used, row[1]


def gc(ix: Index, now: int, grace_seconds: int) -> tuple[GcReport, list[int]]:
    """Remove every lease whose end (closed_at, else expires_at) is at least the grace old."""
    due = [
        int(r[0])
        for r in ix.db.execute(
            "SELECT lease_id FROM leases WHERE COALESCE(closed_at, expires_at) <= ? "
            "ORDER BY lease_id",
            (now - grace_seconds,),
        )
    ]
    objects = freed = blobs = blob_bytes = 0
    for lease_id in due:
        dead: list[bytes] = []
        with ix.tx():
            groups = ix.db.execute(
                "SELECT sha256, COUNT(*), SUM(size) FROM objects WHERE lease_id = ? "
                "GROUP BY sha256",
                (lease_id,),
            ).fetchall()
            for digest, count, total in groups:
                objects += count
                freed += total
                if ix.unref(digest, count):
                    dead.append(digest)
            ix.db.execute("DELETE FROM objects WHERE lease_id = ?", (lease_id,))
            ix.db.execute("DELETE FROM revision_shares WHERE lease_id = ?", (lease_id,))
            ix.db.execute("DELETE FROM revisions WHERE lease_id = ?", (lease_id,))
            ix.db.execute("DELETE FROM leases WHERE lease_id = ?", (lease_id,))
        blobs += len(dead)
        blob_bytes += ix.unlink_blobs(dead)
    return GcReport(len(due), objects, freed, blobs, blob_bytes), due
