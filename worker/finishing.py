"""What a computed step becomes before its output leaves (on the compute thread): the frame sent, what the
session keeps, the step hash, the Merkle leaf and the fingerprint it binds (`worker.verification.commit_steps`).

A batch's steps are finished together: each is encoded and hashed on its own, and the fingerprints of all of
them are taken in one pass (`shardnet.verify.fingerprint.make_fingerprints`, the same bytes as one at a time).
One step's failure is its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from shardnet.wire.frames import encode_frame
from worker import memory
from worker.limits import BlockInfo
from worker.sessions import Session
from worker.verification import commit_step, commit_steps

#: (frame sent, what the session keeps of it, step hash, Merkle leaf, fingerprint) of one step
StepOutput = tuple[bytes, bytes, bytes, bytes, bytes]
#: one computed step to finish: (session, output, n_tokens, index, input hash)
ComputedStep = tuple[Session, torch.Tensor, int, int, bytes]


_PENDING = RuntimeError("step not finished")  # replaced by the step's output below


class StepFinisher:
    """Encodes, hashes and commits computed steps of one worker's block."""

    def __init__(self, info: BlockInfo, perturb_outputs: float = 0.0) -> None:
        self.info = info
        self.perturb_outputs = perturb_outputs  # tests: noise added to every output (a cheating worker)

    def finish(
        self, session: Session, out: torch.Tensor, n_tokens: int, index: int, input_hash: bytes
    ) -> StepOutput:
        """One step (the unbatched path); raises its error."""
        result = self.finish_many([(session, out, n_tokens, index, input_hash)])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def finish_many(self, steps: Sequence[ComputedStep]) -> list[StepOutput | BaseException]:
        """Each step's output or its own error, in order."""
        results: list[StepOutput | BaseException] = []
        encoded: list[tuple[int, bytes, bytes]] = []  # (position in steps, frame, kept)
        for i, (session, out, _n, _index, _input_hash) in enumerate(steps):
            try:
                frame, kept = self._encode(session, out)
            except Exception as exc:  # this step alone fails
                results.append(exc)
                continue
            results.append(_PENDING)
            encoded.append((i, frame, kept))
        try:
            committed: list[tuple[bytes, bytes, bytes] | BaseException] = list(
                commit_steps([(steps[i][4], frame) for i, frame, _ in encoded])
            )
        except Exception:  # one of them cannot be committed: find which, one at a time
            committed = [_commit_one(steps[i][4], frame) for i, frame, _ in encoded]
        for (i, frame, kept), commit in zip(encoded, committed, strict=True):
            results[i] = commit if isinstance(commit, BaseException) else (frame, kept, *commit)
        return results

    def _encode(self, session: Session, out: torch.Tensor) -> tuple[bytes, bytes]:
        with torch.inference_mode():
            if self.perturb_outputs > 0:
                out = out + self.perturb_outputs * out.float().std() * torch.randn_like(out)
            frame = encode_frame(out.float(), memory.LOGITS_CODEC if self.info.is_last else session.codec)
            return frame, memory.kept_output(out, frame, is_last=self.info.is_last)


def _commit_one(input_hash: bytes, frame: bytes) -> tuple[bytes, bytes, bytes] | BaseException:
    try:
        return commit_step(input_hash, frame)
    except Exception as exc:  # this step alone fails
        return exc
