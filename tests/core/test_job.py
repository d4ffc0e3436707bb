"""Job specs, result hashes and compute receipts: golden vectors, strict decoding, bounds,
module and input checks, forgeries."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nuclux.core.auth import to_address
from nuclux.core.job import (
    JOB_SPEC_TAG,
    MAX_ARGS,
    MAX_MODULE_BYTES,
    RECEIPT_BYTES,
    RECEIPT_TAG,
    ComputeBusy,
    ComputeError,
    InputRef,
    JobFailed,
    JobLimits,
    JobRejected,
    JobResult,
    JobSpec,
    JobStatus,
    check_inputs,
    check_module,
    check_name,
    decode_job_spec,
    decode_receipt,
    encode_job_spec,
    encode_receipt,
    make_job_spec,
    receipt_message,
    result_hash,
    sign_receipt,
    verify_receipt,
)
from nuclux.errors import IntegrityError, NucluxError, Unauthenticated, UsageError

V: dict[str, Any] = json.loads((Path(__file__).parent / "vectors" / "job.json").read_text())
MODULE = bytes.fromhex(V["module"])
INPUTS = {k: bytes.fromhex(v) for k, v in V["inputs"].items()}
KEY = bytes.fromhex(V["provider_private_key"])
MALLORY_KEY = hashlib.sha256(b"nuclux-test/mallory").digest()


def vector_spec() -> JobSpec:
    return make_job_spec(
        MODULE,
        INPUTS,
        V["args"],
        limits=JobLimits(**V["limits"]),
        deterministic=V["deterministic"],
        seed=bytes.fromhex(V["seed"]),
        nonce=bytes.fromhex(V["nonce"]),
    )


def vector_result() -> JobResult:
    r = V["result"]
    outputs = {k: bytes.fromhex(v) for k, v in r["outputs"].items()}
    return JobResult(
        JobStatus(r["status"]), r["exit_code"], bytes.fromhex(r["stdout"]), b"any stderr",
        outputs, 1, 0.25, 0, "",
    )  # fmt: skip


def test_spec_golden_vector() -> None:
    spec = vector_spec()
    encoded = bytes.fromhex(V["spec_encoded"])
    assert encode_job_spec(spec) == encoded
    assert decode_job_spec(encoded) == spec
    assert spec.job_id.hex() == V["job_id"]
    tag = len(JOB_SPEC_TAG).to_bytes(2, "big") + JOB_SPEC_TAG
    assert spec.job_id == hashlib.sha256(tag + encoded).digest()


def test_spec_vector_follows_the_layout() -> None:
    data = bytes.fromhex(V["spec_encoded"])
    assert data[0] == 1
    assert data[1:33] == hashlib.sha256(MODULE).digest()
    assert data[33] == 1  # deterministic
    assert data[34:66].hex() == V["seed"]
    assert data[66:82].hex() == V["nonce"]
    assert int.from_bytes(data[82:90], "big") == V["limits"]["fuel"]
    assert int.from_bytes(data[98:102], "big") == V["limits"]["timeout_ms"]
    assert int.from_bytes(data[126:128], "big") == 3  # argc
    assert data[128:130] == b"\x00\x06"
    assert data[130:136] == b"--seed"
    assert data.endswith(
        b"seed.bin" + hashlib.sha256(INPUTS["seed.bin"]).digest() + bytes(7) + b"\x08"
    )


def test_result_hash_golden_vector_and_what_it_covers() -> None:
    r = vector_result()
    assert r.result_hash.hex() == V["result_hash"]
    same = dataclasses.replace(r, stderr=b"other", fuel_used=9, wall_seconds=3.0, message="x")
    assert same.result_hash == r.result_hash  # diagnostics and metering are not results
    for changed in (
        dataclasses.replace(r, exit_code=0),
        dataclasses.replace(r, status=JobStatus.TRAPPED),
        dataclasses.replace(r, stdout=r.stdout + b"\n"),
        dataclasses.replace(r, outputs={**r.outputs, "c": b""}),
        dataclasses.replace(r, outputs={"a.out": b"B", "b.out": b""}),  # contents swapped
    ):
        assert changed.result_hash != r.result_hash
    # outputs are hashed in name order, whatever order the mapping has
    reordered = dataclasses.replace(r, outputs=dict(reversed(list(r.outputs.items()))))
    assert reordered.result_hash == r.result_hash


def test_result_hash_is_unambiguous() -> None:
    a = result_hash(JobStatus.EXITED, 0, b"ab", {"c": b""})
    b = result_hash(JobStatus.EXITED, 0, b"a", {"bc": b""})
    c = result_hash(JobStatus.EXITED, 0, b"", {"a": b"b", "c": b""})
    assert len({a, b, c}) == 3


def test_result_ok_and_check() -> None:
    ok = JobResult(JobStatus.EXITED, 0, b"", b"", {}, 1, 0.0, 0, "")
    assert ok.ok
    assert ok.check() is ok
    failing = dataclasses.replace(ok, exit_code=2, message="exited with status 2")
    with pytest.raises(JobFailed, match="exited with status 2"):
        failing.check()
    limit = dataclasses.replace(ok, status=JobStatus.FUEL_EXHAUSTED, message="")
    with pytest.raises(JobFailed, match="FUEL_EXHAUSTED"):
        limit.check()
    with pytest.raises(UsageError, match="output name"):
        dataclasses.replace(ok, outputs={"../x": b""})


def test_receipt_golden_vector() -> None:
    spec, result = vector_spec(), vector_result()
    receipt = sign_receipt(KEY, spec.job_id, int(V["lease_id"]), V["fuel_used"], result.result_hash)
    encoded = bytes.fromhex(V["receipt_encoded"])
    assert encode_receipt(receipt) == encoded
    assert len(encoded) == RECEIPT_BYTES == 170
    assert decode_receipt(encoded) == receipt
    assert receipt.provider == V["provider"]
    verify_receipt(receipt, V["provider"].lower())
    assert encoded[1:33] == spec.job_id
    assert int.from_bytes(encoded[33:65], "big") == int(V["lease_id"])
    assert int.from_bytes(encoded[65:73], "big") == V["fuel_used"]
    assert encoded[73:105] == result.result_hash
    tag = len(RECEIPT_TAG).to_bytes(2, "big") + RECEIPT_TAG
    assert receipt_message(receipt) == tag + encoded[:105]


def test_receipt_forgeries_are_refused() -> None:
    receipt = decode_receipt(bytes.fromhex(V["receipt_encoded"]))
    more_fuel = dataclasses.replace(receipt, fuel_used=receipt.fuel_used + 1)
    with pytest.raises(Unauthenticated, match="not by provider"):
        verify_receipt(more_fuel, V["provider"])
    mallory = sign_receipt(MALLORY_KEY, receipt.job_id, receipt.lease_id, 1, receipt.result_hash)
    with pytest.raises(Unauthenticated, match="not by provider"):
        verify_receipt(mallory, V["provider"])
    encoded = bytearray(bytes.fromhex(V["receipt_encoded"]))
    for i in range(0, len(encoded) - 1):  # every byte but the recovery id's
        flipped = bytearray(encoded)
        flipped[i] ^= 0x01
        try:
            forged = decode_receipt(bytes(flipped))
            assert forged.provider != V["provider"]
        except (UsageError, Unauthenticated):
            pass


def test_receipt_decoding_is_strict() -> None:
    encoded = bytes.fromhex(V["receipt_encoded"])
    for bad in (encoded[:-1], encoded + b"\0", b"\x02" + encoded[1:]):
        with pytest.raises(UsageError, match="malformed compute receipt"):
            decode_receipt(bad)
    with pytest.raises(UsageError):
        sign_receipt(KEY, b"short", 1, 1, bytes(32))
    with pytest.raises(UsageError, match="fuel_used"):
        sign_receipt(KEY, bytes(32), 1, 2**64, bytes(32))
    with pytest.raises(UsageError, match="lease_id"):
        sign_receipt(KEY, bytes(32), -1, 1, bytes(32))


def test_spec_decoding_is_strict() -> None:
    encoded = bytes.fromhex(V["spec_encoded"])
    with pytest.raises(UsageError, match="truncated"):
        decode_job_spec(encoded[:-1])
    with pytest.raises(UsageError, match="trailing"):
        decode_job_spec(encoded + b"\0")
    with pytest.raises(UsageError, match="version"):
        decode_job_spec(b"\x02" + encoded[1:])
    with pytest.raises(UsageError, match="flags"):
        decode_job_spec(encoded[:33] + b"\x03" + encoded[34:])
    with pytest.raises(UsageError, match="limit fuel"):
        decode_job_spec(encoded[:82] + bytes(8) + encoded[90:])
    unsorted = encoded[:126] + b"\x00\x00" + encoded[126 + 2 + 8 + 4 + 10 :]
    decoded = decode_job_spec(unsorted)  # no args is fine
    assert decoded.args == ()


def test_spec_bounds() -> None:
    h = hashlib.sha256(MODULE).digest()
    with pytest.raises(UsageError, match="module_hash"):
        JobSpec(h[:31])
    with pytest.raises(UsageError, match="at most 256"):
        JobSpec(h, args=("a",) * (MAX_ARGS + 1))
    with pytest.raises(UsageError, match="without NUL"):
        JobSpec(h, args=("a\0b",))
    with pytest.raises(UsageError, match="without NUL"):
        JobSpec(h, args=("x" * 4097,))
    with pytest.raises(UsageError, match="UTF-8"):
        JobSpec(h, args=("\udc80",))
    ref = InputRef("a", bytes(32), 1)
    with pytest.raises(UsageError, match="sorted"):
        JobSpec(h, inputs=(ref, ref))
    with pytest.raises(UsageError, match="scratch quota"):
        JobSpec(
            h, inputs=(InputRef("a", bytes(32), 2 << 20),), limits=JobLimits(scratch_bytes=1 << 20)
        )
    with pytest.raises(UsageError, match="seed"):
        JobSpec(h, seed=b"x")
    with pytest.raises(UsageError, match="limit memory_bytes"):
        JobLimits(memory_bytes=5 << 30)
    with pytest.raises(UsageError, match="limit timeout_ms"):
        JobLimits(timeout_ms=0)
    assert JobLimits(fuel=10, timeout_ms=1).exceeds(JobLimits(fuel=5, timeout_ms=1)) == ["fuel"]


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "a\0", "x" * 65, "é", " a"])
def test_bad_names(name: str) -> None:
    with pytest.raises(UsageError, match="invalid input name"):
        check_name(name, "input")


def test_check_module_rejects_before_parsing() -> None:
    assert check_module(MODULE) == hashlib.sha256(MODULE).digest()
    with pytest.raises(JobRejected, match=r"bad magic \(WebAssembly text"):
        check_module(b'(module (func (export "_start")))')
    with pytest.raises(JobRejected, match="bad magic"):
        check_module(b"\x7fELF\x02\x01\x01\x00")
    with pytest.raises(JobRejected, match="shorter than its 8-byte header"):
        check_module(b"\0asm")
    with pytest.raises(JobRejected, match="components are not supported"):
        check_module(b"\0asm\x0d\x00\x01\x00")
    with pytest.raises(JobRejected, match="exceeds"):
        check_module(MODULE + bytes(MAX_MODULE_BYTES))


def test_check_inputs() -> None:
    spec = vector_spec()
    check_inputs(spec, INPUTS)
    with pytest.raises(IntegrityError, match="differ"):
        check_inputs(spec, {"data.txt": INPUTS["data.txt"]})
    with pytest.raises(IntegrityError, match=r"seed\.bin does not match"):
        check_inputs(spec, {**INPUTS, "seed.bin": b"tampered"})


def test_errors_form_their_branch() -> None:
    for cls in (JobRejected, JobFailed, ComputeBusy):
        assert issubclass(cls, ComputeError)
        assert issubclass(cls, NucluxError)
    assert ComputeError.exit_code == 9


_names = st.from_regex(r"[a-z0-9_][a-z0-9._-]{0,10}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(
    args=st.lists(
        st.text(
            alphabet=st.characters(codec="utf-8", exclude_characters="\0"),
            max_size=20,
        ),
        max_size=5,
    ),
    inputs=st.dictionaries(_names, st.binary(max_size=40), max_size=4),
    deterministic=st.booleans(),
    fuel=st.integers(1, 2**63 - 1),
    seed=st.binary(min_size=32, max_size=32),
)
def test_spec_round_trip(
    args: list[str], inputs: dict[str, bytes], deterministic: bool, fuel: int, seed: bytes
) -> None:
    spec = make_job_spec(
        MODULE, inputs, args, limits=JobLimits(fuel=fuel), deterministic=deterministic, seed=seed
    )
    assert decode_job_spec(encode_job_spec(spec)) == spec
    check_inputs(spec, inputs)


@settings(max_examples=30, deadline=None)
@given(lease=st.integers(0, 2**256 - 1), fuel=st.integers(0, 2**64 - 1))
def test_receipt_round_trip(lease: int, fuel: int) -> None:
    r = sign_receipt(KEY, bytes(32), lease, fuel, bytes(range(32)))
    assert decode_receipt(encode_receipt(r)) == r
    assert r.provider == to_address(bytes.fromhex(V["provider"][2:]))
