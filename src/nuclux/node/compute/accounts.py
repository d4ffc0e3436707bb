"""The node's compute lease accounts, kept in SQLite beside the store.

One row per compute lease: the ``LeaseAccount`` (``nuclux.core.compute_account``) as JSON, and
the latest co-signed usage with both signatures, which is what the agent submits on chain. A
write is one small transaction (WAL, synchronous=FULL): once the node has answered a
countersign, the co-signed state survives a crash, so the provider can always settle what the
consumer signed. Running jobs are not persisted: a job cut short by a restart costs the
consumer nothing.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from nuclux.chain.usage import Usage
from nuclux.core.compute_account import LeaseAccount


@dataclass(frozen=True, slots=True)
class CoSignedUsage:
    usage: Usage
    consumer_signature: bytes
    provider_signature: bytes


class ComputeAccounts:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS accounts (lease TEXT PRIMARY KEY, body TEXT NOT NULL,"
            " consumer_sig BLOB NOT NULL, provider_sig BLOB NOT NULL)"
        )
        self._cache: dict[int, LeaseAccount] = {}

    def close(self) -> None:
        self._db.close()

    def get(self, lease_id: int) -> LeaseAccount | None:
        acct = self._cache.get(lease_id)
        if acct is None:
            row = self._db.execute(
                "SELECT body FROM accounts WHERE lease = ?", (str(lease_id),)
            ).fetchone()
            if row is None:
                return None
            acct = self._cache[lease_id] = LeaseAccount.from_json(json.loads(row[0]))
        return acct

    def open(self, lease_id: int, price: int, units: int, escrow: int) -> LeaseAccount:
        """The lease's account, created on first use; units and escrow follow the lease (an
        extension or top-up changes them)."""
        acct = self.get(lease_id)
        if acct is None:
            acct = self._cache[lease_id] = LeaseAccount(lease_id, price, units, escrow)
            self.save(acct)
        acct.units, acct.escrow = units, escrow
        return acct

    def save(self, acct: LeaseAccount, signatures: tuple[bytes, bytes] | None = None) -> None:
        """Persist ``acct``; with ``signatures`` (consumer's, provider's) over its state."""
        body = json.dumps(acct.to_json())
        if signatures is None:
            self._db.execute(
                "INSERT INTO accounts (lease, body, consumer_sig, provider_sig)"
                " VALUES (?, ?, x'', x'') ON CONFLICT(lease) DO UPDATE SET body = excluded.body",
                (str(acct.lease_id), body),
            )
        else:
            self._db.execute(
                "INSERT OR REPLACE INTO accounts (lease, body, consumer_sig, provider_sig)"
                " VALUES (?, ?, ?, ?)",
                (str(acct.lease_id), body, signatures[0], signatures[1]),
            )

    def signatures(self, lease_id: int) -> tuple[bytes, bytes]:
        row = self._db.execute(
            "SELECT consumer_sig, provider_sig FROM accounts WHERE lease = ?", (str(lease_id),)
        ).fetchone()
        return (b"", b"") if row is None else (bytes(row[0]), bytes(row[1]))

    def cosigned(self, lease_id: int) -> CoSignedUsage | None:
        """The latest usage both sides signed for the lease (None before the first)."""
        acct = self.get(lease_id)
        if acct is None or acct.state.revision == 0:
            return None
        consumer, provider = self.signatures(lease_id)
        return CoSignedUsage(
            Usage(lease_id, acct.state.revision, acct.state.cumulative), consumer, provider
        )

    def lease_ids(self) -> list[int]:
        return [int(r[0]) for r in self._db.execute("SELECT lease FROM accounts")]
