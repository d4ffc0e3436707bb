"""Startup trims for the ``nuclux`` command: a dependency's import that Nuclux never uses,
deferred until something does.

``eth_account`` (every command that signs) imports ``eth_keyfile``, whose module body imports
``py_ecc.bls`` and ``py_ecc.bls12_381`` for BLS keystores (EIP-2335), which Nuclux never
reads or writes. Those two imports build pairing tables: about 0.3 s of the 1.3 s the CLI
spends importing. ``defer_bls`` puts stand-ins for the two modules in ``sys.modules`` first:

- the names ``eth_keyfile`` takes from them are given without loading anything: the BLS
  ciphersuite as a proxy that loads ``py_ecc.bls`` the first time it is used, and the
  curve's order as its value (``BLS12_381_ORDER``, checked against py_ecc by a test);
- any other use of either module (an attribute, a submodule such as
  ``py_ecc.bls.hash_to_curve``, which the embedded EVM's precompiles import) loads the real
  module in its place, so code that needs it gets exactly what it would have.

It does nothing once either module is loaded, and nothing else is deferred.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any, Final

BLS12_381_ORDER: Final = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001


class _Deferred(types.ModuleType):
    """Stands in for module ``name`` until something other than ``given`` is asked of it."""

    def __init__(self, name: str, given: dict[str, Any]) -> None:
        super().__init__(name)
        self.__dict__["_given"] = given
        spec = importlib.util.find_spec(name)  # imports the parent package (py_ecc: lazy)
        if spec is not None and spec.submodule_search_locations is not None:
            # a package: its submodules import as usual, and ``from ... import`` of a given
            # name does not look for a submodule of that name
            self.__path__ = list(spec.submodule_search_locations)

    def __getattr__(self, attr: str) -> Any:
        given = self.__dict__["_given"]
        if attr in given:
            return given[attr]
        return getattr(_load(self.__name__), attr)


class _LazyAttribute:
    """``module.attr``, loaded the first time any of its attributes is used."""

    def __init__(self, module: str, attr: str) -> None:
        self._where = (module, attr)

    def __getattr__(self, name: str) -> Any:
        module, attr = self._where
        return getattr(getattr(_load(module), attr), name)


def _load(name: str) -> types.ModuleType:
    """The real module ``name``, in place of its stand-in."""
    current = sys.modules.get(name)
    if isinstance(current, _Deferred):
        del sys.modules[name]
    return importlib.import_module(name)


def defer_bls() -> None:
    """Put the stand-ins in place, unless py_ecc's BLS modules are loaded already."""
    if "py_ecc.bls" in sys.modules or "py_ecc.bls12_381" in sys.modules:
        return
    sys.modules["py_ecc.bls"] = _Deferred(
        "py_ecc.bls", {"G2ProofOfPossession": _LazyAttribute("py_ecc.bls", "G2ProofOfPossession")}
    )
    sys.modules["py_ecc.bls12_381"] = _Deferred(
        "py_ecc.bls12_381", {"curve_order": BLS12_381_ORDER}
    )
