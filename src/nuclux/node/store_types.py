"""Values, limits and argument checks of the shard store (see ``nuclux.node.store``).

Everything here is plain data: frozen, slotted dataclasses returned by the store, the size
bounds it enforces, and the checks that turn a bad argument into a ``UsageError`` with a
message that says what to pass instead. Hashes are raw 32-byte SHA-256 digests; blob file
names are their lowercase hex.
"""

from __future__ import annotations

from dataclasses import dataclass

from nuclux.errors import UsageError

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

MAX_OBJECT_ID_BYTES = 64
DEFAULT_MAX_OBJECT_SIZE = 4 * GiB
MAX_READ_RANGE = 16 * MiB
MAX_LIST_LIMIT = 10_000
DEFAULT_CHUNK_SIZE = MiB
MAX_CHUNK_SIZE = 64 * MiB
WRITE_BUFFER_SIZE = 4 * MiB
SHA256_BYTES = 32
MAX_SQL_INT = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One stored object: its content digest, size and (chain) creation time. ``sha256`` is
    the digest: the SHA-256, or, when ``root_digest``, the Merkle root of a share block that
    was written against its root (a block PUT signs that root, not a SHA-256)."""

    lease_id: int
    object_id: bytes
    sha256: bytes
    size: int
    created_at: int
    root_digest: bool = False

    @property
    def sha256_hex(self) -> str:
        return self.sha256.hex()


@dataclass(frozen=True, slots=True)
class LeaseUsage:
    """A lease's reservation and what is stored under it."""

    lease_id: int
    quota_bytes: int
    used_bytes: int
    objects: int
    expires_at: int | None
    closed_at: int | None

    @property
    def free_bytes(self) -> int:
        return max(0, self.quota_bytes - self.used_bytes)


@dataclass(frozen=True, slots=True)
class CapacityReport:
    """The node's offer against its reservations.

    ``reserved`` counts the quota of every lease that is not closed plus the bytes still held
    by closed leases waiting for garbage collection (they occupy the disk until then).
    ``used`` is the logical bytes under all leases; ``stored`` the distinct blob bytes on disk
    (smaller than ``used`` when content is shared).
    """

    offered: int
    reserved: int
    used: int
    stored: int
    leases: int

    @property
    def available(self) -> int:
        return max(0, self.offered - self.reserved)


@dataclass(frozen=True, slots=True)
class DroppedObject:
    """An object the self-check had to remove from the index, and why."""

    lease_id: int
    object_id: bytes
    sha256: bytes
    size: int
    reason: str


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What the self-check at open found and did. Nothing is dropped silently."""

    tmp_removed: int = 0
    orphans_removed: int = 0
    blobs_checked: int = 0
    blobs_missing: int = 0
    blobs_wrong_size: int = 0
    blobs_quarantined: int = 0
    objects_dropped: int = 0
    bytes_dropped: int = 0
    refs_repaired: int = 0
    usage_repaired: int = 0
    content_verified: bool = False
    dropped: tuple[DroppedObject, ...] = ()

    @property
    def lost_data(self) -> bool:
        """True when committed objects were dropped (data the node had promised to keep)."""
        return self.objects_dropped > 0

    def summary(self) -> str:
        return (
            f"tmp_removed={self.tmp_removed} orphans_removed={self.orphans_removed} "
            f"blobs_checked={self.blobs_checked} missing={self.blobs_missing} "
            f"wrong_size={self.blobs_wrong_size} quarantined={self.blobs_quarantined} "
            f"objects_dropped={self.objects_dropped} bytes_dropped={self.bytes_dropped} "
            f"refs_repaired={self.refs_repaired} usage_repaired={self.usage_repaired}"
        )


@dataclass(frozen=True, slots=True)
class GcReport:
    """What one garbage collection removed."""

    leases_removed: int
    objects_deleted: int
    bytes_freed: int
    blobs_removed: int
    blob_bytes_freed: int


def check_lease_id(lease_id: int) -> int:
    if isinstance(lease_id, bool) or not isinstance(lease_id, int):
        raise UsageError(f"lease id must be an int, got {type(lease_id).__name__}")
    if not 0 <= lease_id <= MAX_SQL_INT:
        raise UsageError(f"lease id {lease_id} is out of range 0..2**63-1")
    return lease_id


def check_object_id(object_id: bytes) -> bytes:
    if not isinstance(object_id, bytes):
        raise UsageError(f"object id must be bytes, got {type(object_id).__name__}")
    if not 1 <= len(object_id) <= MAX_OBJECT_ID_BYTES:
        raise UsageError(
            f"object id must be 1..{MAX_OBJECT_ID_BYTES} bytes long, got {len(object_id)}"
        )
    return object_id


def check_sha256(digest: bytes | None) -> bytes | None:
    if digest is None:
        return None
    if not isinstance(digest, bytes) or len(digest) != SHA256_BYTES:
        raise UsageError("sha256 must be a 32-byte digest (bytes), e.g. hashlib.sha256().digest()")
    return digest


def check_count(name: str, value: int) -> int:
    """A non-negative int that fits SQLite's INTEGER (time stamps, sizes, quotas)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_SQL_INT:
        raise UsageError(f"{name} must be between 0 and 2**63-1, got {value}")
    return value


def check_optional_count(name: str, value: int | None) -> int | None:
    return None if value is None else check_count(name, value)


def check_range(size: int, offset: int, length: int | None) -> int:
    """Validate a byte range of an object of ``size`` bytes; return the range's length."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise UsageError(f"offset must be a non-negative int, got {offset!r}")
    if offset > size:
        raise UsageError(f"offset {offset} is past the end of the object ({size} bytes)")
    if length is None:
        return size - offset
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise UsageError(f"length must be a non-negative int or None, got {length!r}")
    if offset + length > size:
        raise UsageError(
            f"range {offset}+{length} runs past the end of the object ({size} bytes); "
            f"at most {size - offset} bytes are readable from offset {offset}"
        )
    return length


def blob_relpath(digest: bytes) -> str:
    """``blobs/ab/<hex>``: the content-addressed location of a blob, relative to the root."""
    h = digest.hex()
    return f"blobs/{h[:2]}/{h}"
