"""One fine-tuning step: the client's optimizer over its adapters, the frozen layers remote or in process.

`Trainer.step` runs the forward through the spans in route order, the loss on the client's head, the
backward through the spans in reverse (each worker returns the gradient for its input and its adapters),
and the optimizer step. `Trainer.reference_step` is the same training in one process with plain autograd
(one block of all layers, no wire, no recomputation): the distributed loss curve must match it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from shardnet.finetune.data import IGNORE, Batch
from shardnet.finetune.ends import ModelEnds
from shardnet.finetune.params import INPUT_PROMPT, TrainableParams
from shardnet.finetune.replica import ReplicaCheck
from shardnet.finetune.spans import SpanRunner
from shardnet.model.block import Block
from shardnet.model.training import span_forward


class Trainer:
    def __init__(self, ends: ModelEnds, params: TrainableParams, lr: float = 1e-3) -> None:
        self.ends = ends
        self.params = params
        self.optimizer = torch.optim.Adam(list(params.params.values()), lr=lr)
        self.steps = 0

    def _inputs(self, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            embeds = self.ends.embed(batch.ids)
        prompt = self.params.params.get(INPUT_PROMPT)
        if prompt is None:
            return embeds
        return torch.cat([prompt.unsqueeze(0).expand(embeds.shape[0], -1, -1), embeds], dim=1)

    def _loss(self, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        logits = self.ends.logits(hidden)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch.labels.reshape(-1), ignore_index=IGNORE
        )

    async def step(
        self, spans: Sequence[SpanRunner], batch: Batch, check: ReplicaCheck | None = None
    ) -> float:
        """One training step through `spans` (in route order); returns the loss before the update.
        With `check`, the passes of the spans it has replicas of are re-run there on its share of steps."""
        step_id = self.steps
        h0 = self._inputs(batch)
        hidden = h0.detach()
        for runner in spans:
            adapters = self.params.for_span(runner.span)
            out = await runner.forward(step_id, hidden, adapters)
            if check is not None and check.due(runner.span, step_id):
                await check.forward(runner, step_id, hidden, adapters, out)
            hidden = out
        last = hidden.detach().requires_grad_(True)
        loss = self._loss(last, batch)
        torch.autograd.backward(loss)
        grad = last.grad
        assert grad is not None
        for runner in reversed(spans):
            answer = await runner.backward(step_id, grad)
            if check is not None:
                await check.backward(runner, step_id, grad, answer)
            grad, grads = answer
            for name, g in grads.items():
                param = self.params.params[name]
                param.grad = g.clone() if param.grad is None else param.grad + g
        if h0.requires_grad:
            torch.autograd.backward(h0, grad)
        self._update()
        return float(loss.detach())

    def reference_step(self, block: Block, batch: Batch) -> float:
        """The same step in one process: `block` holds every layer, autograd runs end to end."""
        hidden = span_forward(block, self._inputs(batch), self.params.params)
        loss = self._loss(hidden, batch)
        torch.autograd.backward(loss)
        self._update()
        return float(loss.detach())

    async def exact_match(self, spans: Sequence[SpanRunner], batch: Batch) -> list[bool]:
        """Per sequence: does the argmax at every scored position equal its label (teacher forcing)?
        True exactly when greedy decoding after the prompt would produce the completion."""
        with torch.no_grad():
            hidden = self._inputs(batch)
            for runner in spans:
                hidden = await runner.forward(-1, hidden, self.params.for_span(runner.span))
            predicted = self.ends.logits(hidden).argmax(-1)
        scored = batch.labels != IGNORE
        return [
            bool((predicted[i][scored[i]] == batch.labels[i][scored[i]]).all()) for i in range(len(predicted))
        ]

    def _update(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
