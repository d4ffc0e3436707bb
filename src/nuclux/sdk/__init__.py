"""The consumer SDK: store, read, share, audit and time-stamp files on Nuclux
(``StorageClient``).

Layering: the SDK is where the network, the chain, files, threads and randomness meet the
pure formats of ``nuclux.core``. Modules: ``client`` (the API), ``writing`` / ``upload`` /
``behind`` (storing), ``reading`` / ``download`` (reading), ``leases`` (per-provider leases
and placement), ``index`` (the account's file index), ``revisions`` (co-signed lease state),
``audit``, ``health`` (for ls), ``timestamps``, ``peers`` (providers and connections),
``nodeapi`` (object ids, block roots), ``settings`` (tunables, ``NotEnoughProviders``);
``compute`` (``ComputeClient``: jobs on leased compute slots).
"""

from nuclux.sdk.audit import AuditReport, ShareAudit
from nuclux.sdk.client import FlushResult, RemoveResult, StorageClient
from nuclux.sdk.compute import ComputeClient, ComputeSettings, JobOutcome, NoMajority
from nuclux.sdk.download import BlockFault
from nuclux.sdk.health import FileEntry
from nuclux.sdk.reading import GetResult
from nuclux.sdk.settings import NotEnoughProviders, StorageSettings
from nuclux.sdk.timestamps import Anchored, Timestamp

__all__ = [
    "Anchored",
    "AuditReport",
    "BlockFault",
    "ComputeClient",
    "ComputeSettings",
    "FileEntry",
    "FlushResult",
    "GetResult",
    "JobOutcome",
    "NoMajority",
    "NotEnoughProviders",
    "RemoveResult",
    "ShareAudit",
    "StorageClient",
    "StorageSettings",
    "Timestamp",
]
