"""Compiled contract artifacts committed under the package (no Node needed at runtime).

``scripts/compile-contracts`` writes them; ``tests/chain/test_artifacts.py`` fails when they
are stale against ``contracts/``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from eth_utils.crypto import keccak

CONTRACT_NAMES = (
    "NuxCoin",
    "KeyDirectory",
    "ProviderRegistry",
    "LeaseManager",
    "AuctionHouse",
    "StorageSettlement",
    "CumulativeSettlement",
    "TimestampAnchor",
    "TestFaultModule",
)


@dataclass(frozen=True, slots=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    name: str
    input_types: tuple[str, ...]
    input_names: tuple[str, ...]


@functools.cache
def load(name: str) -> Artifact:
    if name not in CONTRACT_NAMES:
        raise KeyError(f"no artifact named {name!r}")
    text = resources.files("nuclux.chain.artifacts").joinpath(f"{name}.json").read_text()
    raw = json.loads(text)
    return Artifact(name, raw["abi"], raw["bytecode"], raw["deployedBytecode"])


def _signature_type(param: dict[str, Any]) -> str:
    t = str(param["type"])
    if t.startswith("tuple"):
        inner = ",".join(_signature_type(c) for c in param["components"])
        return f"({inner}){t[5:]}"
    return t


@functools.cache
def error_selectors() -> dict[bytes, ErrorSpec]:
    """Every custom error of every contract (and its libraries), by 4-byte selector."""
    out: dict[bytes, ErrorSpec] = {}
    for name in CONTRACT_NAMES:
        for item in load(name).abi:
            if item.get("type") != "error":
                continue
            types = tuple(_signature_type(p) for p in item["inputs"])
            sig = f"{item['name']}({','.join(types)})"
            names = tuple(str(p["name"]) for p in item["inputs"])
            out[keccak(text=sig)[:4]] = ErrorSpec(item["name"], types, names)
    return out
