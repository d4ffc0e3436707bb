"""Reading logs: the embedded EVM's fast path and the topic table of a contract's events."""

from __future__ import annotations

from typing import Any

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3.contract import AsyncContract

from nuclux.chain.connection import ChainConnection


def tester_logs(
    conn: ChainConnection, addresses: set[str], first: int, last: int
) -> list[dict[str, Any]]:
    """eth_getLogs on the embedded EVM, read straight from py-evm's receipts, block by block.

    eth-tester finds each log's receipt by scanning back from the head block, so its
    eth_getLogs over a long range costs (logs x chain length); this reads each block once.
    """
    chain: Any = conn.w3.provider.ethereum_tester.backend.chain
    out: list[dict[str, Any]] = []
    for number in range(first, min(last, int(chain.get_canonical_head().block_number)) + 1):
        block = chain.get_canonical_block_by_number(number)
        receipts = block.get_receipts(chain.chaindb)
        index = 0
        for tx_index, (tx, receipt) in enumerate(zip(block.transactions, receipts, strict=True)):
            for entry in receipt.logs:
                address = to_checksum_address(entry.address)
                if address in addresses:
                    topics = [int(t).to_bytes(32, "big") for t in entry.topics]
                    out.append(
                        {
                            "address": address,
                            "topics": topics,
                            "data": bytes(entry.data),
                            "blockNumber": number,
                            "blockHash": bytes(block.hash),
                            "logIndex": index,
                            "transactionIndex": tx_index,
                            "transactionHash": bytes(tx.hash),
                        }
                    )
                index += 1
    return out


def event_topics(contract: AsyncContract) -> dict[bytes, str]:
    out: dict[bytes, str] = {}
    for item in contract.abi:
        if item.get("type") == "event":
            raw: dict[str, Any] = dict(item)
            types = ",".join(str(i["type"]) for i in raw["inputs"])
            out[keccak(text=f"{raw['name']}({types})")] = str(raw["name"])
    return out
