"""The ``nuclux`` command line: ``main.app`` (typer) and ``main.run`` (entry point).

Importing it first defers the BLS half of ``py_ecc``, which the command never uses, so each
start is about 0.3 s shorter (``nuclux.lazyimports``)."""

from nuclux.lazyimports import defer_bls

defer_bls()
