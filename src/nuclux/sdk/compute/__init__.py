"""The consumer's compute SDK: run WASI jobs on leased provider slots (``ComputeClient``).

Modules: ``client`` (the API), ``runner`` (one job: placement, churn, replication),
``leases`` (compute leases: reuse, open, slots, retire, recover), ``directory`` (which
providers to lease from), ``accounts`` (co-signed usage per lease), ``journal`` (the local
job record), ``settings`` (tunables, errors).
"""

from nuclux.sdk.compute.client import ComputeClient, MapItem
from nuclux.sdk.compute.journal import JobEntry
from nuclux.sdk.compute.runner import JobOutcome
from nuclux.sdk.compute.settings import ComputeSettings, NoComputeProviders, NoMajority

__all__ = [
    "ComputeClient",
    "ComputeSettings",
    "JobEntry",
    "JobOutcome",
    "MapItem",
    "NoComputeProviders",
    "NoMajority",
]
