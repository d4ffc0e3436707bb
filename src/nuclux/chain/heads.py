"""The chain's head pushed by the endpoint: a ``newHeads`` subscription over WebSocket.

Theory of operation
-------------------
A node's loops (the chain view, the lease agent and prover, the bid agent) each ask for the
chain's newest block several times a second, mostly to learn that nothing happened. Over
JSON-RPC every such ``eth_blockNumber`` cost the node about a millisecond of CPU (aiohttp and
web3's request path) and the endpoint some more: eight idle nodes on one devnet used 89 ms of
CPU per second, their anvil 16.

``HeadFeed`` asks the endpoint to push instead: it opens a WebSocket at the JSON-RPC
address (``http`` -> ``ws``, ``https`` -> ``wss``; anvil and many nodes serve both on one
port), sends ``eth_subscribe(["newHeads"])`` and keeps ``number`` and ``hash``, the newest
header pushed (until the first push, the head it read over JSON-RPC when it subscribed).
The chain view compares the two with its cursor, so an idle node's step asks nothing at all.
``ChainConnection.block_number`` answers from the feed while it is live and asks the
endpoint otherwise, so callers do not change; a caller that must see a block it knows exists
(a client asking the node to re-read the chain after its transaction) passes ``fresh=True``
and the answer also moves the feed on (``note``): a pushed header can arrive after the
receipt of its own block.

When the endpoint offers no WebSocket, the subscription is refused or the socket closes or
stops answering its pings (``HEARTBEAT`` seconds), the feed is not live and the callers
poll as before; it tries again after ``RETRY_MIN`` seconds, doubling to ``RETRY_MAX``. A
message that is not a well-formed notification of this subscription is ignored (counted in
``ignored``): the feed is a hint about the head, every read of state still goes through
JSON-RPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Final

import aiohttp

from nuclux.chain.records import BlockHeader
from nuclux.errors import NucluxError

log = logging.getLogger(__name__)

HEARTBEAT: Final = 10.0
CONNECT_TIMEOUT: Final = 5.0
RETRY_MIN: Final = 1.0
RETRY_MAX: Final = 60.0
MAX_MESSAGE: Final = 1 << 20  # a header is about 1 KiB
# failures that only mean "no subscription here now" (logged once, at info)
_EXPECTED = (aiohttp.ClientError, OSError, TimeoutError, ValueError, TypeError, NucluxError)
_HEX_NUMBER = re.compile(r"0x[0-9a-fA-F]{1,16}")
_HEX_HASH = re.compile(r"0x[0-9a-fA-F]{64}")


def ws_url_of(http_url: str) -> str:
    """The WebSocket address of a JSON-RPC endpoint at ``http(s)://...``."""
    if http_url.startswith("https://"):
        return "wss://" + http_url[len("https://") :]
    if http_url.startswith("http://"):
        return "ws://" + http_url[len("http://") :]
    raise ValueError(f"not an http(s) URL: {http_url!r}")


def head_of(message: object, subscription: str) -> tuple[int, bytes] | None:
    """The block number and hash a ``newHeads`` notification of ``subscription`` carries,
    else None."""
    if not isinstance(message, dict) or message.get("method") != "eth_subscription":
        return None
    params = message.get("params")
    if not isinstance(params, dict) or params.get("subscription") != subscription:
        return None
    return _header(params.get("result"))


def _header(header: object) -> tuple[int, bytes] | None:
    """(number, hash) of a JSON-RPC block header, else None."""
    if not isinstance(header, dict):
        return None
    number, block_hash = header.get("number"), header.get("hash")
    if not isinstance(number, str) or not _HEX_NUMBER.fullmatch(number):
        return None
    if not isinstance(block_hash, str) or not _HEX_HASH.fullmatch(block_hash):
        return None
    return int(number, 16), bytes.fromhex(block_hash[2:])


class HeadFeed:
    """The newest block number an endpoint pushed; ``number`` is None while not live."""

    def __init__(self, ws_url: str, read_head: Callable[[], Awaitable[BlockHeader | None]]) -> None:
        """Follow ``ws_url``; ``read_head`` reads the latest header over JSON-RPC (at each
        subscription: the head until the first push)."""
        self.ws_url = ws_url
        self._read_head = read_head
        self.number: int | None = None
        self.hash: bytes | None = None  # of block ``number`` when pushed, None when noted
        self.ignored = 0
        self.subscriptions = 0  # how many times it subscribed (reconnections included)
        self._task: asyncio.Task[None] | None = None
        self._tried = asyncio.Event()  # the first attempt is over (live, or failed)
        self._news = asyncio.Event()  # set (and replaced) at every change of ``number``
        self._warned = False

    @property
    def live(self) -> bool:
        return self.number is not None

    async def start(self, timeout: float = CONNECT_TIMEOUT) -> bool:
        """Start following; whether it is live within ``timeout`` seconds (it keeps trying
        in the background either way)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="nuclux-head-feed")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._tried.wait()
        return self.live

    def note(self, number: int) -> None:
        """A block the caller knows exists (read over JSON-RPC): the head is at least it."""
        if self.number is not None and number > self.number:
            self._set(number, None)

    async def wait_beyond(self, number: int | None, timeout: float) -> None:
        """Return once the pushed head is past ``number`` (at once if it is), the feed stops
        being live, or ``timeout`` seconds have passed."""
        if self.number is None or number is None or self.number > number:
            return
        news = self._news
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await news.wait()

    def _set(self, number: int | None, block_hash: bytes | None) -> None:
        self.number, self.hash = number, block_hash
        self._news.set()  # wakes every waiter; later ones wait for the next change
        self._news = asyncio.Event()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._set(None, None)

    async def _run(self) -> None:
        delay = RETRY_MIN
        async with aiohttp.ClientSession() as session:
            while True:
                before = self.subscriptions
                try:
                    await self._follow(session)
                except Exception as exc:  # the feed is a hint: it must never stop for good
                    if not isinstance(exc, _EXPECTED):
                        log.warning(
                            "newHeads subscription at %s failed", self.ws_url, exc_info=True
                        )
                    elif not self._warned:
                        self._warned = True
                        log.info(
                            "no newHeads subscription at %s (%s); polling the head instead",
                            self.ws_url,
                            exc or type(exc).__name__,
                        )
                finally:
                    self._set(None, None)
                    self._tried.set()
                if self.subscriptions > before:
                    delay = RETRY_MIN  # it was live: a dropped socket is retried soon
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)

    async def _follow(self, session: aiohttp.ClientSession) -> None:
        timeout = aiohttp.ClientWSTimeout(ws_close=CONNECT_TIMEOUT)
        connecting = session.ws_connect(
            self.ws_url, heartbeat=HEARTBEAT, timeout=timeout, max_msg_size=MAX_MESSAGE
        )
        async with asyncio.timeout(CONNECT_TIMEOUT):
            ws = await connecting
        async with ws:
            request = {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}
            await ws.send_str(json.dumps(request))
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reply = await ws.receive_json()
            subscription = _subscription_id(reply)
            self._set(*await self._first_head())
            self.subscriptions += 1
            self._warned = False
            self._tried.set()
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break  # closed, or an error: not live any more
                try:
                    head = head_of(json.loads(msg.data), subscription)
                except ValueError:
                    head = None
                if head is None:
                    self.ignored += 1
                else:
                    self._set(*head)

    async def _first_head(self) -> tuple[int, bytes]:
        """The head when the subscription starts (the next push comes with the next block),
        read through the caller's JSON-RPC path (``read_head``)."""
        async with asyncio.timeout(CONNECT_TIMEOUT):
            header = await self._read_head()
        if header is None:
            raise ValueError("the endpoint reports no latest block")
        return header.number, header.hash

    def learn(self, number: int, block_hash: bytes) -> None:
        """The hash of block ``number``, read over JSON-RPC, when it is the head pushed
        without one (``note``d): the chain view can then compare without asking again."""
        if self.number == number and self.hash is None:
            self.hash = block_hash


def _subscription_id(reply: object) -> str:
    result = reply.get("result") if isinstance(reply, dict) else None
    if not isinstance(result, str) or not result:
        raise ValueError(f"eth_subscribe answered {reply!r}")
    return result
