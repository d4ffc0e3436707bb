"""``nuclux.core`` stays pure: no module in it imports anything that does I/O or hides time
or randomness. The check reads the source (it does not trust runtime state)."""

from __future__ import annotations

import ast
from pathlib import Path

import nuclux.core

FORBIDDEN = {
    "asyncio",
    "socket",
    "ssl",
    "web3",
    "eth_tester",
    "os",
    "time",
    "random",
    "secrets",
    "subprocess",
    "threading",
    "multiprocessing",
    "select",
    "selectors",
    "shutil",
    "tempfile",
    "sqlite3",
    "urllib",
    "http",
    "requests",
    "aiohttp",
    "pathlib",
    "io",
    "signal",
    "datetime",
    "uuid",
    "platformdirs",
    "nuclux.chain",
    "nuclux.net",
    "nuclux.node",
    "nuclux.sdk",
    "nuclux.cli",
    "nuclux.keys",
    "nuclux.config",
}


def impure_imports(source: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            names = ["__import__"]
        for name in names:
            if name == "__import__" or any(
                name == bad or name.startswith(bad + ".") for bad in FORBIDDEN
            ):
                found.append(name)
    return found


def core_sources() -> list[Path]:
    root = Path(nuclux.core.__file__).parent
    return sorted(root.rglob("*.py"))


def test_core_imports_nothing_impure() -> None:
    files = core_sources()
    assert len(files) >= 3
    for path in files:
        bad = impure_imports(path.read_text())
        assert not bad, f"{path.name} imports {bad}: nuclux.core must stay pure"


def test_the_check_catches_impurity() -> None:
    assert impure_imports("import os\n") == ["os"]
    assert impure_imports("from time import monotonic\n") == ["time"]
    assert impure_imports("import asyncio.tasks\n") == ["asyncio.tasks"]
    assert impure_imports("from nuclux.chain import Ledger\n") == ["nuclux.chain"]
    assert impure_imports("x = __import__('socket')\n") == ["__import__"]
    assert impure_imports("import enum\nfrom dataclasses import dataclass\n") == []
