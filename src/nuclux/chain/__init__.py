"""The only code that talks to web3: connections, transaction queues, domain methods.

``ChainConnection`` reaches the embedded EVM or any JSON-RPC endpoint; ``deploy`` installs the
contracts and returns a ``Deployment``; ``Ledger`` offers the domain methods for one account
(balances, transfers, provider registry, leases, events), sending through that account's
``TxQueue``.
"""

from nuclux.chain.connection import ChainConnection
from nuclux.chain.deployment import Deployment, DeployParams, deploy
from nuclux.chain.ledger import Ledger, ProviderInfo

__all__ = ["ChainConnection", "DeployParams", "Deployment", "Ledger", "ProviderInfo", "deploy"]
