"""A verification package: what a verifier needs to check one hop of a closed job, with no live session.

Per step, a worker commits the Merkle leaf

    leaf_i = leaf(io_hash(step_hash(input frame_i), step_hash(output frame_i)), make_fingerprint(output_i))

(`shardnet.verify.fingerprint`), and signs the root of its leaves in its EIP-712 commitment. A package
carries, per step, the input frame the hop received (its exact bytes), the hash of the frame it sent and
the fingerprint it committed, plus its signed commitment. The verifier (`judge`):

1. checks the commitment's signature (the accused's own, in the registry's domain), that the leaves rebuilt
   from the package give its root, and that the positions add up: so the inputs are exactly those the
   accused signed to have received, and nobody can frame it with other inputs or fingerprints;
2. recomputes the span once over all positions (`check_hop`; a verifier whose block holds more layers than the
   hop runs just the hop's, `Block.view`) and compares every committed fingerprint at
   the calibrated tolerance of the accused's dtype;
3. on the last hop, when the package carries the tokens the client was shown (`ShownTokens`), checks each
   against the recomputed logits (`shardnet.verify.tokens`): a token the hop's own committed logits made
   and the recomputation does not support makes the hop guilty; one its logits did not make is the
   coordinator's, flagged in the answer (`Judgement.tokens`), and slashes nobody;
4. answers guilty with the leaf to dispute (the first failed step; with only the job median failing, the
   step of largest distance; else the first token the hop made and the logits do not support), or innocent.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shardnet.chain.commitments import SignedCommitment, verify_commitment
from shardnet.model.block import Block
from shardnet.verify.check import Verdict, check_hop, recompute_span
from shardnet.verify.fingerprint import io_hash, leaf
from shardnet.verify.sampler import sampling_seed
from shardnet.verify.tokens import ShownTokens, TokenFindings, TokensError, check_shown_tokens
from shardnet.verify.tolerance import tolerance_for
from shardnet.wire.commitment import merkle_root, step_hash
from shardnet.wire.eip712 import Domain
from shardnet.wire.frames import decode_frame

FORMAT = "shardnet-verify/1"


class PackageError(ValueError):
    """A package that cannot be judged: malformed, or not what the accused committed (no verdict either way)."""


@dataclass(frozen=True)
class StepWork:
    """One committed step of a hop: the frame it received, the hash of the frame it sent, its fingerprint."""

    input_frame: bytes
    output_hash: bytes
    fingerprint: bytes

    @property
    def input_hash(self) -> bytes:
        return step_hash(self.input_frame)

    def leaf(self) -> bytes:
        return leaf(io_hash(self.input_hash, self.output_hash), self.fingerprint)


@dataclass(frozen=True)
class VerificationPackage:
    """One hop of one job as its worker committed it (see the module docstring)."""

    commitment: SignedCommitment
    steps: Sequence[StepWork]
    worker_dtype: str = "float32"
    shown: ShownTokens | None = None  # last hop: the tokens its steps made the client see

    def leaves(self) -> list[bytes]:
        return [s.leaf() for s in self.steps]

    def to_json(self) -> dict[str, Any]:
        shown = {} if self.shown is None else {"shown": self.shown.to_json()}
        return shown | {
            "format": FORMAT,
            "commitment": self.commitment.to_json(),
            "worker_dtype": self.worker_dtype,
            "steps": [
                [
                    base64.b64encode(s.input_frame).decode(),
                    "0x" + s.output_hash.hex(),
                    "0x" + s.fingerprint.hex(),
                ]
                for s in self.steps
            ],
        }

    @classmethod
    def from_json(cls, data: Any, *, max_steps: int) -> VerificationPackage:
        """Parse a package (already size-checked JSON); raises PackageError saying what is wrong."""
        try:
            if data.get("format") != FORMAT:
                raise PackageError(f"unknown package format {data.get('format')!r}: send {FORMAT!r}")
            commitment = SignedCommitment.from_json(data["commitment"])
            raw = data["steps"]
            if not isinstance(raw, list) or not 0 < len(raw) <= max_steps:
                raise PackageError(f"a package holds 1 to {max_steps} steps")
            steps = [
                StepWork(base64.b64decode(i, validate=True), _hex32(o), _hex(f))
                for i, o, f in (_triple(x) for x in raw)
            ]
            dtype = str(data.get("worker_dtype", "float32"))
            raw_shown = data.get("shown")
            shown = None if raw_shown is None else ShownTokens.from_json(raw_shown, max_steps=max_steps)
        except PackageError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
            raise PackageError(f"malformed verification package ({exc})") from exc
        return cls(commitment, steps, dtype, shown)


def _triple(value: Any) -> tuple[str, str, str]:
    if not isinstance(value, list) or len(value) != 3 or not all(isinstance(v, str) for v in value):
        raise PackageError("each step is [base64 input frame, 0x output hash, 0x fingerprint]")
    return value[0], value[1], value[2]


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.removeprefix("0x"))


def _hex32(text: str) -> bytes:
    raw = _hex(text)
    if len(raw) != 32:
        raise PackageError(f"an output hash is 32 bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True)
class Judgement:
    """A verifier's finding on one package."""

    guilty: bool
    leaf_index: int | None  # the leaf to dispute (guilty only)
    leaf: bytes | None
    verdict: Verdict
    tokens: TokenFindings | None = None  # the shown tokens' check (last hop, when the package carries them)

    @property
    def reason(self) -> str:
        v, t = self.verdict, self.tokens
        said = (
            f"steps {v.failed_steps[:8]} out of tolerance (largest distance {v.max_distance:.3g}, "
            f"median {v.median_distance:.3g})"
            if not v.passed
            else f"every step within tolerance (largest distance {v.max_distance:.3g})"
        )
        if t is not None and t.by_hop:
            said += f"; its logits made tokens the recomputed logits do not support at steps {t.by_hop[:8]}"
        if t is not None and t.not_sent:
            said += f"; the client was shown tokens its logits did not make at steps {t.not_sent[:8]}"
        if t is not None and t.unattributed:
            said += f"; shown tokens not supported by the logits at steps {t.unattributed[:8]} (unattributed)"
        return said


def check_package(package: VerificationPackage, domain: Domain, block: Block) -> None:
    """Raise PackageError unless the package is exactly what its accused signed, for a span within this block's."""
    c = package.commitment
    if not verify_commitment(c, domain):
        raise PackageError(f"the commitment is not signed by {c.node} in this registry's domain")
    if not block.span.covers(c.span):
        raise PackageError(
            f"the package is for layers {c.span}; this verifier serves {block.span}, which does not hold them"
        )
    if len(package.steps) != c.steps:
        raise PackageError(f"the commitment covers {c.steps} steps, the package {len(package.steps)}")
    if merkle_root(package.leaves()) != c.root:
        raise PackageError(
            "the package's steps do not rebuild the committed root: not what the accused signed"
        )


def judge(package: VerificationPackage, domain: Domain, block: Block) -> Judgement:
    """Check the package (`check_package`), recompute the hop in one pass and find it guilty or innocent.

    `block` may hold more layers than the hop: it runs just the hop's (`Block.view`), first or last as the hop is."""
    check_package(package, domain, block)
    block = block.view(package.commitment.span)
    try:
        inputs = [decode_frame(s.input_frame) for s in package.steps]
    except Exception as exc:  # the accused signed these bytes: still, a malformed frame is not judgeable
        raise PackageError(f"an input frame does not decode ({exc})") from exc
    positions = sum(int(x.shape[1]) for x in inputs)
    if positions != package.commitment.positions:
        raise PackageError(
            f"the inputs hold {positions} positions, the commitment {package.commitment.positions}"
        )
    if package.shown is not None and not block.is_last:
        raise PackageError("shown tokens come with the last hop's package only")
    fingerprints = [s.fingerprint for s in package.steps]
    tolerance = tolerance_for(package.worker_dtype)
    reference = recompute_span(block, inputs, step_ends=True)  # last hop: each step's last position only
    verdict = check_hop(block, inputs, fingerprints, tolerance, check_tokens=False, reference=reference)
    tokens: TokenFindings | None = None
    if package.shown is not None:
        c = package.commitment
        seed = sampling_seed(domain.chain_id, domain.registry, c.job_id, package.shown.seed)
        try:
            tokens = check_shown_tokens(package.shown, reference, fingerprints, tolerance, seed)
        except TokensError as exc:
            raise PackageError(str(exc)) from exc
    if verdict.passed and not (tokens and tokens.by_hop):
        return Judgement(False, None, None, verdict, tokens)
    failed = verdict.failed_steps
    if failed:
        index = failed[0]
    elif not verdict.passed:
        index = max(range(len(verdict.steps)), key=lambda i: verdict.steps[i].distance)
    else:
        assert tokens is not None
        index = tokens.by_hop[0]
    return Judgement(True, index, package.steps[index].leaf(), verdict, tokens)
