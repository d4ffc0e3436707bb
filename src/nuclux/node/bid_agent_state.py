"""The bid agent's memory: its bids (with their salts) and counters, in ``bids.sqlite3``.

A bid row is written *before* its commitment is sent, so a restart at any point still knows
the salt and reveals. A bid holds capacity (``units`` of its class) while it is
``committing``, ``committed``, ``revealed`` or ``won``; every other state releases it:

    committing -> committed -> revealed -> won -> leased
                                        \\-> lost | failed
               \\-> dropped (the commit never landed)
                           \\-> unrevealed (the reveal window passed)

``won`` keeps the reservation until the lease agent accepts the Ticketed lease (``leased``)
or declines it. Counters (bids made, revealed, won, lost, script failures and so on) are kept
in the same file and shown by ``nuclux node status``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nuclux.chain.market_ledger import window_open
from nuclux.core.types import ResourceClass

HOLDING = ("committing", "committed", "revealed", "won")
STATES = (*HOLDING, "leased", "lost", "failed", "dropped", "unrevealed", "declined")
STATE_FILE = "bids.sqlite3"
COUNTERS = (
    "committed",
    "revealed",
    "won",
    "lost",
    "failed_requests",
    "unrevealed",
    "finalized",
    "skipped_reserve",
    "skipped_capacity",
    "skipped_excluded",
    "script_ok",
    "script_skip",
    "script_failures",
    "errors",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bids (
    request_id INTEGER PRIMARY KEY,
    cls INTEGER NOT NULL,
    units INTEGER NOT NULL,
    price TEXT NOT NULL,
    salt BLOB NOT NULL,
    state TEXT NOT NULL,
    commit_end INTEGER NOT NULL,
    reveal_end INTEGER NOT NULL,
    from_block INTEGER NOT NULL,
    lease_id INTEGER,
    commit_end_block INTEGER NOT NULL DEFAULT 0,
    reveal_end_block INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class BidRecord:
    request_id: int
    cls: ResourceClass
    units: int
    price: int
    salt: bytes
    state: str
    commit_end: int
    reveal_end: int
    from_block: int  # the chain's head when the bid was made (where to look for its events)
    lease_id: int | None = None
    commit_end_block: int = 0  # the windows also last while the block number is at most these
    reveal_end_block: int = 0

    @property
    def holding(self) -> bool:
        return self.state in HOLDING

    def commit_open(self, number: int, time: int) -> bool:
        """Whether a block ``number`` at ``time`` still takes commits (as the contract)."""
        return window_open(self.commit_end, self.commit_end_block, number, time)

    def reveal_open(self, number: int, time: int) -> bool:
        return not self.commit_open(number, time) and window_open(
            self.reveal_end, self.reveal_end_block, number, time
        )


class BidBook:
    """The bids and counters of one node (a small SQLite file; one writer)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a salt must survive a power cut
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(bids)")}
        for name in ("commit_end_block", "reveal_end_block"):  # books written before them
            if name not in columns:
                self._db.execute(f"ALTER TABLE bids ADD COLUMN {name} INTEGER NOT NULL DEFAULT 0")

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ bids

    def add(self, bid: BidRecord) -> None:
        self._db.execute(
            "INSERT INTO bids VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                bid.request_id,
                int(bid.cls),
                bid.units,
                str(bid.price),
                bid.salt,
                bid.state,
                bid.commit_end,
                bid.reveal_end,
                bid.from_block,
                bid.lease_id,
                bid.commit_end_block,
                bid.reveal_end_block,
            ),
        )

    def set_state(self, request_id: int, state: str, lease_id: int | None = None) -> None:
        assert state in STATES, state
        self._db.execute(
            "UPDATE bids SET state = ?, lease_id = COALESCE(?, lease_id) WHERE request_id = ?",
            (state, lease_id, request_id),
        )

    def get(self, request_id: int) -> BidRecord | None:
        row = self._db.execute("SELECT * FROM bids WHERE request_id = ?", (request_id,)).fetchone()
        return None if row is None else _record(row)

    def holding(self) -> list[BidRecord]:
        rows = self._db.execute(
            "SELECT * FROM bids WHERE state IN (?, ?, ?, ?) ORDER BY request_id", HOLDING
        )
        return [_record(r) for r in rows]

    def all(self) -> Iterator[BidRecord]:
        for row in self._db.execute("SELECT * FROM bids ORDER BY request_id"):
            yield _record(row)

    def by_lease(self, lease_id: int) -> BidRecord | None:
        row = self._db.execute("SELECT * FROM bids WHERE lease_id = ?", (lease_id,)).fetchone()
        return None if row is None else _record(row)

    def reserved(self, cls: ResourceClass, *, except_lease: int | None = None) -> int:
        """Units of ``cls`` held by bids (not counting the one that won ``except_lease``)."""
        return sum(
            b.units
            for b in self.holding()
            if b.cls is cls and (except_lease is None or b.lease_id != except_lease)
        )

    # ------------------------------------------------------------------ counters and cursor

    def count(self, name: str, by: int = 1) -> None:
        assert name in COUNTERS, name
        self._db.execute(
            "INSERT INTO counters VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )

    def counters(self) -> dict[str, int]:
        have = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        return {name: int(have.get(name, 0)) for name in COUNTERS}

    def cursor(self) -> int | None:
        """The last request id looked at (None before the first look)."""
        row = self._db.execute("SELECT value FROM meta WHERE name = 'cursor'").fetchone()
        return None if row is None else int(row[0])

    def set_cursor(self, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta VALUES ('cursor', ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (value,),
        )


def read_summary(data_dir: Path) -> dict[str, Any] | None:
    """What ``nuclux node status`` shows of a node's bidding (None if it never bid)."""
    path = data_dir / STATE_FILE
    if not path.exists():
        return None
    book = BidBook(path)
    try:
        pending = [
            {"request": b.request_id, "class": b.cls.name.lower(), "state": b.state}
            for b in book.holding()
        ]
        return {"counters": book.counters(), "pending": pending}
    finally:
        book.close()


def _record(row: tuple[object, ...]) -> BidRecord:
    rid, cls, units, price, salt, state, c_end, r_end, block, lease, c_block, r_block = row
    return BidRecord(
        int(str(rid)),
        ResourceClass(int(str(cls))),
        int(str(units)),
        int(str(price)),
        bytes(salt),  # type: ignore[call-overload]
        str(state),
        int(str(c_end)),
        int(str(r_end)),
        int(str(block)),
        None if lease is None else int(str(lease)),
        int(str(c_block)),
        int(str(r_block)),
    )
