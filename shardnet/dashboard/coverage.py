"""Coverage of a model's layers by the spans serving it: a pure function, tested against exact answers."""

from __future__ import annotations

from collections.abc import Iterable


def replicas_per_layer(num_layers: int, spans: Iterable[tuple[int, int]]) -> list[int]:
    """How many of `spans` ([start, end), clipped to the model) serve each layer 0..num_layers-1."""
    counts = [0] * max(num_layers, 0)
    for start, end in spans:
        for layer in range(max(start, 0), min(end, num_layers)):
            counts[layer] += 1
    return counts


def uncovered_ranges(counts: list[int]) -> list[tuple[int, int]]:
    """The maximal [start, end) runs of layers that no span serves."""
    out: list[tuple[int, int]] = []
    start: int | None = None
    for layer, n in enumerate(counts):
        if n == 0 and start is None:
            start = layer
        elif n > 0 and start is not None:
            out.append((start, layer))
            start = None
    if start is not None:
        out.append((start, len(counts)))
    return out
