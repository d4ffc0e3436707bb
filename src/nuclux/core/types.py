"""Identifiers, amounts and resource classes shared by every layer.

Amounts are integers in the token's smallest unit (NuxCoin has 18 decimals, like ether).
Prices are per class unit: storage per GiB-epoch, compute per million fuel, bandwidth per GiB.
"""

from __future__ import annotations

import enum
from decimal import Decimal, InvalidOperation, localcontext
from typing import NewType

Wei = NewType("Wei", int)
LeaseId = NewType("LeaseId", int)
Address = NewType("Address", str)

NUX_DECIMALS = 18
ONE_NUX = Wei(10**NUX_DECIMALS)


class ResourceClass(enum.IntEnum):
    """Resource classes, numbered as in the contracts."""

    STORAGE = 0
    COMPUTE = 1
    BANDWIDTH = 2

    @property
    def price_unit(self) -> str:
        return _PRICE_UNITS[self]

    @classmethod
    def parse(cls, text: str) -> ResourceClass:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(c.name.lower() for c in cls)
            raise ValueError(f"unknown resource class {text!r}; expected one of {names}") from None


_PRICE_UNITS = {
    ResourceClass.STORAGE: "GiB-epoch",
    ResourceClass.COMPUTE: "million fuel",
    ResourceClass.BANDWIDTH: "GiB",
}


def parse_nux(text: str) -> Wei:
    """Parse a decimal NuxCoin amount ("1.5", "2") or a wei amount ("1000wei") to wei."""
    t = text.strip().lower().replace("_", "")
    if t.endswith("wei"):
        digits = t[:-3].strip()
        if not digits.isdigit():
            raise ValueError(f"invalid wei amount {text!r}")
        return Wei(int(digits))
    t = t.removesuffix("nux").strip()
    if len(t) > 100:
        raise ValueError("amount too long")
    with localcontext() as ctx:
        ctx.prec = 200  # exact for any amount a 256-bit token can hold
        try:
            d = Decimal(t)
        except InvalidOperation:
            raise ValueError(
                f"invalid NuxCoin amount {text!r}; write e.g. 1.5 or 1000wei"
            ) from None
        if not d.is_finite() or d < 0:
            raise ValueError(f"invalid NuxCoin amount {text!r}: must be a non-negative number")
        wei = d * ONE_NUX
        if wei != wei.to_integral_value():
            raise ValueError(f"{text!r} has more than {NUX_DECIMALS} decimal places")
        return Wei(int(wei))


def format_nux(amount: int) -> str:
    """Format wei as NuxCoin with up to 18 decimals, trailing zeros trimmed."""
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), ONE_NUX)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:018d}".rstrip("0")
