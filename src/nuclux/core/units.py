"""Sizes and durations as people write them: "50GiB", "1TiB", "512MB", "60s", "2h".

Binary suffixes (KiB, MiB, GiB, TiB) are powers of 1024, decimal ones (kB, MB, GB, TB) powers
of 1000; a bare number is bytes. Storage capacity on chain is in whole GiB; ``gib_floor``
converts.
"""

from __future__ import annotations

import re

GIB = 1 << 30

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "p": 1000**5,
    "pb": 1000**5,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
    "pib": 1 << 50,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400, "w": 604_800}
MAX_SIZE = 1 << 70


def parse_size(text: str) -> int:
    """Bytes in ``text``; ``ValueError`` with a readable message otherwise."""
    m = _SIZE.match(text)
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"invalid size {text!r}; write e.g. 50GiB, 1TiB, 512MB or 4096")
    number, unit = m.group(1), _SIZE_UNITS[m.group(2).lower()]
    whole, _, frac = number.partition(".")
    value = (
        int(whole) * unit + (int(frac) * unit) // (10 ** len(frac)) if frac else int(whole) * unit
    )
    if value > MAX_SIZE:
        raise ValueError(f"size {text!r} is unreasonably large")
    return value


def parse_duration(text: str) -> int:
    """Seconds in ``text`` ("90", "60s", "5m", "2h", "7d")."""
    m = _SIZE.match(text)
    if not m or "." in m.group(1) or m.group(2).lower() not in _DURATION_UNITS:
        raise ValueError(f"invalid duration {text!r}; write e.g. 60s, 5m, 2h or 7d")
    return int(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]


def gib_floor(size: int) -> int:
    """Whole GiB in ``size`` bytes (what the registry records as storage capacity)."""
    return size // GIB


def format_size(size: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
