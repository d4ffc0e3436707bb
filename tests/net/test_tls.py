"""TLS identities and pinning, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from nuclux.errors import IntegrityError, PeerIdentityMismatch, UsageError
from nuclux.net.tls import (
    NodeIdentity,
    check_peer,
    client_ssl_context,
    peer_errors,
    pinned,
    server_ssl_context,
)

ADDRESS = "0x6370eF2f4Db3611D657b90667De398a2Cc2a370C"
OTHER = "0x1111111111111111111111111111111111111111"
TIMEOUT = 10


@pytest.fixture(scope="module")
def node() -> NodeIdentity:
    return NodeIdentity.generate(ADDRESS.lower())


@pytest.fixture(scope="module")
def impostor() -> NodeIdentity:
    return NodeIdentity.generate(ADDRESS)


@dataclass
class Server:
    url: str
    host: str
    port: int
    requests: list[str] = field(default_factory=list)


@asynccontextmanager
async def serve(identity: NodeIdentity) -> AsyncIterator[Server]:
    server = Server("", "127.0.0.1", 0)

    async def hello(request: web.Request) -> web.Response:
        assert request.transport is not None
        version = request.transport.get_extra_info("ssl_object").version()
        server.requests.append(f"{request.path} {version}")
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(identity))
        await site.start()
        server.port = runner.addresses[0][1]
        server.url = f"https://127.0.0.1:{server.port}/hello"
        yield server
    finally:
        await runner.cleanup()


def test_identity_certificate(node: NodeIdentity) -> None:
    cert = x509.load_pem_x509_certificate(node.certificate_pem)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert node.fingerprint == hashlib.sha256(der).digest()
    assert node.address == ADDRESS  # checksummed
    assert cert.subject.rfc4514_string() == f"CN={ADDRESS}"
    assert cert.not_valid_after_utc.year - cert.not_valid_before_utc.year >= 9
    assert "PRIVATE" not in repr(node)
    assert "key_pem" not in repr(node)


def test_identities_are_distinct(node: NodeIdentity, impostor: NodeIdentity) -> None:
    assert node.fingerprint != impostor.fingerprint
    assert node.address == impostor.address


def test_save_load_round_trip(node: NodeIdentity, tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "tls" / "node.crt", tmp_path / "tls" / "node.key"
    node.save(cert_path, key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    assert sorted(p.name for p in cert_path.parent.iterdir()) == ["node.crt", "node.key"]
    assert NodeIdentity.load(cert_path, key_path) == node
    node.save(cert_path, key_path)  # replacing is atomic and leaves no temporary files
    assert len(list(cert_path.parent.iterdir())) == 2


def test_load_refuses_open_key_file(node: NodeIdentity, tmp_path: Path) -> None:
    node.save(tmp_path / "c", tmp_path / "k")
    (tmp_path / "k").chmod(0o644)
    with pytest.raises(UsageError, match="chmod 600"):
        NodeIdentity.load(tmp_path / "c", tmp_path / "k")


def test_load_refuses_missing_mismatched_and_garbage(
    node: NodeIdentity, impostor: NodeIdentity, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match="node init"):
        NodeIdentity.load(tmp_path / "none.crt", tmp_path / "none.key")
    with pytest.raises(IntegrityError):
        NodeIdentity(node.certificate_pem, impostor.key_pem)
    with pytest.raises(UsageError):
        NodeIdentity(b"not a certificate", node.key_pem)
    with pytest.raises(UsageError):
        NodeIdentity.generate("alice")


async def test_pinned_context_connects(node: NodeIdentity) -> None:
    async with serve(node) as server, asyncio.timeout(TIMEOUT):
        connector = aiohttp.TCPConnector(ssl=client_ssl_context(node.fingerprint))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(server.url) as resp,
        ):
            assert await resp.text() == "hello"
        assert server.requests == ["/hello TLSv1.3"]


async def test_aiohttp_fingerprint_connects(node: NodeIdentity) -> None:
    async with (
        serve(node) as server,
        asyncio.timeout(TIMEOUT),
        aiohttp.ClientSession() as session,
        session.get(server.url, ssl=pinned(node.fingerprint)) as resp,
    ):
        assert await resp.text() == "hello"


async def test_impostor_refused_by_pinned_context(
    node: NodeIdentity, impostor: NodeIdentity
) -> None:
    async with serve(impostor) as server, asyncio.timeout(TIMEOUT):
        connector = aiohttp.TCPConnector(ssl=client_ssl_context(node.fingerprint))
        async with aiohttp.ClientSession(connector=connector) as session:
            with (
                pytest.raises(PeerIdentityMismatch, match=impostor.fingerprint.hex()),
                peer_errors(),
            ):
                await session.get(server.url)
        assert server.requests == []  # nothing reached the impostor


async def test_impostor_refused_by_aiohttp_fingerprint(
    node: NodeIdentity, impostor: NodeIdentity
) -> None:
    async with serve(impostor) as server, asyncio.timeout(TIMEOUT):
        async with aiohttp.ClientSession() as session:
            with pytest.raises(PeerIdentityMismatch, match=node.fingerprint.hex()), peer_errors():
                await session.get(server.url, ssl=pinned(node.fingerprint))
        assert server.requests == []


async def test_raw_streams_pinned_and_checked(node: NodeIdentity, impostor: NodeIdentity) -> None:
    async with serve(node) as server, asyncio.timeout(TIMEOUT):
        _, writer = await asyncio.open_connection(
            server.host, server.port, ssl=client_ssl_context()
        )
        try:
            check_peer(writer.get_extra_info("ssl_object"), node.fingerprint)
            with pytest.raises(PeerIdentityMismatch):
                check_peer(writer.get_extra_info("ssl_object"), impostor.fingerprint)
        finally:
            writer.close()
        with pytest.raises(PeerIdentityMismatch), peer_errors():
            await asyncio.open_connection(
                server.host, server.port, ssl=client_ssl_context(impostor.fingerprint)
            )
    with pytest.raises(PeerIdentityMismatch, match="not TLS"):
        check_peer(None, node.fingerprint)


async def test_tls12_client_cannot_connect(node: NodeIdentity) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    async with serve(node) as server, asyncio.timeout(TIMEOUT):
        # the server answers a TLS 1.2 ClientHello with an alert or by dropping the connection
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.open_connection(server.host, server.port, ssl=old)
        assert server.requests == []


def test_contexts_are_tls13_only(node: NodeIdentity) -> None:
    for ctx in (server_ssl_context(node), client_ssl_context(), client_ssl_context(bytes(32))):
        assert ctx.minimum_version == ctx.maximum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode == ssl.CERT_NONE
    assert not client_ssl_context().check_hostname
    with pytest.raises(UsageError):
        pinned(b"short")
    with pytest.raises(UsageError):
        client_ssl_context(b"short")
