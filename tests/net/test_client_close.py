"""Closing a ``NodeClient`` closes every socket it opened, even a TLS connection whose shutdown
handshake the node never answers (on the Python versions where asyncio would leave its socket
open: ``nuclux.net.client.SSL_CLOSE_LEAKS``)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from nuclux.net.client import SSL_CLOSE_LEAKS, NodeClient
from nuclux.net.tls import NodeIdentity, server_ssl_context

KEY = hashlib.sha256(b"nuclux-test/client-close").digest()
ESTABLISHED = "01"


def _tcp_state(local_port: int, remote_port: int) -> str | None:
    """The kernel's state of the loopback TCP socket local_port -> remote_port, if any."""
    want = (f"0100007F:{local_port:04X}", f"0100007F:{remote_port:04X}")
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (fields[1], fields[2]) == want:
            return fields[3]
    return None


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")
async def test_a_connection_whose_shutdown_is_never_answered_is_closed_with_the_client() -> None:
    node = NodeIdentity.generate("0x" + "ce" * 20)
    peers: list[int] = []
    held: list[asyncio.StreamWriter] = []

    async def answer_then_go_deaf(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        peers.append(w.get_extra_info("peername")[1])
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        await w.drain()
        transport = w.transport
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # the client's close_notify is never read nor answered
        held.append(w)

    server = await asyncio.start_server(
        answer_then_go_deaf, "127.0.0.1", 0, ssl=server_ssl_context(node)
    )
    port = server.sockets[0].getsockname()[1]
    try:
        client = NodeClient(f"https://127.0.0.1:{port}", node.fingerprint, KEY)
        assert await client.info() == {}
        await asyncio.sleep(0.1)  # the response said close: the client starts its shutdown
        assert _tcp_state(peers[0], port) == ESTABLISHED  # waiting for the node's answer
        await client.close()
        await asyncio.sleep(0.1)
        state = _tcp_state(peers[0], port)
        if SSL_CLOSE_LEAKS:  # aborted by the client: no longer an open connection
            assert state != ESTABLISHED
    finally:
        for w in held:
            w.transport.abort()
        server.close()
        await server.wait_closed()
