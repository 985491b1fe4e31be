"""Chapter 17: the arithmetic-intensity and padding-fraction checkers, solutions, planted bugs."""

from __future__ import annotations

import pytest
import torch
from planted import PlantedBugs

from bertcourse import speed
from bertcourse.exercises import ExerciseFailed
from bertcourse.exercises.ch17_making_bert_fast import (
    _intensity_cases,
    _padding_cases,
    check_arithmetic_intensity,
    check_padding_fraction,
)

# ----------------------------------------------------------------------------
# Arithmetic intensity
# ----------------------------------------------------------------------------


def arithmetic_intensity(m, k, n, bytes_per_element):
    flops = 2 * m * k * n
    moved = bytes_per_element * (m * k + k * n + m * n)
    return flops / moved


def intensity_with_tensors(m, k, n, bytes_per_element):
    """Another correct answer: from the shapes of real tensors, as a 0-d tensor."""
    a, b = torch.empty(m, k, dtype=torch.float64), torch.empty(k, n, dtype=torch.float64)
    elements = a.numel() + b.numel() + m * n
    return torch.tensor(2.0 * m * k * n / (elements * bytes_per_element), dtype=torch.float64)


def intensity_one_flop(m, k, n, bytes_per_element):
    return m * k * n / (bytes_per_element * (m * k + k * n + m * n))


def intensity_without_output(m, k, n, bytes_per_element):
    return 2 * m * k * n / (bytes_per_element * (m * k + k * n))


def intensity_output_as_m_by_k(m, k, n, bytes_per_element):
    return 2 * m * k * n / (bytes_per_element * (m * k + k * n + m * k))


def intensity_per_element(m, k, n, bytes_per_element):
    return 2 * m * k * n / (m * k + k * n + m * n)


def intensity_inverted(m, k, n, bytes_per_element):
    return bytes_per_element * (m * k + k * n + m * n) / (2 * m * k * n)


def intensity_from_dimensions(m, k, n, bytes_per_element):
    return 2 * m * k * n / (bytes_per_element * (m + k + n))


def intensity_floor_division(m, k, n, bytes_per_element):
    return 2 * m * k * n // (bytes_per_element * (m * k + k * n + m * n))


def intensity_as_a_string(m, k, n, bytes_per_element):
    return f"{arithmetic_intensity(m, k, n, bytes_per_element):.3f}"


INTENSITY_BUGS = [
    (intensity_one_flop, "2 FLOPs"),
    (intensity_without_output, "written to memory too"),
    (intensity_output_as_m_by_k, "not m k"),
    (intensity_per_element, "bytes_per_element"),
    (intensity_inverted, "not the bytes by the FLOPs"),
    (intensity_from_dimensions, "sum of the dimensions"),
    (intensity_floor_division, "floor division"),
    (intensity_as_a_string, "plain number"),
]


def test_intensity_cases_agree_with_the_package():
    for case in _intensity_cases():
        assert case.expected == pytest.approx(speed.arithmetic_intensity(*case.args), rel=1e-12)


# ----------------------------------------------------------------------------
# Padding fraction
# ----------------------------------------------------------------------------


def padding_fraction(lengths, batch_size):
    padding = positions = 0
    for start in range(0, len(lengths), batch_size):
        batch = lengths[start : start + batch_size]
        positions += len(batch) * max(batch)
        padding += len(batch) * max(batch) - sum(batch)
    return padding / positions


def padding_fraction_with_masks(lengths, batch_size):
    """Another correct answer: build each batch's attention mask and count its zeros."""
    lengths = torch.tensor(lengths)
    masks = [
        torch.arange(int(batch.max()))[None, :] < batch[:, None]
        for batch in lengths.split(batch_size)
    ]
    zeros = sum(int((~mask).sum()) for mask in masks)
    return torch.tensor(zeros / sum(mask.numel() for mask in masks))


def padding_to_the_longest_of_all(lengths, batch_size):
    rows = len(lengths)
    return 1 - sum(lengths) / (rows * max(lengths))


def padding_over_real_tokens(lengths, batch_size):
    fraction = padding_fraction(lengths, batch_size)
    return fraction / (1 - fraction)  # padding / real


def real_fraction(lengths, batch_size):
    return 1 - padding_fraction(lengths, batch_size)


def padding_without_the_last_batch(lengths, batch_size):
    full = len(lengths) // batch_size * batch_size
    return padding_fraction(lengths[: max(full, batch_size)], batch_size)


def padding_with_a_full_last_batch(lengths, batch_size):
    padding = positions = 0
    for start in range(0, len(lengths), batch_size):
        batch = lengths[start : start + batch_size]
        positions += batch_size * max(batch)
        padding += batch_size * max(batch) - sum(batch)
    return padding / positions


def padding_after_sorting(lengths, batch_size):
    return padding_fraction(sorted(lengths, reverse=True), batch_size)


def padding_mean_of_batches(lengths, batch_size):
    batches = [lengths[i : i + batch_size] for i in range(0, len(lengths), batch_size)]
    return sum(1 - sum(b) / (len(b) * max(b)) for b in batches) / len(batches)


def padding_in_percent(lengths, batch_size):
    return 100 * padding_fraction(lengths, batch_size)


PADDING_BUGS = [
    (padding_to_the_longest_of_all, "its own longest"),
    (padding_over_real_tokens, "not by the real tokens"),
    (real_fraction, "not of real tokens"),
    (padding_without_the_last_batch, "keep the last"),
    (padding_with_a_full_last_batch, "missing rows"),
    (padding_after_sorting, "do not sort"),
    (padding_mean_of_batches, "divide once"),
    (padding_in_percent, "percentage"),
]


def test_padding_cases_agree_with_the_package():
    """The package's padding_fraction on the batches of a sampler = the exercise's
    definition on the lengths in that sampler's order."""
    lengths = list(_padding_cases()[5].args[0])
    for grouped in (False, True):
        order = [i for batch in speed.length_batches(lengths, 16, grouped, 4) for i in batch]
        assert padding_fraction([lengths[i] for i in order], 16) == pytest.approx(
            speed.padding_fraction(lengths, 16, grouped, 4), rel=1e-12
        )
    for case in _padding_cases():
        assert case.expected == pytest.approx(padding_fraction(*case.args), rel=1e-12)


def test_padding_case_2_as_described():
    case = _padding_cases()[1]
    assert case.expected == pytest.approx(15 / 46)  # [4, 4, 4], [9, 1, 2], [7]


# ----------------------------------------------------------------------------
# Both checkers
# ----------------------------------------------------------------------------

# checker -> (reference solution, [(planted bug, word its hint must contain), ...])
PLANTED = {
    check_arithmetic_intensity: (arithmetic_intensity, INTENSITY_BUGS),
    check_padding_fraction: (padding_fraction, PADDING_BUGS),
}


class TestPlantedBugs(PlantedBugs):
    planted = PLANTED


@pytest.mark.parametrize(
    ("checker", "solution", "cases"),
    [
        (check_arithmetic_intensity, intensity_with_tensors, 7),
        (check_padding_fraction, padding_fraction_with_masks, 7),
    ],
    ids=lambda x: getattr(x, "__name__", str(x)),
)
def test_chapter_17_checkers_pass_correct_solutions(checker, solution, cases, capsys):
    assert checker(solution) is True
    assert capsys.readouterr().out.strip() == f"✓ {checker.__name__}: all {cases} cases passed"


def test_a_padding_bug_gets_the_case_and_the_hint():
    with pytest.raises(ExerciseFailed) as failure:
        check_padding_fraction(padding_with_a_full_last_batch)
    assert failure.value.message.splitlines() == [
        "✗ check_padding_fraction: case 2 of 7: 7 examples in batches of 3: the last batch holds 1",
        "  padding fraction: expected 0.326087, got 0.483333",
        "HINT: the last batch holds only the examples left (len(lengths) % batch_size rows): "
        "do not count missing rows as padding.",
    ]


def test_an_intensity_bug_gets_the_case_and_the_hint():
    with pytest.raises(ExerciseFailed) as failure:
        check_arithmetic_intensity(intensity_without_output)
    lines = failure.value.message.splitlines()
    assert lines[0] == (
        "✗ check_arithmetic_intensity: case 1 of 7: a (2, 3) @ (3, 4) product in float32"
    )
    assert lines[1] == "  FLOPs per byte: expected 0.461538, got 0.666667"
    assert lines[2].startswith("HINT: the (m, n) output is written to memory too")
