"""Deploying the contracts, and the deployment file other commands read.

A ``Deployment`` names the chain (id and RPC URL), the contract addresses by name and the
parameters they were deployed with (epoch length, windows, penalty ladder). It is JSON on disk:
``nuclux devnet up`` and ``nuclux chain deploy`` write one; every other command reads it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import rlp  # type: ignore[import-untyped]
from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3.types import TxParams

from nuclux.chain import abi as artifacts
from nuclux.chain.connection import ChainConnection
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.errors import ChainError, DeploymentNotFound

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class DeployParams:
    """Deploy-time parameters; the defaults suit a devnet (seconds-long epochs)."""

    supply: int = 1_000_000_000 * ONE_NUX
    epoch_length: int = 60
    accept_window: int = 600
    dispute_window: int = 600
    fail_threshold: int = 3
    min_stake: int = 100 * ONE_NUX
    unbonding_delay: int = 3600
    suspend_after: int = 3
    slash_after: int = 5
    suspension_period: int = 86_400
    slash_cap: int = 50 * ONE_NUX
    # storage proofs: one epoch in ``sample_one_in`` is sampled; a seed is the hash of the
    # block ``seed_delay`` blocks after it is armed (use >= 64 on Ethereum mainnet, beyond
    # the proposer look-ahead); a demanded proof is due within ``demand_window`` seconds
    sample_one_in: int = 8
    seed_delay: int = 2
    demand_window: int = 300
    # auctions: bids are committed within ``auction_commit_window`` seconds and
    # ``auction_commit_blocks`` blocks of a request (the window lasts while either is left)
    # and revealed in the ``auction_reveal_window`` seconds and ``auction_reveal_blocks``
    # blocks after; a bid locks ``auction_bid_deposit`` until revealed (forfeited to the
    # consumer if never revealed); at most ``auction_max_bids`` bids per request; the
    # tie-break seed is the hash of the block ``auction_seed_delay`` blocks after the first
    # reveal (0: the first reveal's own block)
    auction_commit_window: int = 60
    auction_reveal_window: int = 60
    auction_commit_blocks: int = 0
    auction_reveal_blocks: int = 0
    auction_bid_deposit: int = ONE_NUX
    auction_max_bids: int = 64
    auction_seed_delay: int = 2

    def __post_init__(self) -> None:
        if self.epoch_length <= 0:
            raise ValueError("epoch_length must be positive")
        if self.sample_one_in < 1 or not 0 < self.seed_delay < 256:
            raise ValueError("storage proofs: sample_one_in >= 1 and 0 < seed_delay < 256")
        if not 0 < self.demand_window <= self.dispute_window:
            raise ValueError("storage proofs: 0 < demand_window <= dispute_window")
        if (
            not 0 < self.fail_threshold < 256
            or not 0 < self.suspend_after <= self.slash_after < 256
        ):
            raise ValueError("penalty ladder: 0 < suspend_after <= slash_after < 256")
        if not 2 <= self.auction_max_bids <= 255 or not 0 <= self.auction_seed_delay <= 200:
            raise ValueError(
                "auctions: 2 <= auction_max_bids <= 255, 0 <= auction_seed_delay <= 200"
            )
        windows = (
            self.auction_commit_window,
            self.auction_reveal_window,
            self.auction_commit_blocks,
            self.auction_reveal_blocks,
        )
        if not all(0 <= x <= 2**32 for x in windows):
            raise ValueError("auctions: windows are 0..2**32 seconds and blocks")
        if (
            self.auction_commit_window + self.auction_commit_blocks == 0
            or self.auction_reveal_window + self.auction_reveal_blocks == 0
        ):
            raise ValueError("auctions: each window needs some seconds or some blocks")
        if self.auction_bid_deposit < 0:
            raise ValueError("auctions: the bid deposit cannot be negative")


@dataclass(frozen=True, slots=True)
class Deployment:
    chain_id: int
    rpc_url: str
    addresses: dict[str, str]
    params: DeployParams
    deployer: str
    block: int
    modules: dict[str, str] = field(default_factory=dict)

    def address(self, name: str) -> str:
        try:
            return self.addresses[name]
        except KeyError:
            raise DeploymentNotFound(f"the deployment has no contract named {name}") from None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["version"] = FORMAT_VERSION
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Deployment:
        if raw.get("version") != FORMAT_VERSION:
            raise DeploymentNotFound(f"unsupported deployment file version {raw.get('version')}")
        try:
            return cls(
                chain_id=int(raw["chain_id"]),
                rpc_url=str(raw["rpc_url"]),
                addresses={str(k): str(v) for k, v in raw["addresses"].items()},
                params=DeployParams(**raw["params"]),
                deployer=str(raw["deployer"]),
                block=int(raw["block"]),
                modules={str(k): str(v) for k, v in raw.get("modules", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DeploymentNotFound(f"invalid deployment file: {exc}") from exc

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".deploy-")
        with os.fdopen(fd, "w") as fh:
            json.dump(self.to_json(), fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Deployment:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise DeploymentNotFound(
                f"no deployment file at {path}; run `nuclux devnet up` or `nuclux chain deploy`"
            ) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise DeploymentNotFound(f"cannot read deployment file {path}: {exc}") from exc
        return cls.from_json(raw)


def create_address(sender: str, nonce: int) -> str:
    """The address of the contract ``sender``'s transaction number ``nonce`` creates."""
    raw = keccak(rlp.encode([bytes.fromhex(sender.removeprefix("0x")), nonce]))[12:]
    return to_checksum_address(raw)


async def _deploy_one(
    conn: ChainConnection, deployer: LocalAccount, name: str, types: list[str], args: list[Any]
) -> str:
    art = artifacts.load(name)
    data = art.bytecode + abi_encode(types, args).hex()
    receipt = await conn.queue(deployer).send({"data": data}, context=f"deploy {name}")  # type: ignore[typeddict-item]
    address = receipt["contractAddress"]
    if address is None:
        raise ChainError(f"deploy {name}: no contract address in the receipt")
    return str(address)


async def call_as(
    conn: ChainConnection,
    account: LocalAccount,
    name: str,
    address: str,
    fn: str,
    args: list[Any],
    context: str,
) -> Any:
    c = conn.contract(name, address)
    data = c.encode_abi(fn, args=args)
    tx: TxParams = {"to": c.address, "data": data}
    return await conn.queue(account).send(tx, context=context)


async def deploy(
    conn: ChainConnection,
    deployer: LocalAccount,
    params: DeployParams = DeployParams(),
    modules: dict[ResourceClass, str] | None = None,
) -> Deployment:
    """Deploy every contract; authorise a settlement module per resource class.

    Unless ``modules`` names one: storage gets proof-gated accrual (``StorageSettlement``),
    compute a cumulative-total module both sides sign, bandwidth one the consumer signs (a
    payment channel). ``TimestampAnchor`` takes batched manifest time-stamps;
    ``AuctionHouse`` runs sealed-bid auctions and opens the winners' leases.
    """
    d = deployer.address
    p = params
    coin = await _deploy_one(conn, deployer, "NuxCoin", ["address", "uint256"], [d, p.supply])
    keys = await _deploy_one(conn, deployer, "KeyDirectory", [], [])
    reg = await _deploy_one(
        conn,
        deployer,
        "ProviderRegistry",
        ["address", "uint256", "uint256", "uint8", "uint8", "uint256", "uint256"],
        [
            coin,
            p.min_stake,
            p.unbonding_delay,
            p.suspend_after,
            p.slash_after,
            p.suspension_period,
            p.slash_cap,
        ],
    )
    # The lease manager takes its modules as immutables, and the modules take its address:
    # deploy the modules first, bound to the address the lease manager will get.
    given = modules or {}
    # StorageSettlement is always deployed (the proofs' contract), and every class not given
    # a module gets its own
    n_new = 1 + sum(
        1 for cls in (ResourceClass.COMPUTE, ResourceClass.BANDWIDTH) if cls not in given
    )
    nonce = int(await conn.w3.eth.get_transaction_count(deployer.address, "pending"))
    lm_at = create_address(deployer.address, nonce + n_new)
    storage = await _deploy_one(
        conn,
        deployer,
        "StorageSettlement",
        ["address", "address"] + ["uint256"] * 5,
        [
            lm_at,
            reg,
            p.epoch_length,
            p.dispute_window,
            p.sample_one_in,
            p.seed_delay,
            p.demand_window,
        ],
    )
    chosen: dict[ResourceClass, str] = {
        ResourceClass.STORAGE: given.get(ResourceClass.STORAGE, storage)
    }
    for cls in (ResourceClass.COMPUTE, ResourceClass.BANDWIDTH):
        module = given.get(cls)
        if module is None:
            # compute: receipts both sides sign; bandwidth: vouchers the consumer signs
            module = await _deploy_one(
                conn,
                deployer,
                "CumulativeSettlement",
                ["address", "address", "bool"],
                [lm_at, reg, cls is ResourceClass.COMPUTE],
            )
        chosen[cls] = module
    lm = await _deploy_one(
        conn,
        deployer,
        "LeaseManager",
        ["address", "address", "uint256", "uint256", "uint256", "uint8", "address[3]"],
        [
            coin,
            reg,
            p.epoch_length,
            p.accept_window,
            p.dispute_window,
            p.fail_threshold,
            [chosen[cls] for cls in ResourceClass],
        ],
    )
    if lm.lower() != lm_at.lower():
        raise ChainError(
            f"the lease manager was deployed at {lm}, not at {lm_at} where its modules expect"
            " it: another transaction of the deployer account ran during the deployment"
        )
    anchor = await _deploy_one(conn, deployer, "TimestampAnchor", [], [])
    auction = await _deploy_one(
        conn,
        deployer,
        "AuctionHouse",
        ["address", "address", "address"] + ["uint256"] * 7,
        [
            coin,
            reg,
            lm,
            p.auction_commit_window,
            p.auction_reveal_window,
            p.auction_commit_blocks,
            p.auction_reveal_blocks,
            p.auction_seed_delay,
            p.auction_bid_deposit,
            p.auction_max_bids,
        ],
    )
    await call_as(
        conn, deployer, "ProviderRegistry", reg, "setLeaseManager", [lm], "bind the lease manager"
    )
    await call_as(
        conn, deployer, "LeaseManager", lm, "setAuctionHouse", [auction], "authorise the auctions"
    )
    # Every class has its module and the auction house is set; nobody may change them later.
    await call_as(
        conn,
        deployer,
        "LeaseManager",
        lm,
        "renounceOwnership",
        [],
        "renounce lease manager ownership",
    )
    return Deployment(
        chain_id=conn.chain_id,
        rpc_url=conn.url,
        addresses={
            "NuxCoin": coin,
            "KeyDirectory": keys,
            "ProviderRegistry": reg,
            "LeaseManager": lm,
            "StorageSettlement": storage,
            "TimestampAnchor": anchor,
            "AuctionHouse": auction,
        },
        params=p,
        deployer=d,
        block=await conn.block_number(),
        modules={cls.name.lower(): address for cls, address in chosen.items()},
    )
