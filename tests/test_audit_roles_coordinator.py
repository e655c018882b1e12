"""Gaps found by auditing issue 5 (the coordinator) against a running network, each pinned by a test."""

from __future__ import annotations

import re
import shlex

import pytest

from coordinator.router import NoRouteError, WorkerInfo, choose_route
from shardnet.span import LayerSpan
from worker.cli import build_parser


def test_no_route_error_suggests_a_worker_command_that_parses() -> None:
    """The command a NoRouteError suggests must be one `worker` accepts, with the missing layers."""
    workers = [WorkerInfo("0xa", "http://a", LayerSpan(0, 10))]
    with pytest.raises(NoRouteError) as caught:
        choose_route(workers, 30)
    suggested = re.search(r"`(worker run [^`]*)`", str(caught.value))
    assert suggested is not None, str(caught.value)
    args = build_parser().parse_args(shlex.split(suggested.group(1))[1:])
    assert args.command == "run" and args.layers == "10:30"
