"""The shard store's self-check, run at every open before anything else touches the store.

A crash (kill -9, power loss) can leave only these traces, by the order of durable steps in
``store_index``: files in ``tmp/`` (writes never committed), blob files no index row refers to
(renamed but not committed, or unreferenced but not yet unlinked). Those are removed. Damage
from outside the store's protocol (a lost or truncated file, bit rot, a hand-edited index) is
repaired conservatively and reported, never silently: rows whose blob is missing are dropped; a
blob of the wrong size or (with ``verify_content``) the wrong hash is moved to ``quarantine/``
and its objects dropped; reference counts and per-lease used bytes are recomputed from the
object rows. The check is idempotent, so a crash during it is repaired by the next open.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import string
from pathlib import Path

from nuclux.core.merkle import MerkleBuilder
from nuclux.node.store_index import Index
from nuclux.node.store_types import CheckReport, DroppedObject

log = logging.getLogger("nuclux.node.store")

_HEX = frozenset(string.hexdigits.lower())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _clear_tmp(tmp: Path) -> int:
    count = 0
    for entry in tmp.iterdir():
        _remove(entry)
        count += 1
    return count


def _scan_blobs(blobs: Path) -> tuple[dict[bytes, int], int]:
    """Blob files on disk by digest with their sizes; stray entries are removed and counted."""
    found: dict[bytes, int] = {}
    strays = 0
    for sub in blobs.iterdir():
        if not (sub.is_dir() and len(sub.name) == 2 and set(sub.name) <= _HEX):
            _remove(sub)
            strays += 1
            continue
        for f in sub.iterdir():
            name = f.name
            if len(name) == 64 and set(name) <= _HEX and name[:2] == sub.name and f.is_file():
                found[bytes.fromhex(name)] = f.stat().st_size
            else:
                _remove(f)
                strays += 1
    return found, strays


def _quarantine(ix: Index, digest: bytes) -> None:
    src = ix.blob_path(digest)
    dest = ix.root / "quarantine" / digest.hex()
    n = 0
    while dest.exists():
        n += 1
        dest = ix.root / "quarantine" / f"{digest.hex()}.{n}"
    os.replace(src, dest)


def _content_matches(path: Path, digest: bytes) -> bool:
    """Whether the file's content has ``digest``: its SHA-256, or (a share block stored
    under its root) its Merkle root."""
    with path.open("rb") as f:
        if hashlib.file_digest(f, "sha256").digest() == digest:
            return True
        f.seek(0)
        tree = MerkleBuilder()
        while chunk := f.read(1 << 20):
            tree.update(chunk)
    return tree.root() == digest


def _drop_objects(
    ix: Index, where: str, args: tuple[object, ...], reason: str
) -> list[DroppedObject]:
    rows = ix.db.execute(
        f"SELECT lease_id, object_id, sha256, size FROM objects WHERE {where}",  # noqa: S608
        args,
    ).fetchall()
    ix.db.execute(f"DELETE FROM objects WHERE {where}", args)  # noqa: S608
    return [DroppedObject(r[0], r[1], r[2], r[3], reason) for r in rows]


def self_check(ix: Index, *, verify_content: bool) -> CheckReport:
    tmp_removed = _clear_tmp(ix.root / "tmp")
    on_disk, orphans = _scan_blobs(ix.root / "blobs")
    missing = wrong_size = quarantined = 0
    bad: list[tuple[bytes, str]] = []
    indexed = ix.db.execute("SELECT sha256, size FROM blobs").fetchall()
    for digest, size in indexed:
        disk_size = on_disk.pop(digest, None)
        if disk_size is None:
            missing += 1
            bad.append((digest, "blob file missing"))
        elif disk_size != size:
            wrong_size += 1
            _quarantine(ix, digest)
            bad.append((digest, f"blob file has {disk_size} bytes, index says {size}"))
        elif verify_content and not _content_matches(ix.blob_path(digest), digest):
            quarantined += 1
            _quarantine(ix, digest)
            bad.append((digest, "blob content does not match its digest"))
    for digest in on_disk:
        ix.blob_path(digest).unlink(missing_ok=True)
        orphans += 1

    dropped: list[DroppedObject] = []
    with ix.tx():
        for digest, reason in bad:
            dropped += _drop_objects(ix, "sha256 = ?", (digest,), reason)
            ix.db.execute("DELETE FROM blobs WHERE sha256 = ?", (digest,))
        dropped += _drop_objects(
            ix, "sha256 NOT IN (SELECT sha256 FROM blobs)", (), "no blob row for its sha256"
        )
        dropped += _drop_objects(
            ix, "lease_id NOT IN (SELECT lease_id FROM leases)", (), "no lease row"
        )
        refs = ix.db.execute(
            "SELECT b.sha256, b.refs, (SELECT COUNT(*) FROM objects o WHERE o.sha256 = b.sha256) "
            "FROM blobs b"
        ).fetchall()
        unreferenced = [d for d, r, n in refs if n == 0]
        refs_repaired = sum(1 for _, r, n in refs if r != n)
        for digest, r, n in refs:
            if n == 0:
                ix.db.execute("DELETE FROM blobs WHERE sha256 = ?", (digest,))
            elif r != n:
                ix.db.execute("UPDATE blobs SET refs = ? WHERE sha256 = ?", (n, digest))
        sums = "(SELECT COALESCE(SUM(size), 0) FROM objects o WHERE o.lease_id = leases.lease_id)"
        usage_repaired = ix.db.execute(
            f"UPDATE leases SET used_bytes = {sums} WHERE used_bytes != {sums}"  # noqa: S608
        ).rowcount
    orphans += len(unreferenced)
    ix.unlink_blobs(unreferenced)

    report = CheckReport(
        tmp_removed=tmp_removed,
        orphans_removed=orphans,
        blobs_checked=len(indexed),
        blobs_missing=missing,
        blobs_wrong_size=wrong_size,
        blobs_quarantined=quarantined + wrong_size,
        objects_dropped=len(dropped),
        bytes_dropped=sum(d.size for d in dropped),
        refs_repaired=refs_repaired,
        usage_repaired=usage_repaired,
        content_verified=verify_content,
        dropped=tuple(dropped),
    )
    if report.lost_data or refs_repaired or usage_repaired:
        log.warning("shard store %s self-check repaired damage: %s", ix.root, report.summary())
        for d in dropped:
            log.warning(
                "dropped lease %d object 0x%s (digest %s): %s",
                d.lease_id,
                d.object_id.hex(),
                d.sha256.hex(),
                d.reason,
            )
    else:
        log.info("shard store %s self-check: %s", ix.root, report.summary())
    return report
