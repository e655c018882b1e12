"""Spot checks of training steps on replicas: a share of the forward and backward passes a worker answered is
run again on another worker serving the same span, and the answers must agree (issue 16 item 4).

Workers compute in fp32 with the same code; two honest workers on the same kind of hardware agree to
rounding (bitwise on one machine), so the default tolerance is a relative error of 1e-4. A step is checked
when `step_id % every == 0`. A disagreement raises `StepMismatch` with the evidence: the span, the step, which
pass, the relative error, and both workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from shardnet.errors import ShardnetError
from shardnet.finetune.spans import Grads, SpanRunner
from shardnet.span import LayerSpan


class StepMismatch(ShardnetError):
    """A worker's training answer differs from a replica's: do not pay it, and report the evidence."""


@dataclass
class ReplicaCheck:
    replicas: Mapping[LayerSpan, SpanRunner]  # span -> a second worker serving exactly that span
    every: int = 4
    rtol: float = 1e-4
    checked: int = 0  # passes compared so far
    worst: float = 0.0  # the largest relative error seen
    _pending: set[tuple[LayerSpan, int]] = field(default_factory=set)

    def due(self, span: LayerSpan, step_id: int) -> bool:
        return span in self.replicas and step_id >= 0 and step_id % self.every == 0

    async def forward(
        self,
        runner: SpanRunner,
        step_id: int,
        hidden: torch.Tensor,
        adapters: dict[str, torch.Tensor],
        answer: torch.Tensor,
    ) -> None:
        replica = self.replicas[runner.span]
        again = await replica.forward(step_id, hidden, adapters)
        self._pending.add((runner.span, step_id))
        self._compare(runner, replica, step_id, "forward", {"hidden": answer}, {"hidden": again})

    async def backward(self, runner: SpanRunner, step_id: int, grad: torch.Tensor, answer: Grads) -> None:
        if (runner.span, step_id) not in self._pending:
            return
        self._pending.discard((runner.span, step_id))
        replica = self.replicas[runner.span]
        grad_in, grads = await replica.backward(step_id, grad)
        got = {"grad_hidden": answer[0], **answer[1]}
        self._compare(runner, replica, step_id, "backward", got, {"grad_hidden": grad_in, **grads})

    def _compare(
        self,
        runner: SpanRunner,
        replica: SpanRunner,
        step_id: int,
        what: str,
        got: dict[str, torch.Tensor],
        expected: dict[str, torch.Tensor],
    ) -> None:
        self.checked += 1
        if set(got) != set(expected):
            raise StepMismatch(f"{what} of step {step_id} on {_name(runner)} answered {sorted(got)}, "
                               f"the replica {_name(replica)} {sorted(expected)}")  # fmt: skip
        for name, value in got.items():
            ref = expected[name]
            if value.shape != ref.shape or not bool(torch.isfinite(value).all()):
                error = float("inf")
            else:
                error = float((value - ref).norm() / ref.norm().clamp_min(1e-12))
            self.worst = max(self.worst, error)
            if error > self.rtol:
                raise StepMismatch(
                    f"{what} of step {step_id}, layers {runner.span}: {name} from {_name(runner)} is "
                    f"{error:.3g} (relative) away from the replica {_name(replica)}'s (tolerance {self.rtol:g}); "
                    "do not settle this worker's commitment for the job, and exclude it from the route"
                )


def _name(runner: SpanRunner) -> str:
    return str(getattr(runner, "url", f"in-process layers {runner.span}"))
