"""Running a node: identity, registration check, store, chain view, API server, agent.

Theory of operation
-------------------
``NodeRuntime.start`` loads the node's TLS identity and configuration, opens the shard store
(which checks itself and removes debris from a crash), catches the chain view up, and checks
the on-chain registration made by the owner (cold) key with ``nuclux node register``: the
operator must be this node's key, and endpoint, certificate fingerprint, capacities and prices
are brought in line with the configuration by an ``update`` the operator may sign (an "auto"
posted price is chosen from the market's reference price by ``nuclux.node.posted_prices``,
which then keeps following it in its own loop). Then it
serves the API over TLS 1.3 and runs the follower and the lease agent until ``stop``, and, when
the deployment has an auction house and ``[market] bid_poll`` is positive, the bid agent
(``nuclux.node.bid_agent``) in its own faster loop.

``stop`` first stops accepting connections and lets in-flight requests finish (aiohttp's
shutdown waits for handlers, bounded); an upload cut short is rolled back by the store writer,
so no partial object ever becomes visible. Then the loops end and the store and view close.
Several runtimes can share one ``ChainConnection`` (the embedded chain in tests and the demo).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field

from aiohttp import web
from eth_account.signers.local import LocalAccount

from nuclux.chain import ChainConnection, Deployment, Ledger
from nuclux.chain.ledger import ProviderOffer
from nuclux.chain.market_ledger import MarketLedger
from nuclux.core.auth import ReplayGuard, RequestVerifier
from nuclux.core.types import ResourceClass
from nuclux.errors import ConfigError
from nuclux.keys.derive import from_private_key
from nuclux.net.tls import NodeIdentity, server_ssl_context
from nuclux.node.agent import LeaseAgent
from nuclux.node.bid_agent import BidAgent
from nuclux.node.bid_agent_policy import PricePolicy
from nuclux.node.bid_agent_state import BidBook
from nuclux.node.compute.service import ComputeService, start_compute
from nuclux.node.config import NodeConfig, identity_paths
from nuclux.node.follower import ChainView
from nuclux.node.posted_prices import (
    PostedPrices,
    PriceChoice,
    choose_all,
    prices_of,
    save_choices,
)
from nuclux.node.prover import Prover
from nuclux.node.revisions import RevisionSigner
from nuclux.node.server import NodeService
from nuclux.node.store import ShardStore

log = logging.getLogger("nuclux.node")

SHUTDOWN_TIMEOUT = 30.0  # in-flight requests get this long to finish on SIGTERM


def offer_for(
    cfg: NodeConfig,
    identity: NodeIdentity,
    x25519_public: bytes,
    prices: tuple[int, int, int] | None = None,
) -> ProviderOffer:
    return ProviderOffer(
        endpoint=cfg.endpoint,
        cert_fingerprint=identity.fingerprint,
        x25519_key=x25519_public,
        capacity=cfg.capacity,
        price=cfg.prices if prices is None else prices,
    )


def _market(
    conn: ChainConnection, deployment: Deployment, who: LocalAccount
) -> MarketLedger | None:
    return MarketLedger(conn, deployment, who) if "AuctionHouse" in deployment.addresses else None


@dataclass
class NodeRuntime:
    cfg: NodeConfig
    ledger: Ledger
    view: ChainView
    store: ShardStore
    identity: NodeIdentity
    service: NodeService
    agent: LeaseAgent
    runner: web.AppRunner
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    owns_connection: bool = False
    compute: ComputeService | None = None
    bids: BidAgent | None = None
    prices: PostedPrices | None = None

    @property
    def url(self) -> str:
        host, port = self.runner.addresses[0][:2]
        return f"https://{host}:{port}"

    @classmethod
    async def start(
        cls,
        cfg: NodeConfig,
        operator: LocalAccount,
        conn: ChainConnection,
        deployment: Deployment,
        *,
        poll_interval: float = 1.0,
        owns_connection: bool = False,
        unit_bytes: int | None = None,
    ) -> NodeRuntime:
        identity = NodeIdentity.load(*identity_paths(cfg))
        await conn.follow_heads()  # the head pushed, not polled, where the endpoint can
        ledger = Ledger(conn, deployment, operator)
        view = ChainView(ledger, cfg.view_path)
        try:
            await view.catch_up()
            choices = await _check_registration(cfg, ledger, view, identity)
        except BaseException:
            view.close()
            raise
        store = await ShardStore.open(
            cfg.store_dir,
            cfg.storage_bytes,
            grace_seconds=cfg.grace_seconds,
            max_object_size=cfg.max_object_bytes,
        )
        service = NodeService(
            owner=cfg.owner,
            operator=operator.address,
            fingerprint=identity.fingerprint,
            chain_id=conn.chain_id,
            store=store,
            view=view,
            verifier=RequestVerifier(identity.fingerprint, ReplayGuard(120)),
            max_object_bytes=cfg.max_object_bytes,
            capacities=cfg.capacity,
            revision_signer=RevisionSigner.for_ledger(ledger),  # the operator key
        )
        prover = Prover(ledger, store) if Prover.supported(ledger) else None
        agent = LeaseAgent(cfg.owner, ledger, view, store, prover=prover)
        if unit_bytes is not None:
            service.unit_bytes = agent.unit_bytes = unit_bytes
        service.draining_fn = lambda: agent.draining

        async def refresh() -> None:
            head = await conn.block_number(fresh=True)  # a client's block, maybe not pushed yet
            await view.wait_for_block(head, timeout=5)

        service.refresh_fn = refresh
        compute = await _start_compute(cfg, ledger, service) if cfg.compute_units > 0 else None
        if compute is not None:  # the agent accepts compute tickets within these units
            agent.compute_units, agent.compute_accounts = cfg.compute_units, compute.accounts
        # the runner's own wait comes after NodeService.finish_requests has waited already
        runner = service.runner(shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(
            runner, cfg.listen_host, cfg.listen_port, ssl_context=server_ssl_context(identity)
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            await _stop_compute(compute)
            raise
        rt = cls(
            cfg,
            ledger,
            view,
            store,
            identity,
            service,
            agent,
            runner,
            owns_connection=owns_connection,
            compute=compute,
            bids=_bid_agent(cfg, agent, conn, deployment, operator),
        )
        rt.prices = PostedPrices(cfg, ledger, _market(conn, deployment, operator))
        if rt.bids is not None:  # bid costs not configured follow the posted prices
            rt.prices.costs = rt.bids.policy.costs
        rt.prices.follow(choices)
        save_choices(cfg.data_dir, choices, updated=False)
        rt.tasks = [
            asyncio.create_task(view.run(rt.stop_event, poll_interval)),
            asyncio.create_task(agent.run(rt.stop_event, poll_interval)),
        ]
        if rt.bids is not None:
            rt.tasks.append(asyncio.create_task(rt.bids.run(rt.stop_event, cfg.bid_poll)))
        if any(cfg.price_auto):
            rt.tasks.append(asyncio.create_task(rt.prices.run(rt.stop_event)))
        log.info("node %s serving %s", cfg.owner, rt.url)
        return rt

    async def stop(self) -> None:
        """Stop gracefully: close the listening socket, let requests being handled finish
        (uploads included) for up to SHUTDOWN_TIMEOUT, then close connections; a request
        still running then is cancelled and its upload rolled back (never left partial)."""
        self.stop_event.set()
        for site in list(self.runner.sites):
            await site.stop()  # closes the listening socket only
        if not await self.service.finish_requests(SHUTDOWN_TIMEOUT):
            log.warning("requests still running after %.0f s are cancelled", SHUTDOWN_TIMEOUT)
        await self.runner.cleanup()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await _stop_compute(self.compute)
        await self.store.close()
        self.view.close()
        if self.bids is not None:
            self.bids.book.close()
        if self.owns_connection:
            await self.ledger.conn.close()

    async def serve_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        try:
            await done.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.stop()


def _bid_agent(
    cfg: NodeConfig,
    agent: LeaseAgent,
    conn: ChainConnection,
    deployment: Deployment,
    operator: LocalAccount,
) -> BidAgent | None:
    """The node's bid agent, or None when it does not bid (``bid_poll`` <= 0, or no
    auction house in the deployment)."""
    if cfg.bid_poll <= 0:
        return None
    if "AuctionHouse" not in deployment.addresses:
        log.warning("the deployment has no AuctionHouse: the node does not bid")
        return None
    policy = PricePolicy(dict(zip(ResourceClass, cfg.costs, strict=True)), cfg.bid_script)
    # (an "auto" price's cost is set from the posted price as soon as it is chosen)
    market = MarketLedger(conn, deployment, operator)
    return BidAgent(agent, market, BidBook(cfg.bids_path), policy)


async def _start_compute(cfg: NodeConfig, ledger: Ledger, service: NodeService) -> ComputeService:
    """The node's compute slots: a pool of started workers and the lease accounts."""
    compute = await start_compute(
        cfg.compute_units,
        cfg.data_dir,
        ledger,
        verifier=service.verifier,
        lease_for=service.fresh_lease,
        clock=service.clock,
        corrupt_results=cfg.corrupt_results,
    )
    service.compute = compute
    return compute


async def _stop_compute(compute: ComputeService | None) -> None:
    if compute is not None:
        await compute.close()


async def _check_registration(
    cfg: NodeConfig, ledger: Ledger, view: ChainView, identity: NodeIdentity
) -> list[PriceChoice]:
    info = view.provider(cfg.owner)
    if info is None or info.status == "none":
        raise ConfigError(
            f"provider {cfg.owner} is not registered: run `nuclux node register` with the "
            "owner key first"
        )
    if info.operator.lower() != ledger.address.lower():
        raise ConfigError(
            f"the registry names {info.operator} as operator of {cfg.owner}, but this node's "
            f"operator key is {ledger.address}"
        )
    market = _market(ledger.conn, ledger.deployment, ledger.account)
    choices = await choose_all(cfg, market, info.price)
    offer = offer_for(cfg, identity, info.x25519_key, prices_of(choices))
    current = (info.endpoint, info.cert_fingerprint, info.capacity, info.price)
    wanted = (offer.endpoint, offer.cert_fingerprint, offer.capacity, offer.price)
    if current != wanted:
        log.info("updating the registration of %s to match the node's configuration", cfg.owner)
        receipt = await ledger.update_provider(offer, provider=cfg.owner)
        await view.wait_for_block(int(receipt["blockNumber"]), timeout=30)
    return choices


async def register(
    cfg: NodeConfig,
    owner: LocalAccount,
    operator_address: str,
    conn: ChainConnection,
    deployment: Deployment,
) -> None:
    """With the owner (cold) key: stake and register this node (or update it)."""
    if owner.address.lower() != cfg.owner.lower():
        raise ConfigError(f"this node belongs to {cfg.owner}, not {owner.address}")
    identity = NodeIdentity.load(*identity_paths(cfg))
    ledger = Ledger(conn, deployment, owner)
    x25519 = from_private_key(bytes(owner.key)).x25519_public
    info = await ledger.provider(owner.address)
    posted = info.price if info.status != "none" else (0, 0, 0)
    choices = await choose_all(cfg, _market(conn, deployment, owner), posted)
    offer = offer_for(cfg, identity, x25519, prices_of(choices))
    if info.status == "none":
        await ledger.register_provider(offer, cfg.stake, operator=operator_address)
    else:
        if info.operator.lower() != operator_address.lower():
            await ledger.set_operator(operator_address)
        await ledger.update_provider(offer)
