"""Tunables of the storage SDK, and the errors only the SDK raises.

Every figure here is a default a caller may override with ``StorageSettings(...)``; tests use
small leases (units of 1 MiB) and short timeouts, a user keeps the defaults.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from nuclux.core.units import GIB
from nuclux.errors import NucluxError, UsageError

Progress = Callable[[int, int], None]
"""``progress(done_bytes, total_bytes)``, called from the event loop as data moves."""

MIB = 1 << 20
SEGMENT_BLOCKS_BUDGET = 16 * MIB  # the n blocks of one segment being uploaded, at most
MAX_DEFAULT_N = 8
INLINE_COPIES = 3  # a packed file's manifest lives on up to 3 leases (distinct providers)
INDEX_COPIES = 5  # the file index: any 4 providers of the account (n - k at 4-of-8) may fail


def manifest_copies(k: int, n: int) -> int:
    """How many of a spread file's providers keep its manifest: at least 3, and enough that
    the manifest survives whenever the shares do (any n - k providers lost)."""
    return min(n, max(INLINE_COPIES, n - k + 1))


class NotEnoughProviders(NucluxError):
    """Fewer usable providers than a file needs (raised before any money moves)."""

    exit_code: ClassVar[int] = 1


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """How the SDK places, moves and checks data."""

    # erasure block: a segment is k * block_bytes - 16 bytes. 2 MiB halves the requests (and
    # the nodes' CPU per MiB) of 1 MiB; 4 MiB saved little more and cost memory (docs/storage.md).
    # The largest block: wide codes get smaller ones (``block_bytes_for``)
    block_bytes: int = 2 * MIB
    segments_in_flight: int = 3  # bounded memory: segments prepared but not yet stored
    unit_bytes: int = GIB  # a storage lease reserves units of this many bytes
    reserve_bytes: int = GIB  # a new lease reserves at least this much (reused by later files)
    default_days: float = 30.0
    request_timeout: float = 30.0  # one block PUT or GET before the provider counts as failed
    risk_days: float = 3.0  # ls flags a file whose lease ends sooner than this
    lag_timeout: float = 10.0  # an upload stalled this long on <= n-k providers replaces them
    probe_timeout: float = 5.0  # provider info probes while placing
    hedge_delay: float = 1.0  # a block not answered by then is asked of another provider
    manifest_grace: float = 0.5  # after the first manifest copy, wait this long for newer ones
    accept_timeout: float = 120.0  # a new lease must be accepted by its provider within this
    poll_interval: float = 0.5  # while waiting for lease acceptance
    max_replacements: int = 8  # providers swapped in during one upload before giving up
    audit_samples: int = 4  # segments sampled per audit
    term_slack: float = 0.1  # a lease with >= (1 - slack) of the wanted term left is reused
    directory_ttl: float = 60.0  # registry entries, provider probes and chain time are reused
    timestamps: bool = True  # anchor the manifests written, once per flush
    writes_in_flight: int = 128  # packed files' manifest writes running in the background
    behind_linger: float = 0.05  # a batch of those waits this long for company (seconds)
    # renewal (sdk/renewal.py): leases ending within renew_days (None: risk_days) are extended
    renew_days: float | None = None
    renew_budget: int | None = None  # wei: the most renewals may ever commit; None: no cap set
    renew_record: str | None = None  # file counting what renewals spent (None: this client)
    # removals a provider did not answer, done by a later repair (None: this client's life)
    leftovers_record: str | None = None
    # a directory keeping the file index's pages this device has seen (None: memory only)
    index_cache: str | None = None
    # new leases and replacements through auctions (nuclux.sdk.market); False: open leases
    # directly at providers' posted prices
    use_market: bool = True
    # share blocks on one block stream per lease (spec/node-api.md, "Block streams") where
    # the node offers them; False: every block is its own HTTP request
    block_streams: bool = True

    def block_bytes_for(self, n: int) -> int:
        """The block size of a new file with ``n`` shares: ``block_bytes``, halved until a
        segment's ``n`` blocks fit in ``SEGMENT_BLOCKS_BUDGET`` (at least 1 KiB), so an
        upload's memory (segments in flight x n blocks) does not grow with the code's width:
        RS(4,8) 2 MiB blocks, RS(10,16) 1 MiB, RS(20,32) 512 KiB."""
        block = self.block_bytes
        while block > 1024 and n * block > SEGMENT_BLOCKS_BUDGET:
            block //= 2
        return block

    def __post_init__(self) -> None:
        b = self.block_bytes
        if b < 1024 or b & (b - 1):
            raise UsageError("block_bytes must be a power of two of at least 1024")
        if self.segments_in_flight < 1:
            raise UsageError("at least one segment must be in flight")
        if self.unit_bytes <= 0 or self.reserve_bytes < 0:
            raise UsageError("unit_bytes must be positive and reserve_bytes non-negative")
        for name in ("request_timeout", "probe_timeout", "hedge_delay", "accept_timeout"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name} must be positive")
        window = self.renew_days
        if window is not None and not (0 < window < math.inf):
            raise UsageError(f"renew_days must be a positive number of days, not {window}")
        if self.renew_budget is not None and self.renew_budget < 0:
            raise UsageError("renew_budget must be a non-negative amount of wei")
        if self.renew_budget is not None and not self.renew_record:
            raise UsageError(
                "renew_budget needs renew_record: the file that counts what renewals spent"
            )

    @property
    def renew_window(self) -> float:
        """Days before its end within which a lease is renewed (``renew_days``, else
        ``risk_days``: the window in which ``ls`` calls its files at risk)."""
        return self.risk_days if self.renew_days is None else self.renew_days

    def epochs_for(self, days: float, epoch_length: int) -> int:
        """Lease epochs covering ``days`` (at least one)."""
        if not days > 0 or not math.isfinite(days):
            raise UsageError(f"the storage term must be a positive number of days, not {days}")
        return max(1, math.ceil(days * 86_400 / epoch_length))

    def units_for(self, need_bytes: int) -> int:
        """Units a new lease reserves to hold ``need_bytes`` (and more files after it)."""
        return max(1, -(-max(need_bytes, self.reserve_bytes) // self.unit_bytes))


def choose_code(k: int | None, n: int | None, available: int) -> tuple[int, int]:
    """(k, n) from the caller's choices and the number of usable providers: by default
    ``n = min(8, available)`` and ``k = n // 2``. ``NotEnoughProviders`` if ``n`` cannot be met."""
    if n is not None and n < 2:
        raise UsageError(f"n must be at least 2 (got {n})")
    if k is not None and k < 1:
        raise UsageError(f"k must be at least 1 (got {k})")
    if n is None:
        n = max(2, min(MAX_DEFAULT_N, available))
        if k is not None:
            n = max(n, k + 1)
    if k is None:
        k = max(1, n // 2)
    if not 1 <= k < n <= 64:
        raise UsageError(f"erasure coding needs 1 <= k < n <= 64, not k={k}, n={n}")
    if available < n:
        raise NotEnoughProviders(
            f"{k}-of-{n} coding needs {n} providers but only {available} can take the file"
            " (active, within --max-price, with free capacity); nothing was paid:"
            " lower --n or raise --max-price"
        )
    return k, n


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception to report from a task group: its first Nuclux error if any (the others
    are usually cancellations or consequences), else its first exception."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        e = stack.pop(0)
        if isinstance(e, BaseExceptionGroup):
            stack[:0] = list(e.exceptions)
        else:
            leaves.append(e)
    for e in leaves:
        if isinstance(e, NucluxError):
            return e
    return leaves[0]
