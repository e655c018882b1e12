"""choose_best_span: exact answers, as Petals' choose_best_blocks tests."""

from __future__ import annotations

import pytest

from shardnet.errors import ConfigError
from shardnet.span import LayerSpan
from worker.span_choice import choose_best_span, default_span_length, layer_coverage

S = LayerSpan


def test_coverage_counts_each_layer_and_ignores_layers_past_the_end() -> None:
    assert layer_coverage(6, [S(0, 3), S(2, 5), S(4, 9)]) == [1, 1, 2, 1, 2, 1]
    assert layer_coverage(3, []) == [0, 0, 0]


def test_empty_network_takes_the_first_span() -> None:
    assert choose_best_span(30, [], 10) == S(0, 10)


def test_fills_the_uncovered_gap() -> None:
    assert choose_best_span(30, [S(0, 10)], 10) == S(10, 20)
    assert choose_best_span(30, [S(0, 10), S(10, 20)], 10) == S(20, 30)


def test_second_round_starts_again_from_the_weakest_layers() -> None:
    assert choose_best_span(30, [S(0, 10), S(10, 20), S(20, 30)], 10) == S(0, 10)
    assert choose_best_span(30, [S(0, 10), S(10, 20), S(20, 30), S(0, 10)], 10) == S(10, 20)


def test_prefers_the_window_holding_the_weakest_layer_even_if_partly_covered() -> None:
    # coverage: [2,2,2,0,1,1,1,1]; length 3 windows sorted: start 1 -> [0,2,2], 2 -> [0,1,2], 3 -> [0,1,1]
    live = [S(0, 3), S(0, 3), S(4, 8)]
    assert choose_best_span(8, live, 3) == S(3, 6)


def test_ties_go_to_the_lowest_start() -> None:
    assert choose_best_span(4, [S(1, 3)], 1) == S(0, 1)
    assert choose_best_span(6, [S(2, 4)], 2) == S(0, 2)


def test_whole_model_span() -> None:
    assert choose_best_span(5, [S(1, 2)], 5) == S(0, 5)


def test_bad_lengths_say_what_to_pass() -> None:
    with pytest.raises(ConfigError, match="--num-layers-per-worker"):
        choose_best_span(4, [], 5)
    with pytest.raises(ConfigError):
        choose_best_span(4, [], 0)


def test_default_span_length_is_a_third_rounded_up() -> None:
    assert [default_span_length(n) for n in (1, 2, 3, 4, 30, 31)] == [1, 1, 1, 2, 10, 11]
