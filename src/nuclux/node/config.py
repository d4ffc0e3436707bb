"""A node's configuration: ``node.toml`` in its data directory.

``nuclux node init`` writes it once; ``nuclux node run`` reads it. It names the provider
(owner address), the operator account (the only key the daemon holds, in ``keys/``), where to
listen and what to announce, what is offered and at what posted price, and the chain.

A posted price (``[offer] price_storage`` and so on) is an amount of NUX per unit, or
``"auto"`` (also what a missing key means): the node posts the market's on-chain reference
price of the class, never below ``[market] cost_*`` when one is set, and follows it when it
moves by more than ``[market] price_threshold`` (``nuclux.node.posted_prices``).

Layout of a data directory::

    node.toml          this file
    keys/              the operator keystore (keystore v3)
    tls/cert.pem       the self-signed TLS certificate (fingerprint registered on chain)
    tls/key.pem        its private key (0600)
    store/             the shard store
    chain-view.sqlite3 the follower's local view of the chain
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tomli_w

from nuclux.core.types import format_nux, parse_nux
from nuclux.core.units import GIB, parse_size
from nuclux.errors import ConfigError, UsageError

CONFIG_NAME = "node.toml"
AUTO = "auto"  # a posted price that follows the market's reference price
PRICE_KEYS = ("price_storage", "price_compute", "price_egress")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    data_dir: Path
    owner: str
    operator_account: str
    endpoint: str
    listen_host: str
    listen_port: int
    storage_bytes: int
    compute_units: int
    egress_bytes: int
    price_storage: int
    price_compute: int
    price_egress: int
    stake: int
    chain: str
    deployment: Path | None
    grace_seconds: int = 3600
    max_object_bytes: int = 4 << 30
    # test-only: forge every compute result (a lying provider), from [testing] in node.toml
    corrupt_results: bool = False
    # [market]: the bid agent's true cost per unit (None: the posted price), an optional bid
    # script, seconds between polls of the auction house (0 or less: do not bid)
    cost_storage: int | None = None
    cost_compute: int | None = None
    cost_egress: int | None = None
    bid_script: Path | None = None
    bid_poll: float = 0.15
    # posted prices that follow the market's reference price ("auto"; the price_* field is 0
    # then), how far the reference may move before the node updates its registry entry
    # (a fraction of the posted price) and how often it looks (seconds)
    price_auto: tuple[bool, bool, bool] = (False, False, False)
    price_threshold: float = 0.05
    price_poll: float = 30.0

    @property
    def costs(self) -> tuple[int, int, int]:
        """The bid agent's cost per unit of each class (truthful bids), wei: the configured
        cost, else the configured posted price (0 for an "auto" price: see ``floors``)."""
        return self.costs_given(self.prices)

    def costs_given(self, posted: tuple[int, int, int]) -> tuple[int, int, int]:
        """The costs when the node posts ``posted``: the configured cost, else the price."""
        return (
            posted[0] if self.cost_storage is None else self.cost_storage,
            posted[1] if self.cost_compute is None else self.cost_compute,
            posted[2] if self.cost_egress is None else self.cost_egress,
        )

    @property
    def floors(self) -> tuple[int | None, int | None, int | None]:
        """The least an "auto" price may be per class: the configured cost, if any."""
        return (self.cost_storage, self.cost_compute, self.cost_egress)

    @property
    def bids_path(self) -> Path:
        return self.data_dir / "bids.sqlite3"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def keystore_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def view_path(self) -> Path:
        return self.data_dir / "chain-view.sqlite3"

    @property
    def capacity(self) -> tuple[int, int, int]:
        """Capacities as the registry records them: whole GiB, slots, whole GiB."""
        return (self.storage_bytes // GIB, self.compute_units, self.egress_bytes // GIB)

    @property
    def prices(self) -> tuple[int, int, int]:
        return (self.price_storage, self.price_compute, self.price_egress)

    def to_toml(self) -> dict[str, Any]:
        return {
            "node": {
                "owner": self.owner,
                "operator_account": self.operator_account,
                "endpoint": self.endpoint,
                "listen": f"{self.listen_host}:{self.listen_port}",
                "grace_seconds": self.grace_seconds,
                "max_object_bytes": self.max_object_bytes,
            },
            "offer": {
                "storage_bytes": self.storage_bytes,
                "compute_units": self.compute_units,
                "egress_bytes": self.egress_bytes,
                "price_storage": self._price_toml(0, self.price_storage),
                "price_compute": self._price_toml(1, self.price_compute),
                "price_egress": self._price_toml(2, self.price_egress),
                "stake": format_nux(self.stake),
            },
            "chain": {
                "rpc": self.chain,
                **({"deployment": str(self.deployment)} if self.deployment else {}),
            },
            "market": self._market_toml(),
            **({"testing": {"corrupt_results": True}} if self.corrupt_results else {}),
        }

    def _price_toml(self, cls: int, price: int) -> str:
        return AUTO if self.price_auto[cls] else format_nux(price)

    def _market_toml(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "bid_poll": self.bid_poll,
            "price_threshold": self.price_threshold,
            "price_poll": self.price_poll,
        }
        for name in ("cost_storage", "cost_compute", "cost_egress"):
            value = getattr(self, name)
            if value is not None:
                out[name] = format_nux(value)
        if self.bid_script is not None:
            out["bid_script"] = str(self.bid_script)
        return out

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out["data_dir"] = str(self.data_dir)
        out["deployment"] = str(self.deployment) if self.deployment else None
        out["bid_script"] = str(self.bid_script) if self.bid_script else None
        return out


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint)
    if parts.scheme != "https" or not parts.hostname or parts.port is None:
        raise UsageError(f"endpoint {endpoint!r} must look like https://HOST:PORT")
    if parts.path not in ("", "/") or parts.query:
        raise UsageError(f"endpoint {endpoint!r} must have no path or query")
    return parts.hostname, parts.port


def save_config(cfg: NodeConfig, *, overwrite: bool = False) -> Path:
    path = cfg.data_dir / CONFIG_NAME
    if path.exists() and not overwrite:
        raise UsageError(f"{path} exists: this data directory already holds a node")
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cfg.data_dir, prefix=".node-")
    with os.fdopen(fd, "wb") as fh:
        tomli_w.dump(cfg.to_toml(), fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_config(data_dir: Path) -> NodeConfig:
    path = data_dir / CONFIG_NAME
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no node at {data_dir}: run `nuclux node init` first") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    try:
        node, offer, chain = raw["node"], raw["offer"], raw["chain"]
        host, _, port = str(node["listen"]).rpartition(":")
        dep = chain.get("deployment")
        prices = [_price(offer, key) for key in PRICE_KEYS]
        return NodeConfig(
            data_dir=data_dir,
            owner=str(node["owner"]),
            operator_account=str(node["operator_account"]),
            endpoint=str(node["endpoint"]),
            listen_host=host,
            listen_port=int(port),
            storage_bytes=_size(offer["storage_bytes"]),
            compute_units=int(offer["compute_units"]),
            egress_bytes=_size(offer["egress_bytes"]),
            price_storage=prices[0] or 0,
            price_compute=prices[1] or 0,
            price_egress=prices[2] or 0,
            price_auto=(prices[0] is None, prices[1] is None, prices[2] is None),
            stake=parse_nux(str(offer["stake"])),
            chain=str(chain["rpc"]),
            deployment=Path(dep) if dep else None,
            grace_seconds=int(node.get("grace_seconds", 3600)),
            max_object_bytes=int(node.get("max_object_bytes", 4 << 30)),
            corrupt_results=bool(raw.get("testing", {}).get("corrupt_results", False)),
            **_market(raw.get("market", {}), data_dir),
        )
    except (KeyError, TypeError, ValueError, UsageError) as exc:
        raise ConfigError(f"invalid {path}: {exc}") from exc


def _market(section: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """The [market] section: costs in NUX per unit, ``bid_script`` (relative to the data
    directory unless absolute), ``bid_poll`` seconds."""
    if not isinstance(section, dict):
        raise ValueError("[market] must be a table")
    unknown = set(section) - {
        "cost_storage",
        "cost_compute",
        "cost_egress",
        "bid_script",
        "bid_poll",
        "price_threshold",
        "price_poll",
    }
    if unknown:
        raise ValueError(f"unknown [market] keys: {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for name in ("cost_storage", "cost_compute", "cost_egress"):
        if name in section:
            out[name] = parse_nux(str(section[name]))
            if out[name] < 1:
                raise ValueError(f"[market] {name} must be at least 1 wei per unit")
    if "bid_script" in section:
        out["bid_script"] = data_dir / Path(str(section["bid_script"]))
    if "bid_poll" in section:
        out["bid_poll"] = float(section["bid_poll"])
    if "price_threshold" in section:
        out["price_threshold"] = float(section["price_threshold"])
        if not 0 <= out["price_threshold"] < 1:
            raise ValueError("[market] price_threshold is a fraction: 0 <= it < 1")
    if "price_poll" in section:
        out["price_poll"] = float(section["price_poll"])
        if not out["price_poll"] > 0:
            raise ValueError("[market] price_poll must be positive (seconds)")
    return out


def _price(offer: dict[str, Any], key: str) -> int | None:
    """A posted price in wei, or None for "auto" (the key missing means "auto" too)."""
    value = offer.get(key, AUTO)
    if str(value).strip().lower() == AUTO:
        return None
    return parse_nux(str(value))


def _size(value: object) -> int:
    return value if isinstance(value, int) else parse_size(str(value))


def identity_paths(cfg: NodeConfig) -> tuple[Path, Path]:
    """Where the node's TLS certificate and key are kept."""
    return cfg.tls_dir / "cert.pem", cfg.tls_dir / "key.pem"
