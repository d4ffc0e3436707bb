"""``nuclux.chain.heads``: the head pushed by a real anvil over WebSocket, the connection
answering ``block_number`` from it without asking, the fallback to asking when the endpoint
has no WebSocket or the socket closes, and notifications that are not well formed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from nuclux.chain import ChainConnection
from nuclux.chain.devnet import AnvilProcess, find_anvil
from nuclux.chain.heads import HeadFeed, head_of, ws_url_of
from tests.chain.heads_kit import counting, serve
from tests.node.local_nodes import free_port

pytestmark = pytest.mark.anvil

SUB = "0x9cef478923ff08bf67fde6c64013158d"
HASH = "0x" + "ab" * 32


@pytest_asyncio.fixture(scope="module")
async def anvil(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AnvilProcess]:
    node = AnvilProcess(tmp_path_factory.mktemp("anvil-heads"), binary=find_anvil())
    await node.start(timeout=20)
    try:
        yield node
    finally:
        await node.stop(timeout=10)
    assert not node.running


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    """Wait for the feed's task to change what ``predicate`` reads (it signals nothing)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_the_head_is_pushed_and_read_without_asking(anvil: AnvilProcess) -> None:
    async with await ChainConnection.open(anvil.rpc_url) as conn:
        assert conn.pushed_head() is None
        assert await conn.follow_heads()
        sent = counting(conn)
        start = await conn.block_number()
        assert sent == []  # answered from the feed
        first = conn.pushed_head()  # the head read when it subscribed, number and hash
        header = await conn.block_head(start)
        assert header is not None
        assert first == (header.number, header.hash)
        await conn.mine()
        await _until(lambda: conn.heads is not None and conn.heads.number == start + 1)
        pushed = conn.pushed_head()
        assert pushed is not None
        header = await conn.block_head(start + 1)
        assert header is not None
        assert pushed == (header.number, header.hash)
        sent.clear()
        assert await conn.block_number() == start + 1
        assert sent == []
        assert await conn.block_number(fresh=True) == start + 1
        assert sent == ["eth_blockNumber"]


async def test_waiting_for_a_newer_head(anvil: AnvilProcess) -> None:
    async with await ChainConnection.open(anvil.rpc_url) as conn:
        assert await conn.follow_heads()
        feed = conn.heads
        assert feed is not None
        head = await conn.block_number()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await feed.wait_beyond(head, 0.3)  # nothing mined: the timeout
        assert loop.time() - started >= 0.25
        assert feed.number == head
        waiting = asyncio.create_task(feed.wait_beyond(head, 10))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        started = loop.time()
        await conn.mine()
        await asyncio.wait_for(waiting, 5)  # woken by the push, not the timeout
        assert loop.time() - started < 2
        assert feed.number == head + 1
        await asyncio.wait_for(feed.wait_beyond(head, 10), 0.1)  # past it already: at once


async def test_a_fresh_read_moves_a_lagging_feed_on(anvil: AnvilProcess) -> None:
    async with await ChainConnection.open(anvil.rpc_url) as conn:
        assert await conn.follow_heads()
        feed = conn.heads
        assert feed is not None
        head = await conn.block_number(fresh=True)
        feed.number = head - 1  # a push still on its way
        assert await conn.block_number() == head - 1
        assert await conn.block_number(fresh=True) == head
        assert await conn.block_number() == head
        assert feed.hash is None  # a noted head has no hash: the view asks for the header
        feed.note(head - 5)  # never backwards
        assert feed.number == head
        feed.learn(head - 1, b"\1" * 32)  # not the head: ignored
        assert feed.hash is None
        feed.learn(head, b"\2" * 32)  # the view read the head's header: known from now on
        assert conn.pushed_head() == (head, b"\2" * 32)


async def test_without_a_websocket_it_asks(anvil: AnvilProcess) -> None:
    closed = f"ws://127.0.0.1:{free_port('127.0.0.1')}"
    async with await ChainConnection.open(anvil.rpc_url) as conn:
        feed = HeadFeed(closed, lambda: conn.block_head("latest"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            assert not await feed.start()
            assert loop.time() - started < 3  # refused at once, not after the connect timeout
            assert feed.number is None
        finally:
            await feed.close()
        conn._heads = feed
        assert not await conn.follow_heads()
        sent = counting(conn)
        assert await conn.block_number() >= 0
        assert sent == ["eth_blockNumber"]


async def test_a_closed_socket_falls_back_and_reconnects(anvil: AnvilProcess) -> None:
    """A relay in front of anvil's WebSocket: when it drops the connection the feed stops
    answering (callers ask the endpoint), then subscribes again."""
    sockets: list[web.WebSocketResponse] = []
    async with aiohttp.ClientSession() as session:

        async def relay(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            sockets.append(ws)
            async with session.ws_connect(ws_url_of(anvil.rpc_url)) as up:

                async def down() -> None:
                    async for msg in up:
                        await ws.send_str(msg.data)

                pump = asyncio.create_task(down())
                try:
                    async for msg in ws:
                        await up.send_str(msg.data)
                finally:
                    pump.cancel()
            return ws

        async with serve(relay) as url, await ChainConnection.open(anvil.rpc_url) as conn:
            feed = HeadFeed(url, lambda: conn.block_head("latest"))
            try:
                assert await feed.start()
                assert feed.subscriptions == 1
                await sockets[0].close()
                await _until(lambda: feed.number is None)
                await _until(lambda: feed.number is not None and feed.subscriptions == 2)
                assert len(sockets) == 2
            finally:
                await feed.close()


@pytest.mark.parametrize("reply", [b"\x00binary", "not json", '{"result": 7}', '{"error": {}}'])
async def test_a_bad_subscription_reply_leaves_it_asking(anvil: AnvilProcess, reply: Any) -> None:
    """An endpoint answering ``eth_subscribe`` with garbage: never live, still trying."""
    seen: list[int] = []

    async def bad(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        seen.append(1)
        await (ws.send_bytes(reply) if isinstance(reply, bytes) else ws.send_str(reply))
        await ws.close()
        return ws

    async with serve(bad) as url, await ChainConnection.open(anvil.rpc_url) as conn:
        feed = HeadFeed(url, lambda: conn.block_head("latest"))
        try:
            assert not await feed.start()
            await _until(lambda: len(seen) >= 2)  # it tried again (after RETRY_MIN)
            assert feed.number is None
            assert feed.subscriptions == 0
        finally:
            await feed.close()


@pytest.mark.parametrize(
    "message",
    [
        None,
        [],
        "x",
        {"method": "eth_subscription"},
        {"method": "eth_other", "params": {"subscription": SUB, "result": {}}},
        {"method": "eth_subscription", "params": {"subscription": "0x1", "result": {}}},
        {"method": "eth_subscription", "params": {"subscription": SUB, "result": []}},
        {"method": "eth_subscription", "params": {"subscription": SUB, "result": {"hash": HASH}}},
        {
            "method": "eth_subscription",
            "params": {"subscription": SUB, "result": {"number": 5, "hash": HASH}},
        },
        {
            "method": "eth_subscription",
            "params": {"subscription": SUB, "result": {"number": "0xzz", "hash": HASH}},
        },
        {
            "method": "eth_subscription",
            "params": {"subscription": SUB, "result": {"number": "0x" + "f" * 17, "hash": HASH}},
        },
        {
            "method": "eth_subscription",
            "params": {"subscription": SUB, "result": {"number": "0x10", "hash": "0x12"}},
        },
    ],
)
def test_malformed_notifications_are_ignored(message: object) -> None:
    assert head_of(message, SUB) is None


def test_a_notification_gives_number_and_hash() -> None:
    raw = json.dumps(
        {
            "jsonrpc": "2.0",
            "method": "eth_subscription",
            "params": {"subscription": SUB, "result": {"number": "0x1b4", "hash": HASH}},
        }
    )
    assert head_of(json.loads(raw), SUB) == (0x1B4, bytes.fromhex("ab" * 32))


def test_ws_address_of_an_rpc_url() -> None:
    assert ws_url_of("http://127.0.0.1:8545") == "ws://127.0.0.1:8545"
    assert ws_url_of("https://rpc.example.org/v1") == "wss://rpc.example.org/v1"
    with pytest.raises(ValueError, match="not an http"):
        ws_url_of("embedded")
