"""The shard store's SQLite index and the blob-file moves that must be serialised with it.

Every method here is blocking and runs on the store's single database thread, so an index
transaction and the file operations that go with it (renaming a finished temp file into
``blobs/``, unlinking a blob whose last reference went, opening a blob for a reader) never
interleave with another transaction. Order of durable steps for a committed object: the temp
file is fsynced by the writer; here it is renamed into place and its directory fsynced; then the
index transaction commits (WAL, ``synchronous=FULL``). A blob is unlinked only after the
transaction that dropped its last reference has committed. A crash between any two steps leaves
an unreferenced file, which the self-check at open removes.

The index also keeps each share block's Merkle root and each lease's latest co-signed revision
with its share list (``store_revisions``): schema version 2. ``_migrate_1_to_2`` upgrades a
version-1 index in place at open, in one transaction.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nuclux.core.merkle import MerkleBuilder
from nuclux.core.reference import parse_block_id
from nuclux.errors import IntegrityError, LeaseNotFound, ObjectNotFound, StoreError
from nuclux.node.store_types import ObjectInfo, blob_relpath
from nuclux.pagecache import drop_cached

SCHEMA_VERSION = 2  # 1 -> 2: block Merkle roots, revisions (``_migrate_1_to_2``)

# Version 2 additions: the latest co-signed revision of each lease and its share list, in the
# revision's order (``store_revisions``).
_REVISIONS = """
CREATE TABLE IF NOT EXISTS revisions (
    lease_id INTEGER PRIMARY KEY,
    revision INTEGER NOT NULL CHECK (revision >= 1),
    used_bytes INTEGER NOT NULL CHECK (used_bytes >= 0),
    share_count INTEGER NOT NULL CHECK (share_count >= 0),
    root BLOB NOT NULL CHECK (length(root) = 32),
    consumer_sig BLOB NOT NULL CHECK (length(consumer_sig) = 65),
    provider_sig BLOB NOT NULL CHECK (length(provider_sig) = 65),
    signed_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS revision_shares (
    lease_id INTEGER NOT NULL,
    position INTEGER NOT NULL CHECK (position >= 0),
    file_id BLOB NOT NULL CHECK (length(file_id) = 16),
    share_index INTEGER NOT NULL CHECK (share_index BETWEEN 0 AND 255),
    root BLOB NOT NULL CHECK (length(root) = 32),
    leaf_count INTEGER NOT NULL CHECK (leaf_count >= 1),
    size INTEGER NOT NULL CHECK (size >= 1),
    PRIMARY KEY (lease_id, position)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS revision_shares_by_share
    ON revision_shares (lease_id, file_id, share_index);
"""

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
    lease_id INTEGER PRIMARY KEY,
    quota_bytes INTEGER NOT NULL CHECK (quota_bytes >= 0),
    used_bytes INTEGER NOT NULL DEFAULT 0 CHECK (used_bytes >= 0),
    expires_at INTEGER,
    closed_at INTEGER
);
CREATE TABLE IF NOT EXISTS objects (
    lease_id INTEGER NOT NULL,
    object_id BLOB NOT NULL CHECK (length(object_id) BETWEEN 1 AND 64),
    sha256 BLOB NOT NULL CHECK (length(sha256) = 32),
    size INTEGER NOT NULL CHECK (size >= 0),
    created_at INTEGER NOT NULL,
    merkle_root BLOB CHECK (merkle_root IS NULL OR length(merkle_root) = 32),
    PRIMARY KEY (lease_id, object_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS objects_by_sha256 ON objects (sha256);
CREATE TABLE IF NOT EXISTS blobs (
    sha256 BLOB PRIMARY KEY CHECK (length(sha256) = 32),
    size INTEGER NOT NULL CHECK (size >= 0),
    refs INTEGER NOT NULL CHECK (refs >= 1)
) WITHOUT ROWID;
"""
    + _REVISIONS
)


@dataclass(frozen=True, slots=True)
class LeaseRow:
    lease_id: int
    quota_bytes: int
    used_bytes: int
    expires_at: int | None
    closed_at: int | None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def oid_text(object_id: bytes) -> str:
    """An object id for messages: as text when printable ASCII, else hex."""
    if object_id.isascii() and object_id.decode("ascii").isprintable():
        return repr(object_id.decode("ascii"))
    return "0x" + object_id.hex()


def close_after(fd: int, pending: Future[Any] | None) -> None:
    """Close a blob descriptor, but only once no thread can still be reading it."""
    if pending is None or pending.done():
        os.close(fd)
    else:
        pending.add_done_callback(lambda _: os.close(fd))


def pread_exact(fd: int, length: int, offset: int, digest: bytes) -> bytes:
    """Read from the disk (an I/O thread); the pages read are dropped from the cache after
    (``pagecache.drop_cached``: stored data is cold, and reused pages are cheaper than new)."""
    data = os.pread(fd, length, offset)
    drop_cached(fd, offset, length)
    if len(data) != length:
        raise IntegrityError(
            f"blob {digest.hex()} is shorter than its index entry; restart the node so the "
            "self-check can repair the store"
        )
    return data


_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)


def pread_cached(fd: int, length: int, offset: int) -> bytearray | None:
    """Read ``length`` bytes if all of them are in the page cache, without blocking on the
    disk (``preadv`` with ``RWF_NOWAIT``); None when any part would need the disk (or the
    platform cannot tell), and the caller reads in an I/O thread instead. A cached read costs
    less than handing the read to a thread."""
    if _RWF_NOWAIT is None or length <= 0:
        return None
    buf = bytearray(length)
    try:
        n = os.preadv(fd, [buf], offset, _RWF_NOWAIT)
    except OSError:  # EAGAIN: not cached; EOPNOTSUPP: the file system cannot say
        return None
    return buf if n == length else None


class Index:
    """The index connection and the blob directory; single-threaded by contract."""

    def __init__(self, root: Path, db: sqlite3.Connection, lock_fd: int) -> None:
        self.root = root
        self.db = db
        self._lock_fd = lock_fd
        self._dirs: set[Path] = set()

    @classmethod
    def open(cls, root: Path) -> Index:
        for sub in ("blobs", "tmp", "quarantine"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(root / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise StoreError(f"shard store {root} is in use by another process") from None
        try:
            fsync_dir(root)
            db = sqlite3.connect(root / "index.sqlite3", isolation_level=None)
        except BaseException:
            os.close(lock_fd)
            raise
        ix = cls(root, db, lock_fd)
        try:
            ix._init_schema()
        except BaseException:
            ix.close()
            raise
        return ix

    def _init_schema(self) -> None:
        mode = self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"SQLite refused WAL mode for {self.root} (got {mode!r})")
        self.db.execute("PRAGMA synchronous=FULL")
        with self.tx():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)
            row = self.db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            if row[0] is None:
                self.db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] == 1:
                self._migrate_1_to_2()
            elif row[0] != SCHEMA_VERSION:
                raise StoreError(
                    f"index {self.root / 'index.sqlite3'} has schema version {row[0]}; this "
                    f"Nuclux reads version {SCHEMA_VERSION}: use a matching Nuclux release"
                )

    def _migrate_1_to_2(self) -> None:
        """Version 1 had no block roots: add the column and compute the root of every stored
        object whose id names a share block (reading its blob; one with a missing blob keeps
        no root, and the self-check that follows drops it). The revision tables were created
        by the schema script. One transaction: a crash leaves version 1, and the next open
        migrates again."""
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(objects)")}
        if "merkle_root" not in columns:
            self.db.execute(
                "ALTER TABLE objects ADD COLUMN merkle_root BLOB "
                "CHECK (merkle_root IS NULL OR length(merkle_root) = 32)"
            )
        rows = self.db.execute(
            "SELECT lease_id, object_id, sha256 FROM objects "
            "WHERE merkle_root IS NULL AND object_id >= ? AND object_id < ?",
            (b"f/", b"f0"),
        ).fetchall()
        for lease_id, object_id, digest in rows:
            if parse_block_id(object_id) is None:
                continue
            root = self.blob_merkle_root(digest)
            if root is not None:
                self.db.execute(
                    "UPDATE objects SET merkle_root = ? WHERE lease_id = ? AND object_id = ?",
                    (root, lease_id, object_id),
                )
        self.db.execute("UPDATE schema_version SET version = 2")

    def blob_merkle_root(self, digest: bytes) -> bytes | None:
        """The Merkle root of a stored blob's bytes (None if the blob is missing)."""
        builder = MerkleBuilder()
        try:
            with open(self.blob_path(digest), "rb") as f:
                while chunk := f.read(1 << 20):
                    builder.update(chunk)
        except FileNotFoundError:
            return None
        return builder.root()

    def close(self) -> None:
        try:
            self.db.close()
        finally:
            os.close(self._lock_fd)

    @contextlib.contextmanager
    def tx(self) -> Iterator[None]:
        """One write transaction, taken eagerly so it never fails half-way on a lock."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def blob_path(self, digest: bytes) -> Path:
        return self.root / blob_relpath(digest)

    def blob_dir(self, digest: bytes) -> Path:
        """The blob's ``blobs/ab`` directory, created (durably) on first use."""
        path = self.blob_path(digest).parent
        if path not in self._dirs:
            if not path.is_dir():
                path.mkdir()
                fsync_dir(path.parent)
            self._dirs.add(path)
        return path

    # leases -------------------------------------------------------------------------------

    def leases(self) -> list[LeaseRow]:
        rows = self.db.execute(
            "SELECT lease_id, quota_bytes, used_bytes, expires_at, closed_at FROM leases"
        )
        return [LeaseRow(*r) for r in rows]

    def lease(self, lease_id: int) -> LeaseRow:
        row = self.db.execute(
            "SELECT lease_id, quota_bytes, used_bytes, expires_at, closed_at FROM leases "
            "WHERE lease_id = ?",
            (lease_id,),
        ).fetchone()
        if row is None:
            raise LeaseNotFound(
                f"no lease {lease_id} in this store; reserve it with set_lease first"
            )
        return LeaseRow(*row)

    def object_count(self, lease_id: int) -> int:
        row = self.db.execute("SELECT COUNT(*) FROM objects WHERE lease_id = ?", (lease_id,))
        return int(row.fetchone()[0])

    def reserved_bytes(self, *, excluding: int | None = None) -> int:
        """Quotas of leases not closed plus bytes still held by closed ones."""
        row = self.db.execute(
            "SELECT COALESCE(SUM(CASE WHEN closed_at IS NULL THEN quota_bytes "
            "ELSE used_bytes END), 0) FROM leases WHERE lease_id IS NOT ?",
            (excluding,),
        ).fetchone()
        return int(row[0])

    def totals(self) -> tuple[int, int, int]:
        """(logical used bytes, distinct blob bytes, lease count)."""
        used, leases = self.db.execute(
            "SELECT COALESCE(SUM(used_bytes), 0), COUNT(*) FROM leases"
        ).fetchone()
        stored = self.db.execute("SELECT COALESCE(SUM(size), 0) FROM blobs").fetchone()[0]
        return int(used), int(stored), int(leases)

    # objects ------------------------------------------------------------------------------

    def stat(self, lease_id: int, object_id: bytes) -> ObjectInfo:
        row = self.db.execute(
            "SELECT sha256, size, created_at, merkle_root IS sha256 FROM objects "
            "WHERE lease_id = ? AND object_id = ?",
            (lease_id, object_id),
        ).fetchone()
        if row is None:
            raise ObjectNotFound(f"lease {lease_id} has no object {oid_text(object_id)}")
        return ObjectInfo(lease_id, object_id, row[0], row[1], row[2], bool(row[3]))

    def object_size(self, lease_id: int, object_id: bytes) -> int | None:
        try:
            return self.stat(lease_id, object_id).size
        except ObjectNotFound:
            return None

    def open_object(self, lease_id: int, object_id: bytes) -> tuple[ObjectInfo, int]:
        """Look an object up and open its blob in one step, so no delete can come between.

        The caller owns the returned file descriptor; it stays valid after an unlink."""
        info = self.stat(lease_id, object_id)
        try:
            fd = os.open(self.blob_path(info.sha256), os.O_RDONLY)
        except FileNotFoundError:
            raise StoreError(
                f"blob {info.sha256_hex} of lease {lease_id} object {oid_text(object_id)} is "
                "missing from disk; restart the node so the self-check can repair the index"
            ) from None
        return info, fd

    def list_objects(self, lease_id: int, after: bytes | None, limit: int) -> list[ObjectInfo]:
        rows = self.db.execute(
            "SELECT object_id, sha256, size, created_at, merkle_root IS sha256 FROM objects "
            "WHERE lease_id = ? AND object_id > ? ORDER BY object_id LIMIT ?",
            (lease_id, after if after is not None else b"", limit),
        )
        return [ObjectInfo(lease_id, r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]

    def unref(self, digest: bytes, count: int = 1) -> bool:
        """Drop ``count`` references to a blob; True when its row went (unlink after commit)."""
        row = self.db.execute("SELECT refs FROM blobs WHERE sha256 = ?", (digest,)).fetchone()
        if row is None:
            return False
        if row[0] <= count:
            self.db.execute("DELETE FROM blobs WHERE sha256 = ?", (digest,))
            return True
        self.db.execute("UPDATE blobs SET refs = refs - ? WHERE sha256 = ?", (count, digest))
        return False

    def unlink_blobs(self, digests: list[bytes]) -> int:
        freed = 0
        for d in digests:
            path = self.blob_path(d)
            with contextlib.suppress(FileNotFoundError):
                freed += path.stat().st_size
                path.unlink()
        return freed
