"""ABI plumbing of the registry bindings: function call encoding/decoding and event decoding from the artifact's ABI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from shardnet.chain.errors import _canonical_type

__all__ = ["AbiEvent", "AbiFunction", "as_bytes", "as_int", "to_python"]


def to_python(param: Mapping[str, Any], value: Any) -> Any:
    """ABI-decoded value -> Python: checksummed addresses, structs as dicts by component name."""
    typ = str(param["type"])
    if typ.endswith("]"):
        inner = dict(param, type=typ[: typ.rindex("[")])
        return [to_python(inner, v) for v in value]
    if typ == "tuple":
        return {c["name"]: to_python(c, v) for c, v in zip(param["components"], value, strict=True)}
    if typ == "address":
        return to_checksum_address(value)
    return value


class AbiFunction:
    def __init__(self, entry: Mapping[str, Any]) -> None:
        self.name = str(entry["name"])
        self.inputs = list(entry.get("inputs", []))
        self.outputs = list(entry.get("outputs", []))
        self.input_types = [_canonical_type(p) for p in self.inputs]
        self.output_types = [_canonical_type(p) for p in self.outputs]
        self.selector = keccak(text=f"{self.name}({','.join(self.input_types)})")[:4]
        self.payable = entry.get("stateMutability") == "payable"

    def encode(self, args: Sequence[Any]) -> str:
        if len(args) != len(self.inputs):
            raise TypeError(f"{self.name} takes {len(self.inputs)} arguments, got {len(args)}")
        return "0x" + (self.selector + abi_encode(self.input_types, list(args))).hex()

    def decode(self, data: bytes) -> list[Any]:
        values = abi_decode(self.output_types, data)
        return [to_python(p, v) for p, v in zip(self.outputs, values, strict=True)]

    def decode_input(self, data: bytes) -> dict[str, Any]:
        """The arguments of a call to this function (transaction input, selector included) by name."""
        if bytes(data[:4]) != self.selector:
            raise ValueError(f"not a call to {self.name}: selector 0x{bytes(data[:4]).hex()}")
        values = abi_decode(self.input_types, bytes(data[4:]))
        return {p["name"]: to_python(p, v) for p, v in zip(self.inputs, values, strict=True)}


class AbiEvent:
    def __init__(self, entry: Mapping[str, Any]) -> None:
        self.name = str(entry["name"])
        self.inputs = list(entry.get("inputs", []))
        self.topic = keccak(text=f"{self.name}({','.join(_canonical_type(p) for p in self.inputs)})")
        self.indexed = [p for p in self.inputs if p.get("indexed")]
        self.unindexed = [p for p in self.inputs if not p.get("indexed")]

    def decode_args(self, topics: Sequence[bytes], data: bytes) -> dict[str, Any]:
        args: dict[str, Any] = {}
        for param, topic in zip(self.indexed, topics[1:], strict=True):
            typ = _canonical_type(param)
            dynamic = typ in ("string", "bytes") or typ.endswith("]") or typ.startswith("(")
            args[param["name"]] = topic if dynamic else to_python(param, abi_decode([typ], topic)[0])
        values = abi_decode([_canonical_type(p) for p in self.unindexed], data)
        for param, value in zip(self.unindexed, values, strict=True):
            args[param["name"]] = to_python(param, value)
        return {p["name"]: args[p["name"]] for p in self.inputs}  # ABI order


def as_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return bytes.fromhex(value[2:] if value.startswith("0x") else value)
    return bytes(value)


def as_int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)
