"""Chain errors, and decoding of revert data against a contract ABI.

Revert data is decoded by its 4-byte selector: the contract's custom errors from the ABI, plus the
built-in `Error(string)` and `Panic(uint256)`. It is extracted from the raw JSON-RPC error, which
works the same on anvil (`execution reverted: custom error 0x…`) and on a hardhat node
(`unrecognized custom error (return data: 0x…)`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address

from shardnet.errors import ShardnetError

ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")
PANIC_SELECTOR = bytes.fromhex("4e487b71")

#: Solidity panic codes (https://docs.soliditylang.org/en/latest/control-structures.html#panic-via-assert-and-error-via-require).
PANIC_REASONS = {
    0x00: "generic compiler panic",
    0x01: "assert failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division or modulo by zero",
    0x21: "invalid enum value",
    0x22: "corrupt storage byte array",
    0x31: "pop on an empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory",
    0x51: "call to an uninitialized function",
}

_HEX_DATA = re.compile(r"0x[0-9a-fA-F]{8,}")


class ChainError(ShardnetError):
    """Talking to the chain failed: unreachable node, rejected or failed transaction."""


class ContractRevert(ChainError):
    """A contract call reverted. `.error` names the custom error, `.args` holds its arguments by ABI name.

    For `require(false, "text")` the error is `Error` with args `{"message": "text"}`; for a failed
    assert or overflow it is `Panic` with args `{"code": 17}`; for unknown data it is `UnknownRevert`.
    """

    def __init__(self, error: str, args: Mapping[str, Any], data: bytes, function: str | None = None) -> None:
        self.error = error
        self._error_args = dict(args)
        self.data = data
        self.function = function
        super().__init__(self.describe())

    @property
    def args(self) -> dict[str, Any]:  # type: ignore[override]  # the error's args by name, not a tuple
        """The error's arguments by ABI parameter name."""
        return self._error_args

    def describe(self) -> str:
        """`ShardRegistryInsufficientStake(provided=1, required=1000000000000000000)`."""
        inner = ", ".join(f"{k}={_format_value(v)}" for k, v in self._error_args.items())
        text = f"{self.error}({inner})"
        if self.error == "Panic" and isinstance(self._error_args.get("code"), int):
            text += f": {PANIC_REASONS.get(self._error_args['code'], 'unknown panic code')}"
        return f"{self.function} reverted: {text}" if self.function else text

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        return f"ContractRevert({self.describe()!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ContractRevert, (self.error, self._error_args, self.data, self.function))


def _format_value(value: Any) -> str:
    if isinstance(value, IntEnum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, str) and not value.startswith("0x"):
        return repr(value)
    return str(value)


def _canonical_type(param: Mapping[str, Any]) -> str:
    """ABI type string of one parameter, expanding tuples: `(address,uint32)[]`."""
    typ = str(param["type"])
    if typ.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in param["components"])
        return f"({inner}){typ[len('tuple') :]}"
    return typ


class RevertDecoder:
    """Maps revert data to (error name, args) using the custom errors of an ABI."""

    def __init__(
        self, abi: Sequence[Mapping[str, Any]], enums: Mapping[str, type[IntEnum]] | None = None
    ) -> None:
        self._errors: dict[bytes, tuple[str, list[Mapping[str, Any]]]] = {}
        self._enums = dict(enums or {})
        for item in abi:
            if item.get("type") != "error":
                continue
            inputs = list(item.get("inputs", []))
            signature = f"{item['name']}({','.join(_canonical_type(p) for p in inputs)})"
            self._errors[keccak(text=signature)[:4]] = (str(item["name"]), inputs)

    def decode(self, data: bytes, function: str | None = None) -> ContractRevert:
        """Turn raw revert data into a ContractRevert (never raises)."""
        selector, body = data[:4], data[4:]
        try:
            if selector == ERROR_STRING_SELECTOR:
                (message,) = abi_decode(["string"], body)
                return ContractRevert("Error", {"message": message}, data, function)
            if selector == PANIC_SELECTOR:
                (code,) = abi_decode(["uint256"], body)
                return ContractRevert("Panic", {"code": code}, data, function)
            if selector in self._errors:
                name, inputs = self._errors[selector]
                values = abi_decode([_canonical_type(p) for p in inputs], body)
                args = {
                    p["name"] or f"arg{i}": self._convert(p, v)
                    for i, (p, v) in enumerate(zip(inputs, values, strict=True))
                }
                return ContractRevert(name, args, data, function)
        except Exception:  # malformed data: report it raw below
            pass
        if not data:
            return ContractRevert("EmptyRevert", {}, data, function)
        return ContractRevert("UnknownRevert", {"data": "0x" + data.hex()}, data, function)

    def _convert(self, param: Mapping[str, Any], value: Any) -> Any:
        internal = str(param.get("internalType", ""))
        if internal.startswith("enum "):
            enum = self._enums.get(internal.rsplit(".", 1)[-1])
            if enum is not None:
                try:
                    return enum(value)
                except ValueError:
                    return value
        if param["type"] == "address":
            return to_checksum_address(value)
        return value


def revert_data_from_rpc_error(error: Any) -> bytes | None:
    """Extract revert data from a JSON-RPC error object (anvil, hardhat, geth), or None if it has none.

    Anvil and geth put the data in `error.data` as a hex string; hardhat may nest it
    (`error.data.data`) or only give it in the message (`unrecognized custom error (return data: 0x…)`).
    """
    if not isinstance(error, Mapping):
        return None
    data = error.get("data")
    if isinstance(data, Mapping):
        data = data.get("data") or data.get("result")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            pass
    message = str(error.get("message", ""))
    if "revert" not in message.lower() and "custom error" not in message.lower():
        return None
    match = _HEX_DATA.search(message.split("return data:", 1)[-1])
    if match and len(match.group(0)) % 2 == 0:
        return bytes.fromhex(match.group(0)[2:])
    if "reverted without a reason" in message or message.strip().lower() == "execution reverted":
        return b""
    return None


class ChainUnavailable(ChainError):
    """The JSON-RPC node did not answer (down, restarting, or wrong URL)."""


class RpcError(ChainError):
    """The node answered a JSON-RPC request with an error object (kept in `.rpc_error`)."""

    def __init__(self, method: str, rpc_error: Mapping[str, Any]) -> None:
        self.method = method
        self.rpc_error = dict(rpc_error)
        super().__init__(f"{method} failed: {rpc_error.get('message', rpc_error)}")
