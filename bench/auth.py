"""Per-request signatures or a signed session plus per-request MACs? Measured, as name=value.

    .venv/bin/python -m bench.auth [--requests 20000] [--no-tls]

* ``sign_per_s``: ``sign_request`` + ``encode_authorization`` (the client's cost).
* ``verify_per_s``: the server's whole check of a signed request: ``decode_authorization``,
  ``RequestFields.from_http``, signature recovery, address comparison, freshness and the
  replay guard (``RequestVerifier.verify``).
* ``hmac_per_s``: HMAC-SHA256 of the same canonical message and its constant-time compare.
* ``hmac_verify_per_s``: the same server path as ``verify_per_s`` with the signature
  replaced by that HMAC (what a session design would still do per request).
* ``tls_ceiling_MBps``: ``bench.tls`` (one loopback TLS 1.3 stream, asyncio), and
  ``verify_fraction_1MiB`` / ``hmac_fraction_1MiB``: one verification's time divided by the
  time that ceiling needs to move a 1 MiB chunk.
* ``https_request_us`` (``bench.tls``): one small aiohttp HTTPS request and response, and
  ``verify_fraction_small_request`` / ``hmac_fraction_small_request`` relative to it.

Each rate is the median of three passes over ``--requests`` distinct requests.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import statistics
import time
from collections.abc import Callable

from nuclux.core.auth import (
    ReplayGuard,
    RequestFields,
    RequestVerifier,
    check_fresh,
    decode_authorization,
    encode_authorization,
    encode_content_sha256,
    request_message,
    sign_request,
)

KEY = hashlib.sha256(b"nuclux-bench/client").digest()
SESSION_KEY = hashlib.sha256(b"nuclux-bench/session").digest()
FINGERPRINT = hashlib.sha256(b"nuclux-bench/cert").digest()
PATH = "/v1/leases/12345/objects/" + "ab" * 32
CONTENT = hashlib.sha256(b"chunk").digest()
NOW = 1_700_000_000
MiB = 1 << 20


def rate(n: int, run: Callable[[], None]) -> float:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return n / statistics.median(times)


def measure(n: int) -> dict[str, float]:
    fields = RequestFields("PUT", PATH, CONTENT)
    nonces = [i.to_bytes(16, "big") for i in range(n)]
    headers: list[str] = []

    def sign() -> None:
        headers.clear()
        for nonce in nonces:
            auth = sign_request(KEY, fields, fingerprint=FINGERPRINT, timestamp=NOW, nonce=nonce)
            headers.append(encode_authorization(auth))

    content_header = encode_content_sha256(CONTENT)

    def verify() -> None:
        verifier = RequestVerifier(FINGERPRINT, ReplayGuard(120, n))
        for header in headers:
            auth = decode_authorization(header)
            got = RequestFields.from_http("PUT", PATH, content_header)
            verifier.verify(auth, got, now=NOW)

    messages = [
        request_message(fields, fingerprint=FINGERPRINT, timestamp=NOW, nonce=x) for x in nonces
    ]
    tags = [hmac.digest(SESSION_KEY, m, "sha256") for m in messages]

    def mac() -> None:
        for message, tag in zip(messages, tags, strict=True):
            if not hmac.compare_digest(hmac.digest(SESSION_KEY, message, "sha256"), tag):
                raise AssertionError("tag mismatch")

    def mac_verify() -> None:
        guard = ReplayGuard(120, n)
        for header, tag in zip(headers, tags, strict=True):
            auth = decode_authorization(header)  # same size of header to parse
            got = RequestFields.from_http("PUT", PATH, content_header)
            check_fresh(auth.timestamp, now=NOW, window=guard.window)
            message = request_message(
                got, fingerprint=FINGERPRINT, timestamp=auth.timestamp, nonce=auth.nonce
            )
            if not hmac.compare_digest(hmac.digest(SESSION_KEY, message, "sha256"), tag):
                raise AssertionError("tag mismatch")
            guard.admit(auth.signer, auth.nonce, auth.timestamp, now=NOW)

    return {
        "sign_per_s": rate(n, sign),
        "verify_per_s": rate(n, verify),
        "hmac_per_s": rate(n, mac),
        "hmac_verify_per_s": rate(n, mac_verify),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--no-tls", action="store_true", help="skip the TLS ceiling")
    args = parser.parse_args()
    figures = measure(args.requests)
    for name, value in figures.items():
        print(f"{name}={value:.0f}")
    if args.no_tls:
        return
    from bench.tls import measure_ceiling, measure_request_us

    ceiling = asyncio.run(measure_ceiling())
    request_us = asyncio.run(measure_request_us())
    chunk_us = MiB / (ceiling * 1e6) * 1e6
    print(f"tls_ceiling_MBps={ceiling:.0f}")
    print(f"chunk_1MiB_us={chunk_us:.0f}")
    print(f"verify_us={1e6 / figures['verify_per_s']:.1f}")
    print(f"hmac_verify_us={1e6 / figures['hmac_verify_per_s']:.1f}")
    print(f"verify_fraction_1MiB={1e6 / figures['verify_per_s'] / chunk_us:.4f}")
    print(f"hmac_fraction_1MiB={1e6 / figures['hmac_verify_per_s'] / chunk_us:.4f}")
    print(f"https_request_us={request_us:.0f}")
    print(f"verify_fraction_small_request={1e6 / figures['verify_per_s'] / request_us:.3f}")
    print(f"hmac_fraction_small_request={1e6 / figures['hmac_verify_per_s'] / request_us:.3f}")


if __name__ == "__main__":
    main()
