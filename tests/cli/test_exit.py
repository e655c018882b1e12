"""A command's process exits when its work is done: the interpreter's teardown does not garbage-collect the
heap that torch, transformers and web3 built (~0.5 M objects; 1.4-2 s after a worker logged 'worker stopped'),
and what the command wrote still reaches its files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from shardnet.role_process import REPO
from shardnet.trace import ENV as TRACE_ENV

# An atexit handler registered before the command runs runs after the command's own (atexit is last in, first
# out): it sees the heap as the interpreter's teardown will. The command writes what a role writes: a log
# record, a line printed to a block-buffered stdout (a pipe) and not flushed, and a trace mark (a file the
# trace module keeps open for the process).
_PROGRAM = """
import argparse, atexit, gc, logging, sys
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count(), file=sys.stderr))
from shardnet import trace
from shardnet.cli import run_command

def work(args):
    logging.getLogger("cmd").info("the command logged")
    print("the command printed")
    trace.mark("the command traced")
    return 0

parser = argparse.ArgumentParser()
parser.add_argument("-v", "--verbose", action="store_true")
parser.set_defaults(func=work)
sys.exit(run_command(parser, []))
"""


def test_a_command_leaves_its_heap_out_of_the_teardowns_collection_and_its_output_lands(
    tmp_path: Path,
) -> None:
    trace = tmp_path / "trace.txt"
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM],
        cwd=REPO,
        env={**os.environ, TRACE_ENV: str(trace)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    frozen = int(done.stderr.split("frozen at exit:")[1])
    assert frozen > 1000, done.stderr  # every object the command made, out of the collector's reach
    assert "the command logged" in done.stderr
    assert done.stdout == "the command printed\n"
    marks = [
        line for line in trace.read_text().splitlines() if not line.endswith((" gc2:start", " gc2:stop"))
    ]
    assert marks[-1].endswith(
        " the command traced"
    )  # (the interpreter's own last collections are traced too)
