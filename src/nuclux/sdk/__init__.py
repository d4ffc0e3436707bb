"""The consumer SDK: store, read, share and audit files on Nuclux (``StorageClient``).

Layering: the SDK is where the network, the chain, files, threads and randomness meet the
pure formats of ``nuclux.core``. Modules: ``client`` (the API), ``writing`` / ``upload``
(storing), ``reading`` / ``download`` (reading), ``leases`` (per-provider leases and
placement), ``index`` (the account's file index), ``revisions`` (co-signed lease state),
``audit``, ``peers`` (providers and connections), ``nodeapi`` (object ids, node endpoints).
"""

from nuclux.sdk.audit import AuditReport, ShareAudit
from nuclux.sdk.client import FileEntry, RemoveResult, StorageClient
from nuclux.sdk.download import BlockFault
from nuclux.sdk.reading import GetResult
from nuclux.sdk.settings import NotEnoughProviders, StorageSettings

__all__ = [
    "AuditReport",
    "BlockFault",
    "FileEntry",
    "GetResult",
    "NotEnoughProviders",
    "RemoveResult",
    "ShareAudit",
    "StorageClient",
    "StorageSettings",
]
