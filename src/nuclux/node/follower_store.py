"""The SQLite file behind a ``ChainView``: records, the sync cursor and the reorg window.

Theory of operation. Tables: ``providers`` (one row per registered owner, indexed by operator,
which is the operator -> owner map), ``leases`` (indexed by provider and by consumer),
``cursor`` (the last processed block: number, hash, timestamp), ``blocks`` (hashes of recent
processed blocks: every batch end and every block that held an event) and ``touches`` ((block,
kind, key) for the keys each recent block changed, which a reorg must re-read). Integers wider
than SQLite's 64 bits (amounts, prices, capacities, units) are stored as decimal text.
``apply`` writes one batch (after a reorg, the rewind to the fork point too), cursor included,
in one transaction, so a crash or a failed step leaves the view at the previous cursor or the
new one, never between. Pruning keeps the blocks within ``window`` of the cursor plus the
newest older one (the anchor) and the touches after the anchor, so any stored block can serve
as a fork point and every touch after it is still known. ``meta`` records which chain and
contracts the file follows; opening it for others is refused.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nuclux.chain.ledger import BlockHeader, ProviderInfo
from nuclux.core.lease import Lease, LeaseState
from nuclux.core.types import Address, LeaseId, ResourceClass, Wei
from nuclux.errors import ConfigError

SCHEMA_VERSION = "1"
LEASE, PROVIDER = "lease", "provider"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cursor (one INTEGER PRIMARY KEY CHECK (one = 1),
    number INTEGER NOT NULL, hash BLOB NOT NULL, timestamp INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS touches (block INTEGER NOT NULL, kind TEXT NOT NULL,
    key TEXT NOT NULL, PRIMARY KEY (block, kind, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS providers (owner TEXT PRIMARY KEY, operator TEXT NOT NULL,
    status TEXT NOT NULL, faults INTEGER NOT NULL, suspended_until INTEGER NOT NULL,
    stake TEXT NOT NULL, release_at INTEGER NOT NULL, cert_fingerprint BLOB NOT NULL,
    x25519_key BLOB NOT NULL, capacity TEXT NOT NULL, price TEXT NOT NULL,
    endpoint TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS providers_by_operator ON providers (operator);
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, consumer TEXT NOT NULL,
    provider TEXT NOT NULL, cls INTEGER NOT NULL, state INTEGER NOT NULL, units TEXT NOT NULL,
    price TEXT NOT NULL, term_epochs INTEGER NOT NULL, start_epoch INTEGER NOT NULL,
    end_epoch INTEGER NOT NULL, escrow TEXT NOT NULL, paid TEXT NOT NULL,
    faults INTEGER NOT NULL, deadline INTEGER NOT NULL, ext_epochs INTEGER NOT NULL,
    ext_escrow TEXT NOT NULL, ext_deadline INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS leases_by_provider ON leases (provider, state);
CREATE INDEX IF NOT EXISTS leases_by_consumer ON leases (consumer);
"""
_LEASE_COLS = (
    "id, consumer, provider, cls, state, units, price, term_epochs, start_epoch, end_epoch, "
    "escrow, paid, faults, deadline, ext_epochs, ext_escrow, ext_deadline"
)
_PROVIDER_COLS = (
    "owner, operator, status, faults, suspended_until, stake, release_at, cert_fingerprint, "
    "x25519_key, capacity, price, endpoint"
)
# Built once from the fixed column lists above; values always go through placeholders.
_INSERT_LEASE = f"INSERT INTO leases ({_LEASE_COLS}) VALUES ({', '.join('?' * 17)})"  # noqa: S608
_INSERT_PROV = f"INSERT INTO providers ({_PROVIDER_COLS}) VALUES ({', '.join('?' * 12)})"  # noqa: S608
_SELECT_LEASES = f"SELECT {_LEASE_COLS} FROM leases"  # noqa: S608
_SELECT_PROVIDERS = f"SELECT {_PROVIDER_COLS} FROM providers"  # noqa: S608


@dataclass(frozen=True, slots=True)
class Batch:
    """What one sync step learned: the state at ``last`` of every key it read (None: gone)."""

    last: BlockHeader
    leases: Mapping[int, Lease | None]
    providers: Mapping[str, ProviderInfo | None]
    touches: Iterable[tuple[int, str, str]]
    hashes: Mapping[int, bytes]


class ViewStore:
    def __init__(self, path: str | Path, identity: Mapping[str, str]) -> None:
        self.path = str(path)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)
            if self.path != ":memory:":
                self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute("PRAGMA synchronous = NORMAL")
            self.db.executescript(_SCHEMA)  # idempotent: IF NOT EXISTS
            with self.transaction():
                self._check_identity({"schema": SCHEMA_VERSION, **identity})
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"cannot open the chain view database {self.path}: {exc}") from exc

    def _check_identity(self, identity: Mapping[str, str]) -> None:
        stored = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        if not stored:
            self.db.executemany("INSERT INTO meta VALUES (?, ?)", identity.items())
            return
        for key, want in identity.items():
            if stored.get(key) != want:
                raise ConfigError(
                    f"the chain view database {self.path} was made for {key}={stored.get(key)}, "
                    f"not {want}; delete it (it is rebuilt from the chain) or use another path"
                )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ cursor and window

    def cursor(self) -> BlockHeader | None:
        row = self.db.execute("SELECT number, hash, timestamp FROM cursor").fetchone()
        return None if row is None else BlockHeader(int(row[0]), bytes(row[1]), int(row[2]))

    def recent_blocks(self) -> list[tuple[int, bytes]]:
        rows = self.db.execute("SELECT number, hash FROM blocks ORDER BY number").fetchall()
        return [(int(n), bytes(h)) for n, h in rows]

    def touched_after(self, block: int) -> tuple[set[int], set[str]]:
        """The lease ids and provider owners changed by the blocks after ``block``."""
        rows = self.db.execute("SELECT kind, key FROM touches WHERE block > ?", (block,))
        leases: set[int] = set()
        owners: set[str] = set()
        for kind, key in rows:
            if kind == LEASE:
                leases.add(int(key))
            else:
                owners.add(key)
        return leases, owners

    def apply(self, batch: Batch, window: int, fork: int | None = None) -> None:
        """Upsert (or delete) every key read, record touches and hashes, move the cursor;
        after a reorg, first forget the touches and hashes of the blocks above ``fork``."""
        last = batch.last
        with self.transaction():
            if fork is not None:
                self.db.execute("DELETE FROM touches WHERE block > ?", (fork,))
                self.db.execute("DELETE FROM blocks WHERE number > ?", (fork,))
            for lease_id, lease in batch.leases.items():
                self.db.execute("DELETE FROM leases WHERE id = ?", (lease_id,))
                if lease is not None:
                    self.db.execute(_INSERT_LEASE, _lease_row(lease))
            for owner, info in batch.providers.items():
                self.db.execute("DELETE FROM providers WHERE owner = ?", (owner,))
                if info is not None:
                    self.db.execute(_INSERT_PROV, _provider_row(info))
            self.db.executemany("INSERT OR IGNORE INTO touches VALUES (?, ?, ?)", batch.touches)
            self.db.executemany("INSERT OR REPLACE INTO blocks VALUES (?, ?)", batch.hashes.items())
            self.db.execute(
                "INSERT OR REPLACE INTO cursor VALUES (1, ?, ?, ?)",
                (last.number, last.hash, last.timestamp),
            )
            self._prune(last.number - window)

    def reset(self) -> None:
        """Forget everything but the identity: the next sync starts from the start block."""
        with self.transaction():
            for table in ("cursor", "blocks", "touches", "providers", "leases"):
                self.db.execute(f"DELETE FROM {table}")  # noqa: S608 (fixed names)

    def _prune(self, floor: int) -> None:
        row = self.db.execute("SELECT max(number) FROM blocks WHERE number <= ?", (floor,))
        anchor = row.fetchone()[0]
        if anchor is not None:
            self.db.execute("DELETE FROM blocks WHERE number < ?", (anchor,))
            self.db.execute("DELETE FROM touches WHERE block <= ?", (anchor,))

    # ------------------------------------------------------------------ reads

    def lease(self, lease_id: int) -> Lease | None:
        row = self.db.execute(_SELECT_LEASES + " WHERE id = ?", (lease_id,)).fetchone()
        return None if row is None else _lease_of(row)

    def leases(self, column: str, address: str, states: Iterable[LeaseState] | None) -> list[Lease]:
        if column not in ("provider", "consumer"):
            raise ValueError(f"leases are indexed by provider or consumer, not {column}")
        sql = f"{_SELECT_LEASES} WHERE {column} = ?"
        args: list[Any] = [address]
        if states is not None:
            wanted = [int(s) for s in states]
            sql += f" AND state IN ({', '.join('?' * len(wanted))})"
            args += wanted
        return [_lease_of(r) for r in self.db.execute(sql + " ORDER BY id", args)]

    def provider(self, column: str, address: str) -> ProviderInfo | None:
        if column not in ("owner", "operator"):
            raise ValueError(f"providers are indexed by owner or operator, not {column}")
        row = self.db.execute(f"{_SELECT_PROVIDERS} WHERE {column} = ?", (address,)).fetchone()
        return None if row is None else _provider_of(row)


def _lease_row(x: Lease) -> tuple[object, ...]:
    """A lease as a row, in ``_LEASE_COLS`` order."""
    return (
        *(x.id, x.consumer, x.provider, int(x.cls), int(x.state), str(x.units), str(x.price)),
        *(x.term_epochs, x.start_epoch, x.end_epoch, str(x.escrow), str(x.paid), x.faults),
        *(x.deadline, x.ext_epochs, str(x.ext_escrow), x.ext_deadline),
    )


def _lease_of(r: tuple[Any, ...]) -> Lease:
    return Lease(
        id=LeaseId(r[0]),
        consumer=Address(r[1]),
        provider=Address(r[2]),
        cls=ResourceClass(r[3]),
        state=LeaseState(r[4]),
        units=int(r[5]),
        price=Wei(int(r[6])),
        term_epochs=r[7],
        start_epoch=r[8],
        end_epoch=r[9],
        escrow=Wei(int(r[10])),
        paid=Wei(int(r[11])),
        faults=r[12],
        deadline=r[13],
        ext_epochs=r[14],
        ext_escrow=Wei(int(r[15])),
        ext_deadline=r[16],
    )


def _provider_row(p: ProviderInfo) -> tuple[object, ...]:
    """A provider as a row, in ``_PROVIDER_COLS`` order."""
    return (
        *(p.owner, p.operator, p.status, p.faults, p.suspended_until, str(p.stake), p.release_at),
        *(p.cert_fingerprint, p.x25519_key, json.dumps(p.capacity), json.dumps(p.price)),
        p.endpoint,
    )


def _triple(text: str) -> tuple[int, int, int]:
    a, b, c = (int(v) for v in json.loads(text))
    return a, b, c


def _provider_of(r: tuple[Any, ...]) -> ProviderInfo:
    return ProviderInfo(
        owner=Address(r[0]),
        operator=Address(r[1]),
        status=r[2],
        faults=r[3],
        suspended_until=r[4],
        stake=Wei(int(r[5])),
        release_at=r[6],
        cert_fingerprint=bytes(r[7]),
        x25519_key=bytes(r[8]),
        capacity=_triple(r[9]),
        price=_triple(r[10]),
        endpoint=r[11],
    )
