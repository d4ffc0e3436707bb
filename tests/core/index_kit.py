"""The file index's golden vectors: entries as the JSON files give them."""

from __future__ import annotations

from typing import Any

from nuclux.core.index_entries import IndexEntry
from nuclux.core.types import LeaseId


def entries_from_json(items: list[dict[str, Any]]) -> tuple[IndexEntry, ...]:
    return tuple(
        IndexEntry(
            bytes.fromhex(e["file_id"]),
            e["name"],
            e["size"],
            e["created_at"],
            e["manifest_version"],
            tuple(LeaseId(int(x)) for x in e["locators"]),
            e["healthy_shares"],
        )
        for e in items
    )
