"""Request parsing of the worker: ids that travel in URLs are checked before they are used."""

from __future__ import annotations

import pytest

from shardnet.peer.errors import BadRequest
from worker.inputs import _parse_next, check_session_id

NEXT = {"url": "http://127.0.0.1:9", "session_id": "abc", "token": "tok123"}


@pytest.mark.parametrize("sid", ["abc/../../../health?x=", "..", ".", "a b", "x" * 129, "é"])
def test_a_next_session_id_that_is_not_an_id_is_refused(sid: str) -> None:
    with pytest.raises(BadRequest, match="session_id"):
        _parse_next({**NEXT, "session_id": sid}, is_last=False)


def test_a_proper_next_hop_is_taken() -> None:
    hop = _parse_next(NEXT, is_last=False)
    assert hop is not None and (hop.url, hop.session_id, hop.token) == ("http://127.0.0.1:9", "abc", "tok123")
    assert check_session_id("0f3a.b-c_d") == "0f3a.b-c_d"
