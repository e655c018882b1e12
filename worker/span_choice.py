"""Which layers a new worker should serve: a pure, deterministic function of the live assignments.

Like Petals' `choose_best_blocks`: count how many live assignments cover each layer, then take the
window of the wanted length whose coverage, sorted ascending, is smallest lexicographically. That window
holds the weakest layers, so serving it raises the minimum coverage the most (then the second weakest,
and so on). Ties go to the lowest start.
"""

from __future__ import annotations

from collections.abc import Iterable

from shardnet.errors import ConfigError
from shardnet.span import LayerSpan


def layer_coverage(num_layers: int, spans: Iterable[LayerSpan]) -> list[int]:
    """How many of `spans` cover each layer 0..num_layers-1 (layers past the model's end are ignored)."""
    coverage = [0] * num_layers
    for span in spans:
        for layer in range(span.start, min(span.end, num_layers)):
            coverage[layer] += 1
    return coverage


def default_span_length(num_layers: int) -> int:
    """A third of the model, at least one layer: three workers cover it."""
    return max(1, -(-num_layers // 3))


def choose_best_span(num_layers: int, live: Iterable[LayerSpan], span_length: int) -> LayerSpan:
    """The span of `span_length` layers that most raises the weakest coverage given the `live` spans."""
    if num_layers < 1:
        raise ConfigError(f"the model has {num_layers} layers; nothing to serve")
    if not 1 <= span_length <= num_layers:
        raise ConfigError(
            f"cannot serve {span_length} layers of a {num_layers}-layer model: "
            f"pass --num-layers-per-worker between 1 and {num_layers}"
        )
    coverage = layer_coverage(num_layers, live)
    best = min(
        range(num_layers - span_length + 1),
        key=lambda start: (sorted(coverage[start : start + span_length]), start),
    )
    return LayerSpan(best, best + span_length)
