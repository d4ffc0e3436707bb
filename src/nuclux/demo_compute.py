"""The demo's compute part: a job on the demo node's compute slots, paid from escrow.

The consumer runs the ``wc`` example (a C program compiled to WASI) on the node through the
SDK (``ComputeClient``): the SDK leases a compute slot, sends the module and the input over
pinned TLS, checks the receipt the node signed and countersigns the payment (fuel used x
price). Then it ends the lease (submitting the co-signed total on chain) and, once the dispute
window has passed, settles it: the provider is paid exactly that total and the rest of the
escrow comes back. Outside a checkout (no ``examples/``), a tiny module built from text
stands in for ``wc``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import wasmtime

from nuclux.chain import ChainConnection, Deployment, Ledger
from nuclux.core.compute_account import charge
from nuclux.core.job import JobLimits
from nuclux.core.types import ResourceClass, format_nux
from nuclux.keys.derive import from_private_key
from nuclux.sdk import ComputeClient, ComputeSettings

WC = Path(__file__).resolve().parents[2] / "examples" / "jobs" / "wc.wasm"
TEXT = b"Nuclux runs jobs on leased compute slots.\nEvery job is metered in fuel.\n"
HELLO = """(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from a Nuclux provider\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 29))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""
LIMITS = JobLimits(
    fuel=10**7,
    memory_bytes=16 << 20,
    timeout_ms=10_000,
    output_bytes=1 << 20,
    scratch_bytes=1 << 20,
)


async def compute_section(
    conn: ChainConnection, dep: Deployment, consumer: Ledger, step: Callable[[str], None]
) -> dict[str, Any]:
    """Run one job on the demo node (it must be serving with compute slots)."""
    if WC.exists():
        module, args, inputs, name = WC.read_bytes(), ["/in/words.txt"], {"words.txt": TEXT}, "wc"
    else:
        module, args, inputs, name = bytes(wasmtime.wat2wasm(HELLO)), [], {}, "hello"
    settings = ComputeSettings(
        units=1, escrow_jobs=4, accept_timeout=30.0, poll_interval=0.1, use_market=False
    )
    keys = from_private_key(bytes(consumer.account.key))
    async with ComputeClient(consumer, keys, settings) as client:
        out = await client.run(module, args, inputs, limits=LIMITS, name=name)
        out.check()
        (lease_id,) = out.leases
        lease = await consumer.lease(lease_id)
        stdout = " ".join(out.result.stdout.decode().split())
        step(
            f"the node ran {name}.wasm (C compiled to WASI) under compute lease {lease_id}: "
            f"stdout {stdout!r}, {out.fuel_used:,} fuel, paid "
            f"{format_nux(out.cost)} NUX at {format_nux(lease.price)} NUX per million fuel; "
            "the consumer checked the node's signed receipt and countersigned the payment"
        )
        await client.end_leases()
        await conn.advance_time(dep.params.dispute_window + 1)
        refunds = dict(await client.recover())
    settled = await consumer.lease(lease_id)
    step(
        f"lease {lease_id} ended: the co-signed total went on chain, the provider was paid "
        f"{format_nux(settled.paid)} NUX (fuel x price, to the wei) and "
        f"{format_nux(refunds.get(lease_id, 0))} NUX of escrow came back"
    )
    return {
        "lease": lease_id,
        "module": name,
        "stdout": out.result.stdout.decode(errors="replace"),
        "fuel_used": out.fuel_used,
        "cost_wei": out.cost,
        "expected_wei": charge(out.fuel_used, lease.price),
        "paid_wei": settled.paid,
        "refund_wei": refunds.get(lease_id, 0),
        "escrow_wei": lease.escrow,
        "class": ResourceClass.COMPUTE.name.lower(),
    }
