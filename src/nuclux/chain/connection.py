"""A connection to one chain: the embedded EVM or any JSON-RPC endpoint.

``ChainConnection.open("embedded")`` starts an in-process EVM (eth-tester over py-evm) with
pre-funded, unlocked accounts; ``open("http://127.0.0.1:8545")`` reaches a node such as anvil.
Both go through the same ``AsyncWeb3`` API. Devnet-only helpers (funding gas, moving block
time) work on both and refuse on other chains.
"""

from __future__ import annotations

from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.contract import AsyncContract
from web3.exceptions import BlockNotFound
from web3.providers.eth_tester import AsyncEthereumTesterProvider
from web3.types import Wei as EthWei

from nuclux.chain import abi as artifacts
from nuclux.chain.heads import HeadFeed, ws_url_of
from nuclux.chain.records import BlockHeader
from nuclux.chain.rpc_http import KeepAliveHTTPProvider
from nuclux.chain.txqueue import TxQueue
from nuclux.errors import ChainError, ChainUnavailable, UsageError

EMBEDDED = "embedded"


class ChainConnection:
    """One endpoint, its transaction queues (one per account) and contract handles."""

    def __init__(
        self,
        w3: AsyncWeb3[Any],
        url: str,
        chain_id: int,
        *,
        confirmations: int = 1,
        tx_timeout: float = 120.0,
    ) -> None:
        self.w3 = w3
        self.url = url
        self.chain_id = chain_id
        self.confirmations = confirmations
        self.tx_timeout = tx_timeout
        self._queues: dict[str, TxQueue] = {}
        self._contracts: dict[tuple[str, str], AsyncContract] = {}
        self._heads: HeadFeed | None = None

    @classmethod
    async def open(
        cls, url: str = EMBEDDED, *, confirmations: int = 1, tx_timeout: float = 120.0
    ) -> ChainConnection:
        w3: AsyncWeb3[Any]
        if url == EMBEDDED:
            # py-evm is imported only here: a process on a JSON-RPC chain (a node, the CLI on a
            # devnet) does not carry its 270 modules, about 6 MB
            from nuclux.chain.embedded import tune as tune_embedded

            tester = AsyncEthereumTesterProvider()
            tune_embedded(tester)  # quick gas estimates
            w3 = AsyncWeb3(tester)
        elif url.startswith(("http://", "https://")):
            w3 = AsyncWeb3(KeepAliveHTTPProvider(url, timeout=30.0))
        else:
            raise UsageError(f"chain {url!r} is neither 'embedded' nor an http(s) RPC URL")
        try:
            chain_id = int(await w3.eth.chain_id)
        except (OSError, TimeoutError) as exc:
            await _disconnect(w3)
            raise ChainUnavailable(f"cannot reach the chain at {url}: {exc}") from exc
        except Exception as exc:
            await _disconnect(w3)
            if "Connect" in type(exc).__name__ or "Connection" in str(exc):
                raise ChainUnavailable(f"cannot reach the chain at {url}: {exc}") from exc
            raise
        _lean_middleware(w3)
        return cls(w3, url, chain_id, confirmations=confirmations, tx_timeout=tx_timeout)

    @property
    def is_embedded(self) -> bool:
        return self.url == EMBEDDED

    async def close(self) -> None:
        if self._heads is not None:
            await self._heads.close()
            self._heads = None
        await _disconnect(self.w3)

    async def follow_heads(self) -> bool:
        """Learn the head from the endpoint's pushes (``nuclux.chain.heads``), not by asking;
        whether that is live now (it keeps trying when not). A long-running process (a node)
        calls this once; the embedded chain has nothing to push (False)."""
        if self.is_embedded:
            return False
        if self._heads is None:
            self._heads = HeadFeed(ws_url_of(self.url), lambda: self.block_head("latest"))
        return await self._heads.start()

    @property
    def heads(self) -> HeadFeed | None:
        return self._heads

    def pushed_head(self) -> tuple[int, bytes] | None:
        """The newest header the endpoint pushed (number, hash), if the feed is live and
        has one."""
        heads = self._heads
        if heads is None or heads.number is None or heads.hash is None:
            return None
        return heads.number, heads.hash

    async def __aenter__(self) -> ChainConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -------------------------------------------------------------- contracts and queues

    def queue(self, account: LocalAccount) -> TxQueue:
        q = self._queues.get(account.address)
        if q is None:
            q = TxQueue(
                self.w3,
                account,
                confirmations=self.confirmations,
                timeout=self.tx_timeout,
                automine=self.is_embedded,
            )
            self._queues[account.address] = q
        return q

    def contract(self, name: str, address: str) -> AsyncContract:
        """The contract handle for ``name`` at ``address``, built once per connection (web3
        builds a class from the ABI for every handle: a node polling the chain spent a
        sixth of its Python time there)."""
        key = (name, address.lower())
        handle = self._contracts.get(key)
        if handle is None:
            handle = self._contracts[key] = self.w3.eth.contract(
                address=self.w3.to_checksum_address(address), abi=artifacts.load(name).abi
            )
        return handle

    # -------------------------------------------------------------- time

    async def now(self) -> int:
        """Chain time: the latest block's timestamp."""
        head = await self.block_head("latest")
        if head is None:
            raise ChainError("the chain has no latest block")
        return head.timestamp

    async def block_number(self, *, fresh: bool = False) -> int:
        """The newest block's number: pushed by the endpoint when ``follow_heads`` is live
        (unless ``fresh``), else asked for."""
        if self.is_embedded:
            return int(await self.w3.eth.block_number)
        heads = self._heads
        if heads is not None and heads.number is not None and not fresh:
            return heads.number
        number = _quantity(await self._rpc("eth_blockNumber", []), "eth_blockNumber")
        if heads is not None:
            heads.note(number)
        return number

    async def block_head(self, block: int | str = "latest") -> BlockHeader | None:
        """A block's number, hash and timestamp; None if the chain has no such block.

        Over JSON-RPC this is one raw ``eth_getBlockByNumber`` read for three fields: web3's
        ``get_block`` formats every field of the block through its middleware, twice the CPU
        of the call itself (chain followers read a header per new block)."""
        if self.is_embedded:
            try:
                b = await self.w3.eth.get_block(block)  # type: ignore[arg-type]
            except BlockNotFound:
                return None
            return BlockHeader(int(b["number"]), bytes(b["hash"]), int(b["timestamp"]))
        tag = hex(block) if isinstance(block, int) else block
        raw = await self._rpc("eth_getBlockByNumber", [tag, False])
        if raw is None:
            return None
        try:
            return BlockHeader(
                _quantity(raw["number"], "number"),
                bytes.fromhex(str(raw["hash"]).removeprefix("0x")),
                _quantity(raw["timestamp"], "timestamp"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ChainError(f"malformed block from the chain: {exc!r}") from None

    async def _rpc(self, method: str, params: list[Any]) -> Any:
        """One JSON-RPC call past web3's middleware and formatters (JSON-RPC endpoints)."""
        resp = await self.w3.provider.make_request(method, params)
        if "error" in resp:
            raise ChainError(f"{method} failed: {resp['error']}")
        return resp.get("result")

    async def gas_used(self, first: int, last: int) -> int:
        """Gas used by every transaction in blocks ``first`` to ``last`` (benchmarks)."""
        total = 0
        for n in range(first, last + 1):
            total += int((await self.w3.eth.get_block(n))["gasUsed"])
        return total

    async def advance_time(self, seconds: int) -> int:
        """Devnet only: move chain time forward and mine a block; returns the new time."""
        if seconds < 0:
            raise UsageError("time only moves forward")
        if self.is_embedded:
            tester: Any = self.w3.provider.ethereum_tester
            # the pending block may already be ahead of the latest one (wall clock)
            pending = int(tester.get_block_by_number("pending")["timestamp"])
            tester.time_travel(max(pending, await self.now()) + seconds)
        else:
            target = await self.now() + seconds
            await self._dev_rpc("evm_setNextBlockTimestamp", [target])
            await self._dev_rpc("evm_mine", [])
        return await self.now()

    async def mine(self) -> None:
        if self.is_embedded:
            tester: Any = self.w3.provider.ethereum_tester
            tester.mine_blocks(1)
        else:
            await self._dev_rpc("evm_mine", [])

    async def snapshot(self) -> int:
        """Devnet only: remember the chain state; ``revert`` returns to it."""
        if self.is_embedded:
            tester: Any = self.w3.provider.ethereum_tester
            return int(tester.take_snapshot())
        return int(await self._dev_rpc("evm_snapshot", []), 16)

    async def revert(self, snapshot_id: int) -> None:
        if self.is_embedded:
            tester: Any = self.w3.provider.ethereum_tester
            tester.revert_to_snapshot(snapshot_id)
        else:
            await self._dev_rpc("evm_revert", [hex(snapshot_id)])
        for q in self._queues.values():
            q.forget_nonce()

    # -------------------------------------------------------------- devnet gas

    async def fund_gas(self, address: str, wei: int) -> None:
        """Devnet only: send ether for gas from the node's first unlocked account."""
        accounts = await self.w3.eth.accounts
        if not accounts:
            raise ChainError("this chain has no unlocked accounts to fund gas from (not a devnet)")
        tx = await self.w3.eth.send_transaction(
            {"from": accounts[0], "to": self.w3.to_checksum_address(address), "value": EthWei(wei)}
        )
        await self.w3.eth.wait_for_transaction_receipt(tx, timeout=self.tx_timeout)

    async def eth_balance(self, address: str) -> int:
        return int(await self.w3.eth.get_balance(self.w3.to_checksum_address(address)))

    async def _dev_rpc(self, method: str, params: list[Any]) -> Any:
        resp = await self.w3.provider.make_request(method, params)
        if "error" in resp:
            raise ChainError(f"{method} failed (is this a devnet?): {resp['error']}")
        return resp.get("result")


LEAN_DROPPED = ("validation", "ens_name_to_address")


def _lean_middleware(w3: AsyncWeb3[Any]) -> None:
    """Drop the default middleware that costs work on every call and does nothing here.

    web3's ``validation`` asks the node for its chain id before every ``eth_call`` and
    ``eth_estimateGas`` (an extra round trip per call) to check a ``chainId`` field our calls
    never carry: transactions are signed locally by ``TxQueue`` with the chain id read once at
    connect. ``ens_name_to_address`` walks every call's parameters looking for ENS names;
    Nuclux passes addresses only. Together they were a third of an idle node's RPC work."""
    for name in LEAN_DROPPED:
        w3.middleware_onion.remove(name)


def _quantity(value: Any, what: str) -> int:
    """A JSON-RPC quantity (``0x``-prefixed hex) as an int."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ChainError(f"malformed {what} from the chain: {value!r}")
    try:
        return int(value, 16)
    except ValueError:
        raise ChainError(f"malformed {what} from the chain: {value!r}") from None


async def _disconnect(w3: AsyncWeb3[Any]) -> None:
    if isinstance(w3.provider, AsyncHTTPProvider):
        await w3.provider.disconnect()
