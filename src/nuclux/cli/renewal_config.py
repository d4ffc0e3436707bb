"""The storage settings a CLI command gives its ``StorageClient``: the defaults, plus the
renewal cap from the configuration (key ``renew_budget``) and where its spending is counted.

Every storage command builds its client here, so ``nuclux renew`` and the repair watcher
(``nuclux repair --watch``) share one running budget: ``<data_dir>/renewals/<chain id>-<lease
manager>-<account>.json`` (``nuclux.sdk.spending``), one per account and deployment.
"""

from __future__ import annotations

from pathlib import Path

from nuclux.chain import Ledger
from nuclux.cli.output import Ctx
from nuclux.sdk import StorageSettings


def account_record_path(c: Ctx, ledger: Ledger, kind: str) -> Path:
    """The account's record of ``kind`` (``renewals``, ``leftovers``; ``index-pages`` without
    its suffix is a directory) on this deployment, in the data directory."""
    dep = ledger.deployment
    manager = dep.address("LeaseManager").lower()
    return c.config.data_dir / kind / f"{dep.chain_id}-{manager}-{ledger.address.lower()}.json"


def storage_settings(c: Ctx, ledger: Ledger, *, market: bool = True) -> StorageSettings:
    """``market`` False (``--no-market``) opens new leases at posted prices even when the
    configuration (key ``market``, default true) buys them at auction."""
    return StorageSettings(
        renew_budget=c.config.renew_budget,
        renew_record=str(account_record_path(c, ledger, "renewals")),
        leftovers_record=str(account_record_path(c, ledger, "leftovers")),
        index_cache=str(account_record_path(c, ledger, "index-pages").with_suffix("")),
        use_market=market and c.config.market,
    )
