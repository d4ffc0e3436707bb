"""Which sources a download asks first: answering before silent, data shares before parity
while they are not clearly slower (a parity block means a Reed-Solomon decode), slow last."""

from __future__ import annotations

import os
from concurrent.futures import Executor
from typing import cast

from nuclux.core.erasure import Layout
from nuclux.core.segment import SegmentCipher
from nuclux.net.client import NodeClient
from nuclux.sdk.download import Downloader, Source
from nuclux.sdk.settings import StorageSettings


def downloader(latencies: list[float]) -> Downloader:
    sources = [
        Source(i, f"p{i}", i + 1, cast(NodeClient, None), bytes(32), latency=lat)
        for i, lat in enumerate(latencies)
    ]
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        return Downloader(
            layout=Layout(4, 8, 1 << 20),
            size=10 << 20,
            cipher=SegmentCipher(bytes(32), bytes(32)),
            file_id=bytes(16),
            sources=sources,
            fd=fd,
            settings=StorageSettings(),
            executor=cast(Executor, None),  # ranking runs nothing on it
        )
    finally:
        os.close(fd)


def first_k(d: Downloader) -> list[int]:
    return [s.share for s in d._ranked()[: d.layout.k]]


def test_data_shares_first_while_not_clearly_slower() -> None:
    d = downloader([0.30, 0.31, 0.29, 0.30, 0.20, 0.21, 0.20, 0.22])
    assert first_k(d) == [2, 0, 3, 1]  # parity 0.2 s, data 0.3 s: within 2x + slack


def test_a_clearly_slower_data_share_gives_way_to_parity() -> None:
    d = downloader([0.10, 0.10, 0.10, 0.90, 0.10, 0.11, 0.12, 0.13])
    assert first_k(d) == [0, 1, 2, 4]


def test_slow_sources_go_last_whatever_their_share() -> None:
    d = downloader([0.10] * 8)
    d.sources[0].slow = True
    ranked = [s.share for s in d._ranked()]
    assert ranked[:4] == [1, 2, 3, 4]
    assert ranked[-1] == 0
