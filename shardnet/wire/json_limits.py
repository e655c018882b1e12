"""JSON from strangers, parsed with bounds: size and nesting depth are checked by a linear scan BEFORE
`json.loads` runs, so a 200 KB `[[[[…` cannot overflow the C stack (which the recursion limit that py_ecc
raises to 100,000 would otherwise allow), and a huge body is refused before it is parsed.

    data = loads_limited(body, max_bytes=64 * 1024, max_depth=8)     # raises BodyRejected
    data = await read_json(request, max_bytes=64 * 1024, max_depth=8)  # aiohttp: 413 / 400 / 408

Besides size and depth, the parsed value is checked for what later code trips over: `NaN`/`Infinity`
(not JSON), integers longer than 4300 digits (Python refuses to convert them), and strings holding
lone surrogates (`"\\ud800"`: they cannot be encoded as UTF-8, so databases and hashes fail on them).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

from shardnet.errors import WireError

DEFAULT_MAX_BYTES = 1 << 20
DEFAULT_MAX_DEPTH = 32
DEFAULT_READ_TIMEOUT_S = 30.0

_STRING = re.compile(
    rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL
)  # a JSON string (an unclosed one runs to the end)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


class BodyRejected(WireError):
    """A request body refused; `status` is the HTTP status to answer with."""

    status = 400


class JSONRejected(BodyRejected):
    """Not JSON, or JSON nested too deeply, or holding values later code cannot handle (400)."""


class BodyTooLarge(BodyRejected):
    """Larger than accepted (413)."""

    status = 413


class BodyTimeout(BodyRejected):
    """Not sent in time (408)."""

    status = 408


def nesting_depth(data: bytes) -> int:
    """The deepest nesting of `[`/`{` in `data` outside strings, in linear time without recursion
    (strings are cut out by a regex, the brackets left are summed by numpy)."""
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKET)
    steps = np.frombuffer(brackets, dtype=np.uint8)
    depth = np.cumsum(np.where((steps == ord("[")) | (steps == ord("{")), 1, -1), dtype=np.int64)
    return int(depth.max(initial=0))


def too_deep(data: bytes, max_depth: int) -> bool:
    """Whether `data` nests `[`/`{` more than `max_depth` deep (only scanned when it has that many)."""
    return data.count(b"[") + data.count(b"{") > max_depth and nesting_depth(data) > max_depth


def _refuse_constant(name: str) -> Any:
    raise JSONRejected(f"{name} is not JSON: send finite numbers")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONRejected(f"the number {text[:40]} is out of range: send finite numbers")
    return value


def loads_limited(
    data: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
) -> Any:
    """`json.loads(data)` after checking its size (`BodyTooLarge`) and nesting depth (`JSONRejected`).

    Also refuses invalid UTF-8, `NaN`/`Infinity`, integers Python cannot convert, and lone surrogates.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise BodyTooLarge(f"JSON of {len(raw)} bytes is larger than the {max_bytes} accepted here")
    if too_deep(raw, max_depth):
        raise JSONRejected(f"JSON nested more than {max_depth} levels deep is refused here")
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except JSONRejected:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError, int digit limit
        raise JSONRejected(f"not valid JSON: {exc}") from None
    _check_strings(value)
    return value


def _check_strings(value: Any) -> None:
    """Refuse strings (keys too) that cannot be encoded as UTF-8 (lone surrogates). Iterative: depth is bounded."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key, sub in item.items():
                _check_text(key)
                stack.append(sub)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise JSONRejected(
            "a JSON string holds a lone surrogate (\\ud800-\\udfff): send valid Unicode"
        ) from None


def _default_error_body(message: str) -> Any:
    return {"error": message}


async def read_body_limited(request: web.Request, max_bytes: int, timeout_s: float) -> bytes:
    """The request body, refused with 413 when larger than `max_bytes` (announced or sent) and with 408
    when it does not arrive within `timeout_s` (a slow or half-sent body holds no connection for ever)."""
    announced = request.content_length
    if announced is not None and announced > max_bytes:
        raise BodyTooLarge(f"request body of {announced} bytes is larger than the {max_bytes} accepted here")

    async def read() -> bytes:
        chunks: list[bytes] = []
        size = 0
        while chunk := await request.content.read(min(65536, max_bytes + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise BodyTooLarge(f"request body is larger than the {max_bytes} bytes accepted here")
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(read(), timeout_s)
    except ConnectionError as exc:  # the sender went away mid-body: nobody reads the answer
        raise BodyRejected(f"the connection was lost while the body was read ({exc})") from None
    except TimeoutError:
        raise BodyTimeout(
            f"the request body did not arrive within {timeout_s:g} s: send it at once, or send less"
        ) from None


async def read_answer_limited(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """A peer's answer body, read no further than `max_bytes` (an endless or huge answer from a stranger costs
    the reader `max_bytes` of memory, not all it sends); raises BodyTooLarge past that."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await resp.content.read(min(65536, max_bytes + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(f"the answer is larger than the {max_bytes} bytes read from it")
    return b"".join(chunks)


async def read_json(
    request: web.Request,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    error_body: Callable[[str], Any] = _default_error_body,
) -> Any:
    """The request's JSON body within bounds, or an `aiohttp.web.HTTPException` carrying a JSON error
    (`error_body(message)`): 413 too large, 408 too slow, 400 malformed or too deeply nested."""
    try:
        return loads_limited(
            await read_body_limited(request, max_bytes, timeout_s), max_bytes=max_bytes, max_depth=max_depth
        )
    except BodyRejected as exc:
        raise http_error(exc, error_body) from None


def http_error(
    exc: BodyRejected, error_body: Callable[[str], Any] = _default_error_body
) -> web.HTTPException:
    """The aiohttp exception answering `exc` with its status and a JSON body."""
    classes: dict[int, type[web.HTTPException]] = {
        413: web.HTTPRequestEntityTooLarge,
        408: web.HTTPRequestTimeout,
    }
    text = json.dumps(error_body(str(exc)))
    cls = classes.get(exc.status, web.HTTPBadRequest)
    if cls is web.HTTPRequestEntityTooLarge:
        return web.HTTPRequestEntityTooLarge(
            max_size=0, actual_size=0, text=text, content_type="application/json"
        )
    return cls(text=text, content_type="application/json")
