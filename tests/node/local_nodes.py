"""Node configurations for in-process test networks on the embedded chain (used by the node
and SDK tests)."""

from __future__ import annotations

import socket
from pathlib import Path

from nuclux.core.types import ONE_NUX
from nuclux.core.units import GIB
from nuclux.net.tls import NodeIdentity
from nuclux.node.config import NodeConfig, identity_paths, save_config
from tests.chain.world import PRICES, World


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def node_config(tmp: Path, w: World, i: int, host: str = "127.0.0.1") -> NodeConfig:
    """Node ``i``'s configuration, listening on ``host`` (any loopback address: 127.0.X.1
    puts nodes in different /24 networks, as placement sees them)."""
    port = free_port(host)
    cfg = NodeConfig(
        data_dir=tmp / f"node{i}",
        owner=w.providers[i].address,
        operator_account="operator",
        endpoint=f"https://{host}:{port}",
        listen_host=host,
        listen_port=port,
        storage_bytes=4 * GIB,
        compute_units=0,
        egress_bytes=0,
        price_storage=PRICES[0],
        price_compute=0,
        price_egress=0,
        stake=200 * ONE_NUX,
        chain="embedded",
        deployment=None,
        grace_seconds=60,
    )
    save_config(cfg)
    NodeIdentity.generate(cfg.owner).save(*identity_paths(cfg))
    return cfg
