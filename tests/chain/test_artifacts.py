"""The committed ABI and bytecode match the Solidity sources, and fit the size limit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from nuclux.chain.abi import CONTRACT_NAMES, error_selectors, load

ROOT = Path(__file__).resolve().parents[2]
SIZE_LIMIT = 24_576


def test_artifacts_are_current() -> None:
    node = shutil.which("node")
    assert node, (
        "Node.js is needed to recompile the contracts (scripts/bootstrap installs npm deps)"
    )
    proc = subprocess.run(
        [node, str(ROOT / "scripts" / "compile-contracts.mjs"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_every_contract_is_far_below_the_size_limit() -> None:
    for name in CONTRACT_NAMES:
        runtime = (len(load(name).deployed_bytecode) - 2) // 2
        assert 0 < runtime < SIZE_LIMIT * 0.75, (name, runtime)


def test_custom_errors_are_known_by_selector() -> None:
    names = {spec.name for spec in error_selectors().values()}
    for expected in ("BadState", "NotConsumer", "ProviderNotServing", "ERC20InsufficientBalance"):
        assert expected in names
