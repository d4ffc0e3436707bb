from __future__ import annotations

from eth_abi.abi import encode
from eth_utils.crypto import keccak

from nuclux.chain.revert import decode_revert, revert_data_from_exception
from nuclux.errors import ContractRevert, InvalidLeaseState, ProviderUnavailable


def _err(sig: str, types: list[str], args: list[object]) -> bytes:
    return keccak(text=sig)[:4] + encode(types, args)


def test_decodes_custom_errors_with_arguments() -> None:
    exc = decode_revert(_err("BadState(uint256,uint8)", ["uint256", "uint8"], [7, 3]), "claim")
    assert isinstance(exc, InvalidLeaseState)
    assert exc.error_name == "BadState"
    assert str(exc) == "claim: BadState(id=7, state=active)"
    exc = decode_revert(
        _err("ProviderNotServing(address,uint8)", ["address", "uint8"], ["0x" + "11" * 20, 3])
    )
    assert isinstance(exc, ProviderUnavailable)
    assert "reason=suspended" in str(exc)


def test_unknown_and_empty_reverts_still_give_a_clear_error() -> None:
    assert "without a reason" in str(decode_revert(b""))
    assert "unknown error 0xdeadbeef" in str(decode_revert(bytes.fromhex("deadbeef")))
    msg = decode_revert(bytes.fromhex("08c379a0") + encode(["string"], ["nope"]))
    assert type(msg) is ContractRevert
    assert "nope" in str(msg)


def test_extracts_data_from_backend_exceptions() -> None:
    class RpcError(Exception):
        data = "0xdeadbeef"

    class TransactionFailed(Exception):  # as eth-tester words it
        pass

    assert revert_data_from_exception(RpcError()) == bytes.fromhex("deadbeef")
    raw = b"\xde\xad\xbe\xef"
    assert revert_data_from_exception(TransactionFailed(f"execution reverted: {raw!r}")) == raw
    assert revert_data_from_exception(ValueError("other")) is None
