"""LayerSpan: the one value type for a block of consecutive layers [start, end) of a model.

Worker, coordinator, router and the contract encoding all use it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class LayerSpan:
    """Layers [start, end) of a model with `num_layers` layers in all."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not (isinstance(self.start, int) and isinstance(self.end, int)):
            raise TypeError("LayerSpan bounds must be integers")
        if self.start < 0 or self.end <= self.start:
            raise ValueError(f"invalid layer span [{self.start}, {self.end}): need 0 <= start < end")

    @classmethod
    def parse(cls, text: str) -> LayerSpan:
        """Parse 'a:b' (as on the command line) into LayerSpan(a, b)."""
        try:
            a, b = text.split(":")
            return cls(int(a), int(b))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"layer span must look like START:END with START < END, got {text!r}") from exc

    def __len__(self) -> int:
        return self.end - self.start

    def __contains__(self, layer: object) -> bool:
        return isinstance(layer, int) and self.start <= layer < self.end

    def __str__(self) -> str:
        return f"{self.start}:{self.end}"

    def is_first(self) -> bool:
        return self.start == 0

    def is_last(self, num_layers: int) -> bool:
        return self.end == num_layers

    def covers(self, other: LayerSpan) -> bool:
        """Whether every layer of `other` is one of this span's (a block of this span holds `other`'s layers)."""
        return self.start <= other.start and other.end <= self.end

    def check_within(self, num_layers: int) -> None:
        if self.end > num_layers:
            raise ValueError(f"layer span {self} exceeds the model's {num_layers} layers")
