"""Chapter 18: the distillation-loss and int8-quantization checkers, their solutions and
planted bugs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from planted import PlantedBugs

from bertcourse.compress import distillation_loss as package_distillation_loss
from bertcourse.compress import quantize_symmetric
from bertcourse.exercises import ExerciseFailed
from bertcourse.exercises.ch18_smaller_models import (
    _loss_cases,
    _quantize_cases,
    check_distillation_loss,
    check_int8_quantize,
)

# ----------------------------------------------------------------------------
# The distillation loss
# ----------------------------------------------------------------------------


def distillation_loss(student_logits, teacher_logits, labels, temperature, alpha):
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.log_softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(student_logits, labels)
    return alpha * temperature**2 * soft + (1 - alpha) * hard


def distillation_loss_by_sums(student_logits, teacher_logits, labels, temperature, alpha):
    """Another correct answer: the KL divergence and the cross-entropy written out."""
    log_p = teacher_logits / temperature - torch.logsumexp(teacher_logits / temperature, -1, True)
    log_q = student_logits / temperature - torch.logsumexp(student_logits / temperature, -1, True)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()
    log_probs = student_logits - torch.logsumexp(student_logits, dim=-1, keepdim=True)
    hard = -log_probs[torch.arange(len(labels)), labels].mean()
    return alpha * temperature * temperature * kl + (1 - alpha) * hard


def package_loss(student_logits, teacher_logits, labels, temperature, alpha):
    return package_distillation_loss(student_logits, teacher_logits, labels, temperature, alpha)


def loss_without_t_squared(student_logits, teacher_logits, labels, temperature, alpha):
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
    )
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def loss_times_t(student_logits, teacher_logits, labels, temperature, alpha):
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
    )
    return alpha * temperature * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def loss_reversed_kl(student_logits, teacher_logits, labels, temperature, alpha):
    soft = F.kl_div(
        F.log_softmax(teacher_logits / temperature, dim=-1),
        F.softmax(student_logits / temperature, dim=-1),
        reduction="batchmean",
    )
    return alpha * temperature**2 * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def loss_softmax_input(student_logits, teacher_logits, labels, temperature, alpha):
    soft = F.kl_div(
        F.softmax(student_logits / temperature, dim=-1),
        F.softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
    )
    return alpha * temperature**2 * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def loss_alpha_swapped(student_logits, teacher_logits, labels, temperature, alpha):
    return distillation_loss(student_logits, teacher_logits, labels, temperature, 1 - alpha)


def loss_mean_reduction(student_logits, teacher_logits, labels, temperature, alpha):
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.softmax(teacher_logits / temperature, dim=-1),
        reduction="none",
    ).mean()  # what reduction="mean" computes (torch warns that it will change)
    return alpha * temperature**2 * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def loss_sum_reduction(student_logits, teacher_logits, labels, temperature, alpha):
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.softmax(teacher_logits / temperature, dim=-1),
        reduction="sum",
    )
    return alpha * temperature**2 * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def loss_teacher_not_softened(student_logits, teacher_logits, labels, temperature, alpha):
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.softmax(teacher_logits, dim=-1),
        reduction="batchmean",
    )
    return alpha * temperature**2 * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def loss_hard_term_softened(student_logits, teacher_logits, labels, temperature, alpha):
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
    )
    hard = F.cross_entropy(student_logits / temperature, labels)
    return alpha * temperature**2 * soft + (1 - alpha) * hard


def loss_log_of_softmax(student_logits, teacher_logits, labels, temperature, alpha):
    p = F.softmax(teacher_logits / temperature, dim=-1)
    q = F.softmax(student_logits / temperature, dim=-1)
    kl = (p * (torch.log(p) - torch.log(q))).sum(dim=-1).mean()
    return alpha * temperature**2 * kl + (1 - alpha) * F.cross_entropy(student_logits, labels)


def loss_as_float(student_logits, teacher_logits, labels, temperature, alpha):
    return distillation_loss(student_logits, teacher_logits, labels, temperature, alpha).item()


def loss_in_float32(student_logits, teacher_logits, labels, temperature, alpha):
    return distillation_loss(
        student_logits.float(), teacher_logits.float(), labels, temperature, alpha
    )


LOSS_BUGS = [
    (loss_without_t_squared, "T²"),
    (loss_times_t, "not T."),
    (loss_reversed_kl, "the teacher is the target"),
    (loss_softmax_input, "expects log-probabilities"),
    (loss_alpha_swapped, "not the other way round"),
    (loss_mean_reduction, "B × C"),
    (loss_sum_reduction, "not the sum"),
    (loss_teacher_not_softened, "soften the teacher"),
    (loss_hard_term_softened, "temperature 1"),
    (loss_log_of_softmax, "F.log_softmax"),
    (loss_as_float, "tensor itself"),
    (loss_in_float32, "dtype"),
]


def test_loss_cases_agree_with_the_package():
    for case in _loss_cases():
        got = package_distillation_loss(*case.args)
        torch.testing.assert_close(got, case.expected, rtol=1e-6, atol=1e-6)


def test_the_sure_case_breaks_log_of_softmax_in_float32():
    """Case 7's logits are far enough apart that some probabilities underflow to 0."""
    case = next(c for c in _loss_cases() if "100 apart" in c.description)
    student, teacher = case.args[:2]
    assert bool((F.softmax(student, dim=-1) == 0).any()) and bool(
        (F.softmax(teacher, -1) == 0).any()
    )
    assert not math.isfinite(loss_log_of_softmax(*case.args).item())


def test_a_loss_bug_gets_the_case_and_the_hint():
    with pytest.raises(ExerciseFailed) as failure:
        check_distillation_loss(loss_without_t_squared)
    lines = failure.value.message.splitlines()
    assert (
        lines[0] == "✗ check_distillation_loss: case 1 of 8: batch 4, 3 classes, T = 2, alpha = 0.7"
    )
    assert lines[1].startswith("  loss: expected ")
    assert lines[2].startswith("HINT: multiply the soft term by T²")


# ----------------------------------------------------------------------------
# Int8 weights
# ----------------------------------------------------------------------------


def quantize_int8(weight):
    largest = weight.abs().amax(dim=1)
    scale = torch.where(largest > 0, largest / 127, torch.ones_like(largest))
    q = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def quantize_int8_by_rows(weight):
    """Another correct answer: a loop over the rows, rounding half away from zero, (out, 1)
    float32 scales, a tiny floor instead of a zero-row special case."""
    rows, scales = [], []
    for row in weight.tolist():
        scale = max(max(abs(v) for v in row) / 127, 1e-12)
        values = [math.copysign(math.floor(abs(v) / scale + 0.5), v) for v in row]
        rows.append([max(-127, min(127, int(v))) for v in values])
        scales.append([scale])
    return torch.tensor(rows, dtype=torch.int8), torch.tensor(scales)


def package_quantize(weight):
    return quantize_symmetric(weight)


def quantize_per_tensor(weight):
    scale = weight.abs().max() / 127
    q = torch.round(weight / scale).clamp(-127, 127).to(torch.int8)
    return q, scale.expand(weight.shape[0]).clone()


def quantize_without_abs(weight):
    largest = weight.amax(dim=1)
    scale = torch.where(largest > 0, largest / 127, torch.ones_like(largest))
    q = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def quantize_by_128(weight):
    largest = weight.abs().amax(dim=1)
    scale = torch.where(largest > 0, largest / 128, torch.ones_like(largest))
    q = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def quantize_floor(weight):
    q, scale = quantize_int8(weight)
    return torch.floor(weight / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def quantize_truncating(weight):
    _, scale = quantize_int8(weight)
    return (weight / scale[:, None]).to(torch.int8), scale


def quantize_full_negative_range(weight):
    positive = weight.clamp_min(0).amax(dim=1) / 127
    negative = (-weight).clamp_min(0).amax(dim=1) / 128
    scale = torch.maximum(positive, negative)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(weight / scale[:, None]).clamp(-128, 127).to(torch.int8)
    return q, scale


def quantize_inverse_scale(weight):
    q, scale = quantize_int8(weight)
    return q, 1 / scale


def quantize_zero_rows_divided_by_zero(weight):
    scale = weight.abs().amax(dim=1) / 127
    q = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def quantize_per_input_channel(weight):
    largest = weight.abs().amax(dim=0)
    scale = torch.where(largest > 0, largest / 127, torch.ones_like(largest))
    q = torch.round(weight / scale[None, :]).clamp(-127, 127).to(torch.int8)
    return q, scale


def quantize_float_values(weight):
    q, scale = quantize_int8(weight)
    return q.float(), scale


def quantize_values_only(weight):
    return quantize_int8(weight)[0]


QUANTIZE_BUGS = [
    (quantize_per_tensor, "one scale per output channel"),
    (quantize_without_abs, "negative values included"),
    (quantize_by_128, "divide by 127"),
    (quantize_floor, "nearest integer"),
    (quantize_truncating, "truncates toward zero"),
    (quantize_full_negative_range, "-128 has no positive twin"),
    (quantize_inverse_scale, "inverse"),
    (quantize_zero_rows_divided_by_zero, "row of zeros"),
    (quantize_per_input_channel, "per row"),
    (quantize_float_values, "int8"),
    (quantize_values_only, "pair"),
]


def test_quantize_cases_agree_with_the_package():
    for case in _quantize_cases():
        q, scale = quantize_symmetric(case.args[0])
        assert torch.equal(q, case.expected.q), case.description
        torch.testing.assert_close(scale.double(), case.expected.scale.double(), rtol=1e-6, atol=0)


def test_quantize_cases_hold_what_their_descriptions_say():
    cases = _quantize_cases()
    by_hand = cases[0].args[0]
    assert by_hand[1].abs().argmax() == by_hand[1].argmin() and by_hand[1].min() == -2.0
    assert any((c.args[0] == 0).all(dim=1).any() for c in cases)
    assert {c.args[0].dtype for c in cases} == {torch.float32, torch.float64}
    largest = cases[1].args[0].abs().amax(dim=1)
    assert largest.max() / largest.min() > 1000


def test_a_quantize_bug_gets_the_case_and_the_hint():
    with pytest.raises(ExerciseFailed) as failure:
        check_int8_quantize(quantize_without_abs)
    lines = failure.value.message.splitlines()
    assert lines[0] == (
        "✗ check_int8_quantize: case 1 of 6: a 3 x 4 weight by hand: rows of different sizes; "
        "row 1's largest magnitude is negative (-2.0)"
    )
    assert lines[1] == "  scale of row 1: expected 0.015748, got 0.00866142"
    assert lines[2].startswith("HINT: the scale comes from the largest magnitude")


# checker -> (reference solution, [(planted bug, word its hint must contain), ...])
PLANTED = {
    check_distillation_loss: (distillation_loss, LOSS_BUGS),
    check_int8_quantize: (quantize_int8, QUANTIZE_BUGS),
}


class TestPlantedBugs(PlantedBugs):
    planted = PLANTED


@pytest.mark.parametrize(
    ("checker", "solution", "cases"),
    [
        (check_distillation_loss, distillation_loss_by_sums, 8),
        (check_distillation_loss, package_loss, 8),
        (check_int8_quantize, quantize_int8_by_rows, 6),
        (check_int8_quantize, package_quantize, 6),
    ],
    ids=lambda x: getattr(x, "__name__", str(x)),
)
def test_chapter_18_checkers_pass_correct_solutions(checker, solution, cases, capsys):
    assert checker(solution) is True
    assert capsys.readouterr().out.strip() == f"✓ {checker.__name__}: all {cases} cases passed"
