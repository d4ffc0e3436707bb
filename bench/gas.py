"""Gas used by each ledger operation on the embedded EVM, as ``name=value`` lines.

    .venv/bin/python bench/gas.py

Goals: open lease <= 200k gas, claim <= 60k. Each figure is the gasUsed of one transaction
(approvals are separate transactions and listed on their own). Claim is measured as the
provider's second claim on a lease (the common case: the provider already holds NuxCoin).
"""

from __future__ import annotations

import asyncio
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3.logs import DISCARD

from nuclux.chain import ChainConnection, DeployParams, Ledger, deploy
from nuclux.chain.ledger import ProviderOffer
from nuclux.chain.usage import Usage
from nuclux.core.types import ONE_NUX, ResourceClass

GOALS = {"gas_open_lease": 200_000, "gas_claim": 60_000}


def key(label: str) -> LocalAccount:
    acct: LocalAccount = Account.from_key(keccak(text=f"nuclux-bench/{label}"))
    return acct


async def main() -> dict[str, int]:
    out: dict[str, int] = {}
    conn = await ChainConnection.open("embedded")
    try:
        d = key("deployer")
        await conn.fund_gas(d.address, 10**21)
        p = DeployParams(epoch_length=60)
        dep = await deploy(conn, d, p)
        # deployment gas from the receipts of the creating transactions
        names = {addr: name for name, addr in dep.addresses.items()}
        names[dep.modules["compute"]] = "CumulativeSettlement"
        for n in range(1, dep.block + 1):
            for tx_hash in (await conn.w3.eth.get_block(n))["transactions"]:
                r = await conn.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
                name = names.get(str(r["contractAddress"]))
                if name:
                    out[f"gas_deploy_{name}"] = int(r["gasUsed"])
        reg, lm = dep.address("ProviderRegistry"), dep.address("LeaseManager")
        bank = Ledger(conn, dep, d)
        prov, op, cons = (bank.for_account(key(x)) for x in ("provider", "operator", "consumer"))
        for who in (prov, op, cons):
            await conn.fund_gas(who.address, 10**20)

        async def gas(who: Ledger, contract: Any, fn: str, args: list[Any]) -> int:
            r = await who._send(contract, fn, args, fn)
            return int(r["gasUsed"])

        out["gas_erc20_transfer_new_holder"] = await gas(
            bank, bank.coin, "transfer", [cons.address, 10_000 * ONE_NUX]
        )
        out["gas_erc20_transfer"] = await gas(
            bank, bank.coin, "transfer", [cons.address, 1_000 * ONE_NUX]
        )
        await bank.transfer(prov.address, 1_000 * ONE_NUX)
        out["gas_erc20_approve"] = await gas(prov, prov.coin, "approve", [reg, 500 * ONE_NUX])
        offer = ProviderOffer(
            "https://127.0.0.1:7000",
            b"\1" * 32,
            b"\2" * 32,
            (1000, 4, 1000),
            (10**15, 10**15, 10**15),
        )
        out["gas_register"] = await gas(
            prov,
            prov.registry,
            "register",
            [
                op.address,
                200 * ONE_NUX,
                offer.endpoint,
                offer.cert_fingerprint,
                offer.x25519_key,
                list(offer.capacity),
                list(offer.price),
            ],
        )
        out["gas_publish_key"] = await gas(cons, cons.keydir, "publish", [b"\3" * 32])
        await gas(cons, cons.coin, "approve", [lm, 10**30])

        async def open_one() -> tuple[int, int]:
            r = await cons._send(
                cons.leases, "openLease", [prov.address, 0, 10, 10, 10**15, ONE_NUX], "open"
            )
            lid = cons.leases.events.LeaseOpened().process_receipt(r, errors=DISCARD)[0]["args"][
                "id"
            ]
            return int(lid), int(r["gasUsed"])

        lid, out["gas_open_lease"] = await open_one()
        out["gas_accept"] = await gas(op, op.leases, "accept", [lid])
        await conn.advance_time(120)
        out["gas_claim_first"] = await gas(op, op.leases, "claim", [lid])
        await conn.advance_time(120)
        out["gas_claim"] = await gas(op, op.leases, "claim", [lid])
        out["gas_extend"] = await gas(cons, cons.leases, "extend", [lid, 5, ONE_NUX])
        out["gas_accept_extension"] = await gas(op, op.leases, "acceptExtension", [lid])
        out["gas_top_up"] = await gas(cons, cons.leases, "topUp", [lid, ONE_NUX])
        out["gas_cancel"] = await gas(cons, cons.leases, "cancel", [lid])
        await conn.advance_time(p.dispute_window + 1)
        out["gas_settle"] = await gas(cons, cons.leases, "settle", [lid])
        lid2, _ = await open_one()
        out["gas_decline"] = await gas(op, op.leases, "decline", [lid2])
        lid3, _ = await open_one()
        await gas(op, op.leases, "accept", [lid3])
        await conn.advance_time(11 * 60)
        out["gas_end_term"] = await gas(cons, cons.leases, "endTerm", [lid3])
        lid4, _ = await open_one()
        await conn.advance_time(p.accept_window + 1)
        out["gas_expire_ticket"] = await gas(cons, cons.leases, "expireTicket", [lid4])

        # a metered (compute) lease: the provider submits a co-signed cumulative total
        r = await cons._send(
            cons.leases, "openLease", [prov.address, 1, 1, 10, 10**15, ONE_NUX], "open"
        )
        ev = cons.leases.events.LeaseOpened().process_receipt(r, errors=DISCARD)[0]
        lid5 = int(ev["args"]["id"])
        await op.accept(lid5)
        compute = ResourceClass.COMPUTE
        for rev in (1, 2):
            u = Usage(lid5, rev, rev * 10**15)
            r = await op.submit_usage(
                compute, u, cons.sign_usage(compute, u), op.sign_usage(compute, u)
            )
            out["gas_submit_usage_first" if rev == 1 else "gas_submit_usage"] = int(r["gasUsed"])
        out["gas_claim_metered"] = await gas(op, op.leases, "claim", [lid5])
    finally:
        await conn.close()
    return out


if __name__ == "__main__":
    figures = asyncio.run(main())
    for name, value in figures.items():
        print(f"{name}={value}")
    for name, goal in GOALS.items():
        print(f"{name}_goal={goal}")
        print(f"{name}_within_goal={'true' if figures[name] <= goal else 'false'}")
