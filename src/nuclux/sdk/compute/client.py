"""``ComputeClient``: the consumer's compute API (run, map, jobs, recover).

Theory of operation
-------------------
One client serves one account, like ``StorageClient``: its ``Ledger`` (chain access, signing
as the account) and its keys. ``run`` builds a job spec (a fresh random nonce per job; for
replicated jobs the deterministic profile and one random seed shared by the replicas), then
the runner (``nuclux.sdk.compute.runner``) places it on leased slots, replaces providers that
fail, checks replicas by majority and countersigns every payment. ``map`` runs one job per
input over the providers in parallel, as many at once as the leases have slots. Every job is
written to the journal (``jobs``). ``recover`` settles cancelled leases once their dispute
window has passed, so the escrow not owed comes back; ``end_leases`` cancels the leases in
use (after submitting the latest co-signed usage) when the consumer is done.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from nuclux.chain import Ledger
from nuclux.core.job import ComputeError, JobLimits, JobSpec, check_module, make_job_spec
from nuclux.errors import NucluxError, UsageError
from nuclux.keys.derive import AccountKeys
from nuclux.sdk.compute.accounts import Accounts
from nuclux.sdk.compute.journal import JobEntry, Journal, journal_path
from nuclux.sdk.compute.leases import ComputeLeases
from nuclux.sdk.compute.runner import JobOutcome, Runner
from nuclux.sdk.compute.settings import ComputeSettings, NoMajority
from nuclux.sdk.peers import Peers

MAX_JOB_SECONDS = 86_400
MapProgress = Callable[[int, int], None]
"""``progress(jobs_done, jobs_total)`` during ``map``."""


@dataclass(frozen=True, slots=True)
class MapItem:
    """One job of a ``map``: its input name and outcome, or why it could not run."""

    name: str
    outcome: JobOutcome | None
    error: NucluxError | None

    @property
    def ok(self) -> bool:
        return self.outcome is not None and self.outcome.ok


class ComputeClient:
    def __init__(
        self, ledger: Ledger, keys: AccountKeys, settings: ComputeSettings | None = None
    ) -> None:
        self.settings = settings or ComputeSettings()
        self.ledger = ledger
        timeout = MAX_JOB_SECONDS + self.settings.request_grace  # calls bound themselves
        self.peers = Peers(ledger, keys.eth_private_key, timeout=timeout)
        self.leases = ComputeLeases(ledger, self.peers, self.settings)
        self.accounts = Accounts(ledger, timeout=self.settings.call_timeout)
        self.runner = Runner(self.leases, self.accounts, self.settings)
        directory = self.settings.journal_dir
        dep = ledger.deployment
        self.journal = Journal(
            None
            if directory is None
            else journal_path(directory, dep.chain_id, dep.address("LeaseManager"), ledger.address)
        )
        for entry in self.journal.entries():  # reputation: providers outvoted before
            for provider in entry.declined:
                self.leases.retired.setdefault(
                    provider.lower(), f"outvoted by replicas in job {entry.id[:16]}"
                )

    async def __aenter__(self) -> ComputeClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.peers.close()

    @property
    def address(self) -> str:
        return self.ledger.address

    @property
    def transactions(self) -> int:
        """Chain transactions this client sent (leases opened, topped up, cancelled)."""
        return self.leases.transactions

    # ------------------------------------------------------------------ jobs

    async def run(
        self,
        module: bytes | Path,
        args: Sequence[str] = (),
        inputs: Mapping[str, bytes] | None = None,
        *,
        replicas: int | None = None,
        limits: JobLimits | None = None,
        max_price: int | None = None,
        deterministic: bool = False,
        name: str | None = None,
    ) -> JobOutcome:
        """Run ``module`` (bytes, or a path to a ``.wasm`` file) with ``args`` and ``inputs``
        (name -> content, seen by the job as ``/in/<name>``). ``replicas`` >= 2 runs it on that
        many providers in the deterministic profile and accepts the majority's result
        (``NoMajority`` without one). ``max_price`` is in wei per million fuel. The outcome
        holds the result whatever its exit status (``outcome.check()`` raises ``JobFailed``)."""
        code, label = _module(module, name)
        r = self._replicas(replicas)
        spec = self._spec(code, dict(inputs or {}), args, limits, r, deterministic)
        return await self._run(spec, code, dict(inputs or {}), label, r, max_price)

    async def map(
        self,
        module: bytes | Path,
        inputs: Sequence[tuple[str, bytes]],
        args: Sequence[str] = (),
        *,
        replicas: int | None = None,
        limits: JobLimits | None = None,
        max_price: int | None = None,
        progress: MapProgress | None = None,
        name: str | None = None,
    ) -> list[MapItem]:
        """One job per input (``(name, content)``: the job's only input, ``/in/<name>``),
        spread over providers and run in parallel, as many at once as the leases have slots.
        Items come back in input order; a job that could not run carries its error."""
        code, label = _module(module, name)
        r = self._replicas(replicas)
        specs = [self._spec(code, {n: d}, args, limits, r, False) for n, d in inputs]
        fuel = specs[0].limits.fuel if specs else 1
        cap = self.settings.max_price if max_price is None else max_price
        want = max(r, min(len(specs), self.settings.max_providers))
        got = await self.leases.ensure(want, exclude=set(), fuel_limit=fuel, max_price=cap)
        gate = asyncio.Semaphore(max(1, sum(x.lease.units for x in got) // r))
        done = 0

        async def one(spec: JobSpec, item: tuple[str, bytes]) -> MapItem:
            nonlocal done
            async with gate:
                try:
                    out = await self._run(spec, code, {item[0]: item[1]}, label, r, max_price)
                    result = MapItem(item[0], out, None)
                except NucluxError as err:
                    result = MapItem(item[0], None, err)
            done += 1
            if progress is not None:
                progress(done, len(specs))
            return result

        return list(await asyncio.gather(*(one(s, i) for s, i in zip(specs, inputs, strict=True))))

    def jobs(self) -> list[JobEntry]:
        """The jobs this account ran (from the journal), oldest first."""
        return self.journal.entries()

    async def recover(self) -> list[tuple[int, int]]:
        """Settle our cancelled compute leases whose dispute window has passed: (lease id, wei
        refunded) each."""
        return await self.leases.recover()

    async def end_leases(self) -> list[int]:
        """Cancel every live compute lease of ours, submitting its latest co-signed usage
        first (so its provider is paid exactly that); ``recover`` later returns the rest."""
        out: list[int] = []
        for cl in await self.leases.held():
            await self.leases.retire(cl, "ended by the consumer", self.accounts.latest(cl.id))
            out.append(cl.id)
        return out

    # ------------------------------------------------------------------ internals

    def _replicas(self, replicas: int | None) -> int:
        r = self.settings.replicas if replicas is None else replicas
        if not isinstance(r, int) or r < 1:
            raise UsageError(f"replicas must be at least 1, not {r}")
        return r

    def _spec(
        self,
        module: bytes,
        inputs: dict[str, bytes],
        args: Sequence[str],
        limits: JobLimits | None,
        replicas: int,
        deterministic: bool,
    ) -> JobSpec:
        if isinstance(args, str):
            raise UsageError("args is a sequence of strings, not one string")
        det = deterministic or replicas > 1
        return make_job_spec(
            module,
            inputs,
            list(args),
            limits=limits,
            deterministic=det,
            seed=os.urandom(32) if det else bytes(32),
            nonce=os.urandom(16),
        )

    async def _run(
        self,
        spec: JobSpec,
        module: bytes,
        inputs: dict[str, bytes],
        label: str,
        replicas: int,
        max_price: int | None,
    ) -> JobOutcome:
        cap = self.settings.max_price if max_price is None else max_price
        entry = JobEntry(
            id=spec.job_id.hex(),
            module=label,
            module_hash=spec.module_hash.hex(),
            args=list(spec.args),
            inputs=[i.name for i in spec.inputs],
            replicas=replicas,
            state="running",
            started=time.time(),
        )
        self.journal.record(entry)
        tried: list[str] = []
        try:
            out = await self.runner.run_job(
                spec, module, inputs, replicas=replicas, max_price=cap, on_provider=tried
            )
        except BaseException as err:
            state = "no-majority" if isinstance(err, NoMajority) else "error"
            message = " ".join(str(err).split()) or type(err).__name__
            self.journal.record(
                replace(entry, state=state, finished=time.time(), providers=tried, message=message)
            )
            raise
        result = out.result
        self.journal.record(
            replace(
                entry,
                state="succeeded" if result.ok else "failed",
                finished=time.time(),
                providers=list(out.providers),
                declined=list(out.declined),
                fuel_used=out.fuel_used,
                cost_wei=out.cost,
                status=result.status.name,
                exit_code=result.exit_code,
                message=result.message,
            )
        )
        return out


def _module(module: bytes | Path, name: str | None) -> tuple[bytes, str]:
    """The module's bytes and a name for the journal; ``UsageError`` for a missing file,
    ``JobRejected`` for one that is not a binary WebAssembly module."""
    if isinstance(module, bytes | bytearray):
        code, label = bytes(module), name or "module"
    elif isinstance(module, Path | str):
        path = Path(module)
        try:
            code = path.read_bytes()
        except FileNotFoundError:
            raise UsageError(f"{path}: no such module file") from None
        except OSError as err:
            raise UsageError(f"{path}: cannot read the module: {err}") from None
        label = name or path.name
    else:
        raise UsageError("module is the bytes of a .wasm file or its path")
    try:
        check_module(code)
    except ComputeError as err:
        raise UsageError(f"{label}: {err}") from None
    return code, label
