"""Malformed and unsigned requests never crash the node or change its state."""

from __future__ import annotations

import base64
import random

import aiohttp

from nuclux.net.tls import client_ssl_context
from tests.node.conftest import Served

METHODS = ["GET", "PUT", "DELETE", "POST", "HEAD", "PATCH"]


def junk_path(rng: random.Random, lease: int) -> str:
    pieces = [
        f"/v1/leases/{lease}/objects/{rng.randbytes(rng.randint(0, 70)).hex()}",
        f"/v1/leases/{rng.choice(['0', '-1', 'x', '1' * 90, str(lease)])}/objects/zz",
        f"/v1/leases/{lease}/objects?limit={rng.choice(['0', '-5', 'a', '100000'])}",
        f"/v1/leases/{lease}/objects?after={rng.choice(['zz', 'ABC', '0'])}",
        "/v1/" + "a" * rng.randint(0, 2000),
        f"/v1/leases/{lease}",
        f"/v1/leases/{lease}/shares/{rng.choice(['zz', '00' * 16, 'AB' * 16])}/"
        f"{rng.choice(['0', '01', '256', 'x', '-1'])}",
        f"/v1/leases/{lease}/revisions",
        f"/v1/leases/{lease}/revisions/{rng.choice(['latest', '1', ''])}",
        "/v2/info",
    ]
    return rng.choice(pieces)


def junk_headers(rng: random.Random) -> dict[str, str]:
    h: dict[str, str] = {}
    if rng.random() < 0.7:
        raw = rng.randbytes(rng.randint(0, 140))
        scheme = rng.choice(["Nuclux v1 ", "Nuclux v2 ", "Bearer ", ""])
        h["Authorization"] = scheme + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    if rng.random() < 0.5:
        h["X-Nuclux-Content-SHA256"] = rng.choice(["", "zz", rng.randbytes(32).hex(), "0" * 63])
    if rng.random() < 0.3:
        h["X-Nuclux-Capability"] = base64.urlsafe_b64encode(
            rng.randbytes(rng.randint(0, 400))
        ).decode()
    if rng.random() < 0.3:
        h["Range"] = rng.choice(["bytes=5-1", "bytes=-0", "bytes=a-b", "items=0-1", "bytes=0-"])
    return h


async def test_random_bad_requests_get_clear_4xx_and_change_nothing(served: Served) -> None:
    s = served
    async with s.client() as c:
        await c.put(s.lease, b"keep", b"precious")
    before = await s.service.store.capacity()
    rng = random.Random(20261123)
    connector = aiohttp.TCPConnector(ssl=client_ssl_context(s.identity.fingerprint))
    async with aiohttp.ClientSession(connector=connector) as raw:
        for _ in range(300):
            method = rng.choice(METHODS)
            url = s.url + junk_path(rng, s.lease)
            body = rng.randbytes(rng.randint(0, 3000)) if method in ("PUT", "POST") else None
            async with raw.request(method, url, headers=junk_headers(rng), data=body) as resp:
                assert 400 <= resp.status < 500, (method, url, resp.status)
                if method != "HEAD":
                    err = (await resp.json())["error"]
                    assert err["code"]
                    assert err["message"]
    after = await s.service.store.capacity()
    assert (after.used, after.stored) == (before.used, before.stored)
    async with s.client() as c:
        assert await c.get(s.lease, b"keep") == b"precious"
