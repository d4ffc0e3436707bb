"""KeepAliveHTTPProvider against a JSON-RPC server on loopback that notes which connection
each call came on: many calls share a few kept-alive connections, answers and errors are
web3's as before, and disconnect closes the session (later calls still work and keep nothing
open)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from web3 import AsyncWeb3
from web3.exceptions import Web3RPCError

from nuclux.chain.rpc_http import POOL, KeepAliveHTTPProvider


class Rpc:
    def __init__(self) -> None:
        self.peers: set[object] = set()  # (host, port) of each client connection seen
        self.calls = 0
        self.methods: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        self.peers.add(request.transport.get_extra_info("peername"))
        body = json.loads(await request.read())
        self.calls += 1
        self.methods.append(body["method"])
        answer: dict[str, object] = {"jsonrpc": "2.0", "id": body["id"]}
        if body["method"] == "eth_call":
            answer["result"] = "0x" + "00" * 31 + "2a"
        elif body["method"] == "eth_getBlockByNumber":
            tag = body["params"][0]
            answer["result"] = {
                "0x7": {"number": "0x7", "hash": "0x" + "ab" * 32, "timestamp": "0x64"},
                "0x8": None,
                "0x9": {"number": "seven", "hash": "0x00", "timestamp": "0x1"},
            }.get(tag, {"number": "0xa", "hash": "0x" + "cd" * 32, "timestamp": "0x65"})
        elif body["method"] == "eth_chainId":
            answer["result"] = "0x7a69"
        elif body["method"] == "eth_blockNumber":
            answer["result"] = hex(self.calls)
        else:
            answer["error"] = {"code": -32601, "message": "no such method"}
        return web.json_response(answer)


@pytest.fixture
async def rpc() -> AsyncIterator[tuple[Rpc, str]]:
    state = Rpc()
    app = web.Application()
    app.router.add_post("/", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield state, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_calls_share_kept_alive_connections(rpc: tuple[Rpc, str]) -> None:
    state, url = rpc
    provider = KeepAliveHTTPProvider(url)
    w3 = AsyncWeb3(provider)
    try:
        assert await w3.eth.chain_id == 31337
        for _ in range(50):  # one after another: one connection
            await w3.eth.block_number
        assert len(state.peers) == 1
        got = await asyncio.gather(*(w3.eth.block_number for _ in range(40)))
        assert len(set(got)) == 40  # each call answered on its own
        assert len(state.peers) <= POOL  # concurrent calls: at most the pool
        with pytest.raises(Web3RPCError, match="no such method"):
            await w3.eth.gas_price
    finally:
        await provider.disconnect()
    assert state.calls == 1 + 50 + 40 + 1


async def test_disconnect_closes_and_a_later_call_leaves_nothing_open(
    rpc: tuple[Rpc, str],
) -> None:
    state, url = rpc
    provider = KeepAliveHTTPProvider(url)
    w3 = AsyncWeb3(provider)
    try:
        await w3.eth.block_number
        session = provider._sessions.session()
        await provider.disconnect()
        assert session.closed
        for _ in range(2):  # late calls (a background task finishing): a connection each
            await w3.eth.block_number
        assert len(state.peers) == 3
        assert provider._sessions._by_loop == {}  # no session kept for them
    finally:
        await provider.disconnect()


async def test_a_connection_calls_without_asking_the_chain_id_again(rpc: tuple[Rpc, str]) -> None:
    """web3's validation middleware asked for the chain id before every eth_call; a
    ChainConnection reads it once at connect, and builds each contract handle once."""
    from nuclux.chain import ChainConnection

    state, url = rpc
    conn = await ChainConnection.open(url)
    try:
        assert state.methods == ["eth_chainId"]
        coin = conn.contract("NuxCoin", "0x" + "11" * 20)
        assert conn.contract("NuxCoin", "0x" + "11" * 20) is coin
        for _ in range(3):
            assert await coin.functions.balanceOf("0x" + "22" * 20).call() == 42
        assert state.methods == ["eth_chainId"] + ["eth_call"] * 3
    finally:
        await conn.close()


async def test_block_heads_are_read_raw(rpc: tuple[Rpc, str]) -> None:
    """Over JSON-RPC, block_number, block_head and now read the raw answer (no web3
    formatting of whole blocks); a block the chain lacks is None, a malformed one an error."""
    from nuclux.chain import ChainConnection
    from nuclux.chain.records import BlockHeader
    from nuclux.errors import ChainError

    state, url = rpc
    conn = await ChainConnection.open(url)
    try:
        assert await conn.block_head(7) == BlockHeader(7, bytes([0xAB]) * 32, 100)
        assert await conn.block_head(8) is None
        with pytest.raises(ChainError, match="malformed number"):
            await conn.block_head(9)
        assert await conn.now() == 101
        number = await conn.block_number()
        assert number == state.calls  # the fake answers its call count
        with pytest.raises(ChainError, match="eth_nothing failed"):
            await conn._rpc("eth_nothing", [])
    finally:
        await conn.close()
