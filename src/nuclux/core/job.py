"""Compute jobs: the job spec, its result and the receipt a provider signs for it.

Theory of operation
-------------------
A job is a WASI (preview 1) command module run on a provider with the inputs the spec names,
under limits the buyer chose. The spec carries hashes, not data: the module and every input
travel separately and are checked against it (``check_module``, ``check_inputs``). Its
canonical encoding (integers big-endian; frozen by ``tests/core/vectors/job.json``) is::

    version u8 = 1 | module_hash 32 | flags u8 (bit 0: deterministic) | seed 32 | nonce 16
    | fuel u64 | memory_bytes u64 | timeout_ms u32 | stdout_bytes u32 | stderr_bytes u32
    | output_bytes u64 | scratch_bytes u64
    | argc u16 (0..256) | per arg: len u16 (0..4096) || UTF-8 without NUL
    | inputs u16 (0..256) | per input, names strictly increasing:
                            len u8 (1..64) || name || sha256 32 || size u64

and the job id is ``sha256(lp(b"nuclux/job-spec/v1") || encoding)`` (``lp`` = 2-byte length
prefix), so a receipt names exactly one job. The nonce makes two submissions of the same work
two jobs. ``seed`` drives ``random_get`` in the deterministic profile and is otherwise unused.

The result hash covers what replicas must agree on, no more::

    sha256(lp(b"nuclux/job-result/v1") || status u8 || exit_code u32
           || len u32 || stdout || count u16 || per output, names strictly increasing:
           len u8 || name || size u64 || data)

Stderr, fuel and wall time are left out: they are diagnostics and metering, not results.
Outputs are collected only when the job exited; a job stopped by a limit has none.

A provider signs a receipt per job (secp256k1 via ``nuclux.core.auth``), 170 bytes::

    version u8 = 1 | job_id 32 | lease_id 32 | fuel_used u64 | result_hash 32
    | signature 65 over sha256(lp(b"nuclux/compute-receipt/v1") || all of the above)

Names (inputs under ``/in/``, outputs under ``/out/``) are 1-64 characters of
``[A-Za-z0-9._-]`` not starting with a dot, so none can climb out of its directory.
Every field has a bound; decoding is strict and round-trips exactly.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Final

from nuclux.core.auth import SIGNATURE_BYTES, recover_signer, sign_message, to_address
from nuclux.core.reference import Reader
from nuclux.core.types import Address, LeaseId
from nuclux.errors import IntegrityError, NucluxError, Unauthenticated, UsageError

JOB_SPEC_TAG: Final = b"nuclux/job-spec/v1"
JOB_RESULT_TAG: Final = b"nuclux/job-result/v1"
RECEIPT_TAG: Final = b"nuclux/compute-receipt/v1"
JOB_SPEC_VERSION: Final = 1
RECEIPT_VERSION: Final = 1
WASM_HEADER: Final = b"\0asm\x01\0\0\0"
MAX_MODULE_BYTES: Final = 32 << 20
MAX_ARGS: Final = 256
MAX_ARG_BYTES: Final = 4096
MAX_INPUTS: Final = 256
MAX_OUTPUTS: Final = 256
MAX_NAME_BYTES: Final = 64
SEED_BYTES: Final = 32
JOB_NONCE_BYTES: Final = 16
RECEIPT_BYTES: Final = 1 + 32 + 32 + 8 + 32 + SIGNATURE_BYTES
MAX_LEASE_ID: Final = 2**256 - 1
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_FLAG_DETERMINISTIC: Final = 1


def _tagged(tag: bytes) -> bytes:
    return len(tag).to_bytes(2, "big") + tag


# -- errors (their own branch of the tree: ComputeError, exit 9) -------------------------------


class ComputeError(NucluxError):
    """A compute job could not be run or did not succeed."""

    exit_code: ClassVar[int] = 9


class JobRejected(ComputeError):
    """The module or spec cannot run here: not a binary WASI module, an import the sandbox
    does not offer, a limit above the node's ceiling, or compilation over its limits."""


class JobFailed(ComputeError):
    """The job ran but did not succeed: a limit, a trap or a non-zero exit status."""


class ComputeBusy(ComputeError):
    """Every compute slot of the node is busy: retry later or elsewhere."""


# -- names and modules -------------------------------------------------------------------------


def check_name(name: str, what: str) -> str:
    """``name`` if it is a valid input or output file name, else ``UsageError``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(
            f"invalid {what} name {name!r}: use 1-{MAX_NAME_BYTES} characters of"
            " A-Z a-z 0-9 . _ - not starting with a dot"
        )
    return name


def check_module(module: bytes) -> bytes:
    """The module's sha256 if ``module`` is plausibly a binary core module (size bound, magic,
    version 1), checked before any parser sees it; ``JobRejected`` otherwise."""
    if not isinstance(module, bytes | bytearray | memoryview):
        raise JobRejected("the module must be bytes of a binary WebAssembly module")
    if len(module) > MAX_MODULE_BYTES:
        raise JobRejected(f"module of {len(module)} bytes exceeds {MAX_MODULE_BYTES} bytes")
    head = bytes(module[:8])
    if len(head) < len(WASM_HEADER):
        raise JobRejected("not a binary WebAssembly module: shorter than its 8-byte header")
    if head[:4] != WASM_HEADER[:4]:
        hint = " (WebAssembly text? compile it to binary)" if head[:1] in b"(; \t\n" else ""
        raise JobRejected(f"not a binary WebAssembly module: bad magic{hint}")
    if head != WASM_HEADER:
        raise JobRejected(
            f"unsupported WebAssembly version {head[4:].hex()}: expected a core module,"
            " version 1 (components are not supported)"
        )
    return hashlib.sha256(module).digest()


# -- the spec ---------------------------------------------------------------------------------


def _utf8_length(text: str) -> int:
    """The UTF-8 length of ``text``, or -1 when it has none (lone surrogates)."""
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        return -1


def _bounded(value: int, low: int, high: int, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise UsageError(f"{what} must be an integer in {low}..{high}, got {value!r}")


@dataclass(frozen=True, slots=True)
class JobLimits:
    """What a job may use. ``scratch_bytes`` bounds all files in its directory together,
    inputs included; ``output_bytes`` bounds the collected outputs together."""

    fuel: int = 10_000_000_000
    memory_bytes: int = 256 << 20
    timeout_ms: int = 60_000
    stdout_bytes: int = 1 << 20
    stderr_bytes: int = 64 << 10
    output_bytes: int = 64 << 20
    scratch_bytes: int = 256 << 20

    BOUNDS: ClassVar[dict[str, tuple[int, int]]] = {
        "fuel": (1, 2**63 - 1),
        "memory_bytes": (64 << 10, 4 << 30),
        "timeout_ms": (1, 86_400_000),
        "stdout_bytes": (0, 64 << 20),
        "stderr_bytes": (0, 64 << 20),
        "output_bytes": (0, 1 << 30),
        "scratch_bytes": (0, 16 << 30),
    }

    def __post_init__(self) -> None:
        for name, (low, high) in self.BOUNDS.items():
            _bounded(getattr(self, name), low, high, f"limit {name}")

    def exceeds(self, ceiling: JobLimits) -> list[str]:
        """The names of the limits above ``ceiling``'s."""
        return [n for n in self.BOUNDS if getattr(self, n) > getattr(ceiling, n)]


@dataclass(frozen=True, slots=True)
class InputRef:
    """An input file as the spec names it: ``/in/<name>``, its sha256 and size."""

    name: str
    sha256: bytes
    size: int

    def __post_init__(self) -> None:
        check_name(self.name, "input")
        if not isinstance(self.sha256, bytes) or len(self.sha256) != 32:
            raise UsageError(f"input {self.name}: sha256 must be 32 bytes")
        _bounded(self.size, 0, 16 << 30, f"input {self.name} size")


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What the buyer asks a provider to run. Build one with ``make_job_spec``."""

    module_hash: bytes
    args: tuple[str, ...] = ()
    inputs: tuple[InputRef, ...] = ()
    limits: JobLimits = field(default_factory=JobLimits)
    deterministic: bool = False
    seed: bytes = bytes(SEED_BYTES)
    nonce: bytes = bytes(JOB_NONCE_BYTES)

    def __post_init__(self) -> None:
        if not isinstance(self.module_hash, bytes) or len(self.module_hash) != 32:
            raise UsageError("module_hash must be the 32-byte sha256 of the module")
        if not isinstance(self.args, tuple) or len(self.args) > MAX_ARGS:
            raise UsageError(f"args must be a tuple of at most {MAX_ARGS} strings")
        for arg in self.args:
            if (
                not isinstance(arg, str)
                or "\0" in arg
                or not 0 <= _utf8_length(arg) <= MAX_ARG_BYTES
            ):
                raise UsageError(
                    f"each arg is a UTF-8 string without NUL of <= {MAX_ARG_BYTES} bytes"
                )
        if not isinstance(self.inputs, tuple) or len(self.inputs) > MAX_INPUTS:
            raise UsageError(f"inputs must be a tuple of at most {MAX_INPUTS} InputRef")
        names = [i.name for i in self.inputs]
        if names != sorted(set(names)) or len(set(names)) != len(names):
            raise UsageError("inputs must be sorted by name, each name once")
        total = sum(i.size for i in self.inputs)
        if total > self.limits.scratch_bytes:
            raise UsageError(
                f"inputs total {total} bytes, above the scratch quota of"
                f" {self.limits.scratch_bytes} bytes: raise limits.scratch_bytes"
            )
        if not isinstance(self.deterministic, bool):
            raise UsageError("deterministic must be a bool")
        if not isinstance(self.seed, bytes) or len(self.seed) != SEED_BYTES:
            raise UsageError(f"seed must be {SEED_BYTES} bytes")
        if not isinstance(self.nonce, bytes) or len(self.nonce) != JOB_NONCE_BYTES:
            raise UsageError(f"nonce must be {JOB_NONCE_BYTES} bytes")

    @property
    def job_id(self) -> bytes:
        return hashlib.sha256(_tagged(JOB_SPEC_TAG) + encode_job_spec(self)).digest()


def make_job_spec(
    module: bytes,
    inputs: Mapping[str, bytes] | None = None,
    args: tuple[str, ...] | list[str] = (),
    *,
    limits: JobLimits | None = None,
    deterministic: bool = False,
    seed: bytes = bytes(SEED_BYTES),
    nonce: bytes = bytes(JOB_NONCE_BYTES),
) -> JobSpec:
    """The spec of running ``module`` with ``inputs`` (name -> content) and ``args``."""
    refs = tuple(
        InputRef(name, hashlib.sha256(data).digest(), len(data))
        for name, data in sorted((inputs or {}).items())
    )
    return JobSpec(
        check_module(module), tuple(args), refs, limits or JobLimits(), deterministic, seed, nonce
    )


def check_inputs(spec: JobSpec, inputs: Mapping[str, bytes]) -> None:
    """``IntegrityError`` unless ``inputs`` are exactly the files the spec names."""
    if sorted(inputs) != [i.name for i in spec.inputs]:
        raise IntegrityError(
            f"inputs {sorted(inputs)} differ from the spec's {[i.name for i in spec.inputs]}"
        )
    for ref in spec.inputs:
        data = inputs[ref.name]
        if len(data) != ref.size or not hmac.compare_digest(
            hashlib.sha256(data).digest(), ref.sha256
        ):
            raise IntegrityError(f"input {ref.name} does not match its size and sha256")


_LIMIT_WIDTHS: Final = (
    ("fuel", 8),
    ("memory_bytes", 8),
    ("timeout_ms", 4),
    ("stdout_bytes", 4),
    ("stderr_bytes", 4),
    ("output_bytes", 8),
    ("scratch_bytes", 8),
)


def encode_job_spec(spec: JobSpec) -> bytes:
    """The canonical bytes of ``spec`` (see the module docstring)."""
    out = [
        bytes([JOB_SPEC_VERSION]),
        spec.module_hash,
        bytes([_FLAG_DETERMINISTIC if spec.deterministic else 0]),
        spec.seed,
        spec.nonce,
    ]
    out += [getattr(spec.limits, n).to_bytes(w, "big") for n, w in _LIMIT_WIDTHS]
    out.append(len(spec.args).to_bytes(2, "big"))
    for arg in spec.args:
        raw = arg.encode()
        out += [len(raw).to_bytes(2, "big"), raw]
    out.append(len(spec.inputs).to_bytes(2, "big"))
    for ref in spec.inputs:
        name = ref.name.encode()
        out += [bytes([len(name)]), name, ref.sha256, ref.size.to_bytes(8, "big")]
    return b"".join(out)


def decode_job_spec(data: bytes) -> JobSpec:
    """Strict inverse of ``encode_job_spec``; ``UsageError`` naming what is wrong."""
    r = Reader(bytes(data), "job spec")
    if r.uint(1) != JOB_SPEC_VERSION:
        raise r.fail(f"unsupported version (this node reads version {JOB_SPEC_VERSION})")
    module_hash = r.take(32)
    flags = r.uint(1)
    if flags & ~_FLAG_DETERMINISTIC:
        raise r.fail(f"unknown flags {flags:#x}")
    seed, nonce = r.take(SEED_BYTES), r.take(JOB_NONCE_BYTES)
    limits = JobLimits(**{n: r.uint(w) for n, w in _LIMIT_WIDTHS})
    argc = r.uint(2)
    if argc > MAX_ARGS:
        raise r.fail(f"{argc} args, at most {MAX_ARGS}")
    args: list[str] = []
    for _ in range(argc):
        try:
            args.append(r.take(r.uint(2)).decode())
        except UnicodeDecodeError:
            raise r.fail("an arg is not UTF-8") from None
    count = r.uint(2)
    if count > MAX_INPUTS:
        raise r.fail(f"{count} inputs, at most {MAX_INPUTS}")
    refs = []
    for _ in range(count):
        name = r.take(r.uint(1)).decode("ascii", "replace")
        refs.append(InputRef(name, r.take(32), r.uint(8)))
    r.end()
    return JobSpec(module_hash, tuple(args), tuple(refs), limits, bool(flags), seed, nonce)


# -- the result -------------------------------------------------------------------------------


class JobStatus(enum.IntEnum):
    """How a job ended (numbered as in the result hash)."""

    EXITED = 0  # ran to the end or called proc_exit; see exit_code
    TRAPPED = 1  # a WebAssembly trap: unreachable, out of bounds, stack overflow, ...
    FUEL_EXHAUSTED = 2  # the fuel limit
    TIMED_OUT = 3  # the wall-clock limit (epoch deadline, or the watchdog's kill)
    STDOUT_LIMIT = 4  # stdout or stderr above its cap
    DISK_QUOTA = 5  # the scratch directory's byte or entry quota
    OUTPUT_LIMIT = 6  # outputs above their count or byte cap, or not regular files
    CPU_LIMIT = 7  # the worker's CPU-time limit
    WORKER_MEMORY = 8  # the worker ran out of memory outside the module's linear memory
    CRASHED = 9  # the worker died for another reason


def result_hash(
    status: JobStatus, exit_code: int, stdout: bytes, outputs: Mapping[str, bytes]
) -> bytes:
    """The hash replicas compare (see the module docstring)."""
    _bounded(exit_code, 0, 2**32 - 1, "exit_code")
    h = hashlib.sha256(_tagged(JOB_RESULT_TAG))
    h.update(bytes([int(status)]) + exit_code.to_bytes(4, "big"))
    h.update(len(stdout).to_bytes(4, "big"))
    h.update(stdout)
    if len(outputs) > MAX_OUTPUTS:
        raise UsageError(f"{len(outputs)} outputs, at most {MAX_OUTPUTS}")
    h.update(len(outputs).to_bytes(2, "big"))
    for name in sorted(outputs):
        raw, data = check_name(name, "output").encode(), outputs[name]
        h.update(bytes([len(raw)]) + raw + len(data).to_bytes(8, "big"))
        h.update(data)
    return h.digest()


@dataclass(frozen=True, slots=True)
class JobResult:
    """What a job produced. ``message`` says why it did not succeed ("" when it did)."""

    status: JobStatus
    exit_code: int
    stdout: bytes
    stderr: bytes
    outputs: Mapping[str, bytes]
    fuel_used: int
    wall_seconds: float
    memory_bytes: int
    message: str
    result_hash: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        digest = result_hash(self.status, self.exit_code, self.stdout, self.outputs)
        object.__setattr__(self, "result_hash", digest)

    @property
    def ok(self) -> bool:
        return self.status is JobStatus.EXITED and self.exit_code == 0

    def check(self) -> JobResult:
        """``self`` if the job succeeded, else ``JobFailed`` with the reason."""
        if not self.ok:
            raise JobFailed(self.message or f"job ended with {self.status.name}")
        return self


# -- the receipt ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Receipt:
    """A provider's signed statement: it ran ``job_id`` under ``lease_id`` using
    ``fuel_used`` fuel, with results hashing to ``result_hash``."""

    job_id: bytes
    lease_id: LeaseId
    fuel_used: int
    result_hash: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.job_id) != 32 or len(self.result_hash) != 32:
            raise UsageError("job_id and result_hash are 32 bytes each")
        _bounded(self.lease_id, 0, MAX_LEASE_ID, "lease_id")
        _bounded(self.fuel_used, 0, 2**64 - 1, "fuel_used")
        if len(self.signature) != SIGNATURE_BYTES:
            raise UsageError(f"signature must be {SIGNATURE_BYTES} bytes")

    @property
    def provider(self) -> Address:
        """The address whose key signed (``Unauthenticated`` if none recovers)."""
        return to_address(recover_signer(receipt_message(self), self.signature))


def receipt_message(r: Receipt) -> bytes:
    return _tagged(RECEIPT_TAG) + encode_receipt(r)[:-SIGNATURE_BYTES]


def sign_receipt(
    private_key: bytes, job_id: bytes, lease_id: int, fuel_used: int, result_hash: bytes
) -> Receipt:
    unsigned = Receipt(job_id, LeaseId(lease_id), fuel_used, result_hash, bytes(65))
    return Receipt(
        job_id,
        LeaseId(lease_id),
        fuel_used,
        result_hash,
        sign_message(private_key, receipt_message(unsigned)),
    )


def verify_receipt(r: Receipt, provider: str) -> None:
    """``Unauthenticated`` unless ``provider`` (an address, any case) signed ``r``."""
    if r.provider.lower() != provider.lower():
        raise Unauthenticated(f"receipt is signed by {r.provider}, not by provider {provider}")


def encode_receipt(r: Receipt) -> bytes:
    return b"".join(
        (
            bytes([RECEIPT_VERSION]),
            r.job_id,
            r.lease_id.to_bytes(32, "big"),
            r.fuel_used.to_bytes(8, "big"),
            r.result_hash,
            r.signature,
        )
    )


def decode_receipt(data: bytes) -> Receipt:
    """Strict inverse of ``encode_receipt`` (the signature is checked by ``provider``)."""
    r = Reader(bytes(data), "compute receipt")
    if len(data) != RECEIPT_BYTES:
        raise r.fail(f"{len(data)} bytes, expected {RECEIPT_BYTES}")
    if r.uint(1) != RECEIPT_VERSION:
        raise r.fail(f"unsupported version (this node reads version {RECEIPT_VERSION})")
    receipt = Receipt(r.take(32), LeaseId(r.uint(32)), r.uint(8), r.take(32), r.take(65))
    r.end()
    return receipt
