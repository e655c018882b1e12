"""A verifier checks any hop whose span lies within its own: it runs just the hop's layers (`Block.view`), first or
last as the hop is, not as its block is. On the tiny Llama (6 layers), blocks 0:4, 2:6 and 0:6 check hops of two
splits (0:2, 2:4, 4:6 and 0:1, 1:3, 3:6) and recompute exactly what blocks of exactly those spans do, bit for bit:
the same fingerprints, the same verdicts, guilty on the same leaf for a noisy hop."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from eth_account import Account

from shardnet.chain.commitments import sign_commitment
from shardnet.chain.devnet import DEV_KEYS
from shardnet.model import load_block_from_parts
from shardnet.model.adapters import ModelError
from shardnet.model.block import Block
from shardnet.span import LayerSpan
from shardnet.verify import cheats
from shardnet.verify.check import check_hop, recompute_span
from shardnet.verify.package import PackageError, StepWork, VerificationPackage, judge
from shardnet.verify.simulate import HonestHop, HopTrace, JobTrace, honest_factories, run_job
from shardnet.verify.tolerance import tolerance_for
from shardnet.wire.commitment import merkle_root, step_hash
from shardnet.wire.eip712 import Domain
from shardnet.wire.frames import encode_frame
from tests.fixtures_model import TinyModel

SPLITS = [
    [LayerSpan(0, 2), LayerSpan(2, 4), LayerSpan(4, 6)],
    [LayerSpan(0, 1), LayerSpan(1, 3), LayerSpan(3, 6)],
]
WIDE = [LayerSpan(0, 4), LayerSpan(2, 6), LayerSpan(0, 6)]
STEPS = 6
MAX_LEN = 8 + STEPS
ACCUSED = Account.from_key(DEV_KEYS[4])
DOMAIN = Domain(31337, "0x" + "ab" * 20)


@pytest.fixture(scope="module")
def blocks(tiny_models: Callable[[str], TinyModel]) -> dict[LayerSpan, Block]:
    tiny = tiny_models("llama")
    assert tiny.num_layers == 6
    spans = {s for split in SPLITS for s in split} | set(WIDE)
    return {s: load_block_from_parts(tiny.parts_dir, tiny.config, s) for s in spans}


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> Iterator[None]:
    yield


def _job(blocks: dict[LayerSpan, Block], split: list[LayerSpan], noisy: LayerSpan | None = None) -> JobTrace:
    chain = [blocks[s] for s in split]
    factories = honest_factories(chain, MAX_LEN)
    if noisy is not None:
        i = split.index(noisy)
        factories[i] = lambda _i: cheats.NoiseHop(HonestHop(chain[i], MAX_LEN), 1.0)
    prompt = torch.randint(0, 96, (1, 8), generator=torch.Generator().manual_seed(7))
    return run_job(factories, prompt, STEPS)


def _hops(blocks: dict[LayerSpan, Block]) -> list[tuple[LayerSpan, HopTrace]]:
    """Every hop of both splits, with what it received, sent and committed."""
    return [
        (span, hop) for split in SPLITS for span, hop in zip(split, _job(blocks, split).hops, strict=True)
    ]


def _package(span: LayerSpan, hop: HopTrace, job_id: int = 3) -> VerificationPackage:
    """The hop's package as its accused signed it (inputs as the frames it received, outputs' hashes)."""
    steps = [
        StepWork(
            encode_frame(x, "fp32" if x.is_floating_point() else "int64"),
            step_hash(encode_frame(out, "fp32")),
            fp,
        )
        for x, out, fp in zip(hop.inputs, hop.outputs, hop.fingerprints, strict=True)
    ]
    root = merkle_root([s.leaf() for s in steps])
    positions = sum(int(x.shape[1]) for x in hop.inputs)
    signed = sign_commitment(
        ACCUSED, DOMAIN, job_id=job_id, span=span, positions=positions, steps=len(steps), root=root
    )
    return VerificationPackage(signed, steps)


def test_a_view_is_first_or_last_as_its_span_is(blocks: dict[LayerSpan, Block]) -> None:
    wide = blocks[LayerSpan(0, 6)]
    assert wide.view(wide.span) is wide  # the exact span: the block itself, bit for bit what it was
    for span, first, last in [((0, 2), True, False), ((2, 4), False, False), ((4, 6), False, True)]:
        view = wide.view(LayerSpan(*span))
        assert (view.span, view.is_first, view.is_last) == (LayerSpan(*span), first, last)
        assert view.module is wide.module  # no copy of the weights
    with pytest.raises(ModelError, match="not within"):
        blocks[LayerSpan(0, 4)].view(LayerSpan(3, 5))


def test_a_wider_block_recomputes_a_hop_exactly_as_a_block_of_its_span(
    blocks: dict[LayerSpan, Block],
) -> None:
    tol = tolerance_for("float32")
    checked = 0
    for span, hop in _hops(blocks):
        exact = blocks[span]
        want = recompute_span(exact, hop.inputs, step_ends=True)
        verdict = check_hop(exact, hop.inputs, hop.fingerprints, tol, sent=hop.outputs, check_tokens=False)
        assert verdict.passed, (span, verdict.failed_steps)
        for wide in (blocks[w] for w in WIDE if w.covers(span) and w != span):
            view = wide.view(span)
            got = recompute_span(view, hop.inputs, step_ends=True)
            assert got.shape == want.shape and torch.equal(got, want), (span, wide.span)
            again = check_hop(view, hop.inputs, hop.fingerprints, tol, sent=hop.outputs, check_tokens=False)
            assert again.steps == verdict.steps and again.passed, (span, wide.span)
            checked += 1
    # 0:2 by 0:4 and 0:6; 2:4 by all three; 4:6 by 2:6 and 0:6; 0:1 by 0:4 and 0:6; 1:3 by 0:4 and 0:6; 3:6 by
    # 2:6 and 0:6
    assert checked == 13


def test_a_wider_verifier_judges_a_hop_as_a_verifier_of_its_span(blocks: dict[LayerSpan, Block]) -> None:
    """`judge` takes a package of a hop within the verifier's span; its verdict is that of a block of exactly the
    hop's span, innocent for an honest hop and guilty on the same leaf for a noisy one."""
    judged = 0
    for split in SPLITS:
        honest = _job(blocks, split)
        for i, span in enumerate(split):
            noisy = _job(blocks, split, noisy=span).hops[i]
            for hop, guilty in ((honest.hops[i], False), (noisy, True)):
                package = _package(span, hop)
                want = judge(package, DOMAIN, blocks[span])
                assert want.guilty is guilty, (span, want.reason)
                for wide in (blocks[w] for w in WIDE if w.covers(span) and w != span):
                    got = judge(package, DOMAIN, wide)
                    assert (got.guilty, got.leaf_index, got.leaf) == (want.guilty, want.leaf_index, want.leaf)
                    assert got.verdict.steps == want.verdict.steps, (span, wide.span)
                    judged += 1
    assert judged == 2 * 13


def test_a_verifier_refuses_a_hop_outside_its_span(blocks: dict[LayerSpan, Block]) -> None:
    split = SPLITS[0]
    trace = _job(blocks, split)
    package = _package(split[2], trace.hops[2])  # layers 4:6
    with pytest.raises(PackageError, match="does not hold them"):
        judge(package, DOMAIN, blocks[LayerSpan(0, 4)])
    with pytest.raises(PackageError, match="does not hold them"):
        judge(_package(split[1], trace.hops[1]), DOMAIN, blocks[LayerSpan(0, 2)])  # 2:4: wider than 0:2
