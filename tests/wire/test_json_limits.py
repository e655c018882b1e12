"""The bounded JSON parser: size and depth checked before parsing, in linear time, and the values later
code trips over refused; and the recursion limit that py_ecc raises is put back."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardnet.wire.json_limits import (
    BodyTooLarge,
    JSONRejected,
    loads_limited,
    nesting_depth,
    too_deep,
)
from tests.service_proc import REPO

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_depth_is_exact_for_any_json_and_the_value_round_trips(value: object) -> None:
    text = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    depth = _depth(value)
    assert nesting_depth(text) == depth
    assert not too_deep(text, depth) and (depth == 0 or too_deep(text, depth - 1))
    if "\\ud" not in json.dumps(value):  # lone surrogates are refused, checked below
        assert loads_limited(text, max_depth=max(depth, 1)) == value
        if depth > 1:
            with pytest.raises(JSONRejected, match="nested more than"):
                loads_limited(text, max_depth=depth - 1)


def test_brackets_inside_strings_and_escapes_do_not_count() -> None:
    assert nesting_depth(b'[["[[[[", "\\\\", "\\"[[["]]') == 2
    assert loads_limited(b'{"a": "[[[[[[[[[[\\"]]"}', max_depth=1) == {"a": '[[[[[[[[[["]]'}


def test_a_100k_deep_bomb_is_refused_at_once_without_parsing() -> None:
    bomb = b"[" * 100_000 + b"]" * 100_000
    t0 = time.perf_counter()
    with pytest.raises(JSONRejected, match="nested more than 32"):
        loads_limited(bomb, max_bytes=1 << 20, max_depth=32)
    with pytest.raises(BodyTooLarge):
        loads_limited(bomb, max_bytes=64 * 1024)
    assert time.perf_counter() - t0 < 0.5


def test_the_depth_scan_is_linear_on_megabytes() -> None:
    strings = b'["' + b'a\\"' * 1_000_000 + b'"' + b",[1]" * 100 + b"]"
    brackets = b"[" + b"[]," * 1_000_000 + b"[]]"
    t0 = time.perf_counter()
    assert nesting_depth(strings) == 2 and nesting_depth(brackets) == 2
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.parametrize(
    "body,match",
    [
        (b"NaN", "not JSON"),
        (b"[-Infinity]", "not JSON"),
        (b"[1e999]", "out of range"),
        (b"1" + b"0" * 5000, "not valid JSON"),
        (b'"\\ud800"', "lone surrogate"),
        (b'{"\\udfff": 1}', "lone surrogate"),
        (b"\xff\xfe", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"", "not valid JSON"),
    ],
)
def test_values_later_code_trips_over_are_refused(body: bytes, match: str) -> None:
    with pytest.raises(JSONRejected, match=match):
        loads_limited(body)


def test_a_surrogate_pair_is_fine() -> None:
    assert loads_limited(b'"\\ud83d\\ude00"') == "\U0001f600"


def test_importing_web3_and_eth_account_through_shardnet_leaves_a_sane_recursion_limit() -> None:
    code = (
        "import sys, shardnet.wire.tickets, web3, eth_account, json; print(sys.getrecursionlimit()); "
        "json.loads('[' * 100000 + ']' * 100000)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "RecursionError" in proc.stderr, proc  # not -11 (SIGSEGV)
    assert int(proc.stdout) <= 10_000
