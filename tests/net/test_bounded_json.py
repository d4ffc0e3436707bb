"""Peers' JSON is decoded with a nesting bound: py-evm and py_ecc raise the interpreter's
recursion limit to 100,000 at import, so deep nesting would crash the decoder, not raise."""

from __future__ import annotations

import sys

import pytest

from nuclux.errors import UsageError
from nuclux.net.client import bounded_json


def test_bounded_json_decodes_and_refuses_deep_or_broken_input() -> None:
    assert bounded_json(b'{"a": [[1, "[[[[]"], {"b": null}]}') == {"a": [[1, "[[[[]"], {"b": None}]}
    assert bounded_json(b"[" * 4 + b"]" * 4, max_depth=4) == [[[[]]]]
    assert sys.getrecursionlimit() >= 1000
    for bad in (b"[" * 100_000, b"{" * 5000, b"[" * 5 + b"]" * 5):
        with pytest.raises(UsageError, match="deeper"):
            bounded_json(bad, max_depth=4)
    for bad in (b"", b"not json", b"\xff", b"[1,"):
        with pytest.raises(UsageError, match="not JSON"):
            bounded_json(bad)
