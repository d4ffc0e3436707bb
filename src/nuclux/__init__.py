"""Nuclux: a decentralized cloud of leased storage, compute and bandwidth paid in NuxCoin."""

__version__ = "0.1.0"
