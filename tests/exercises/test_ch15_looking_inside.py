"""Chapter 15: the rollout, integrated-gradients and control-task checkers, their solutions and
planted bugs."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from planted import PlantedBugs

from bertcourse.exercises import ExerciseFailed
from bertcourse.exercises.ch15_looking_inside import (
    _control_cases,
    _ig,
    _ig_cases,
    _rollout,
    _rollout_cases,
    check_attention_rollout,
    check_control_labels,
    check_integrated_gradients,
)

# ----------------------------------------------------------------------------
# Attention rollout
# ----------------------------------------------------------------------------


def attention_rollout(attentions, attention_mask):
    real = attention_mask.to(attentions[0].dtype)  # (B, T)
    length = real.shape[-1]
    rollout = torch.eye(length, dtype=real.dtype).expand(len(real), length, length)
    for probs in attentions:
        a = probs.mean(dim=1) * real[:, None, :]  # padding keys
        a = (0.5 * a + 0.5 * torch.eye(length, dtype=a.dtype)) * real[:, :, None]
        a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
        rollout = a @ rollout
    return rollout


def rollout_loop(attentions, attention_mask):
    """Another correct answer: one sentence at a time, on its real tokens only."""
    batch, _, length, _ = attentions[0].shape
    result = torch.zeros(batch, length, length, dtype=attentions[0].dtype)
    for b in range(batch):
        real = attention_mask[b].bool().nonzero().squeeze(1)
        rollout = torch.eye(len(real), dtype=result.dtype)
        for probs in attentions:
            a = probs[b].mean(0)[real][:, real]
            a = 0.5 * a + 0.5 * torch.eye(len(real), dtype=a.dtype)
            rollout = (a / a.sum(-1, keepdim=True)) @ rollout
        result[b, real[:, None], real[None, :]] = rollout
    return result


def _per_layer(attentions, attention_mask, step):
    real = attention_mask.to(attentions[0].dtype)
    rollout = None
    for probs in attentions:
        a = step(probs, real)
        rollout = a if rollout is None else a @ rollout
    return rollout


def _normalised(a):
    return a / a.sum(-1, keepdim=True).clamp_min(1e-12)


def _identity(a):
    return torch.eye(a.shape[-1], dtype=a.dtype)


def rollout_no_identity(attentions, attention_mask):
    return _per_layer(
        attentions,
        attention_mask,
        lambda p, m: _normalised(p.mean(1) * m[:, None, :] * m[:, :, None]),
    )


def rollout_no_renormalisation(attentions, attention_mask):
    return _per_layer(
        attentions,
        attention_mask,
        lambda p, m: (0.5 * p.mean(1) * m[:, None, :] + 0.5 * _identity(p)) * m[:, :, None],
    )


def rollout_reversed_order(attentions, attention_mask):
    real = attention_mask.to(attentions[0].dtype)
    rollout = None
    for probs in attentions:
        a = (0.5 * probs.mean(1) * real[:, None, :] + 0.5 * _identity(probs)) * real[:, :, None]
        a = _normalised(a)
        rollout = a if rollout is None else rollout @ a
    return rollout


def rollout_max_over_heads(attentions, attention_mask):
    return _per_layer(
        attentions,
        attention_mask,
        lambda p, m: _normalised(
            (0.5 * p.max(1).values * m[:, None, :] + 0.5 * _identity(p)) * m[:, :, None]
        ),
    )


def rollout_ignores_padding(attentions, attention_mask):
    return _per_layer(
        attentions, attention_mask, lambda p, m: _normalised(0.5 * p.mean(1) + 0.5 * _identity(p))
    )


def rollout_keeps_padded_rows(attentions, attention_mask):
    return _per_layer(
        attentions,
        attention_mask,
        lambda p, m: _normalised(0.5 * p.mean(1) * m[:, None, :] + 0.5 * _identity(p)),
    )


def rollout_last_layer_only(attentions, attention_mask):
    return attention_rollout(attentions[-1:], attention_mask)


ROLLOUT_BUGS = [
    (rollout_no_identity, "0.5 * A + 0.5 * I"),
    (rollout_no_renormalisation, "renormalise"),
    (rollout_reversed_order, "order is reversed"),
    (rollout_max_over_heads, "not their maximum"),
    (rollout_ignores_padding, "padding is ignored"),
    (rollout_keeps_padded_rows, "rows of the padded queries too"),
    (rollout_last_layer_only, "not only the last one"),
]


# ----------------------------------------------------------------------------
# Integrated gradients
# ----------------------------------------------------------------------------


def integrated_gradients(forward_fn, inputs, baseline, target, n_steps):
    total = torch.zeros_like(inputs)
    for k in range(1, n_steps + 1):
        point = (baseline + k / n_steps * (inputs - baseline)).requires_grad_(True)
        (gradient,) = torch.autograd.grad(forward_fn(point)[:, target].sum(), point)
        total += gradient
    return (inputs - baseline) * total / n_steps


def integrated_gradients_one_batch(forward_fn, inputs, baseline, target, n_steps):
    """Another correct answer: every point of the path in one batch, alphas from linspace."""
    alphas = torch.linspace(1 / n_steps, 1, n_steps).view(-1, *[1] * inputs.dim())
    points = (baseline + alphas * (inputs - baseline)).requires_grad_(True)  # (n, B, ...)
    scores = forward_fn(points.flatten(0, 1))[:, target]
    (gradients,) = torch.autograd.grad(scores.sum(), points)
    return (inputs - baseline) * gradients.mean(0)


def _gradient_at(forward_fn, point, select):
    point = point.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(select(forward_fn(point)).sum(), point)
    return gradient


def _path_mean(forward_fn, inputs, baseline, n_steps, select, alphas=None):
    alphas = alphas or [k / n_steps for k in range(1, n_steps + 1)]
    gradients = [
        _gradient_at(forward_fn, baseline + a * (inputs - baseline), select) for a in alphas
    ]
    return torch.stack(gradients).mean(0)


def ig_forgets_difference(forward_fn, inputs, baseline, target, n_steps):
    return _path_mean(forward_fn, inputs, baseline, n_steps, lambda s: s[:, target])


def ig_ignores_baseline(forward_fn, inputs, baseline, target, n_steps):
    zeros = torch.zeros_like(inputs)
    return inputs * _path_mean(forward_fn, inputs, zeros, n_steps, lambda s: s[:, target])


def ig_sums_steps(forward_fn, inputs, baseline, target, n_steps):
    return integrated_gradients(forward_fn, inputs, baseline, target, n_steps) * n_steps


def ig_alphas_from_zero(forward_fn, inputs, baseline, target, n_steps):
    alphas = [k / n_steps for k in range(n_steps)]  # off by one
    mean = _path_mean(forward_fn, inputs, baseline, n_steps, lambda s: s[:, target], alphas)
    return (inputs - baseline) * mean


def ig_linspace_alphas(forward_fn, inputs, baseline, target, n_steps):
    alphas = torch.linspace(0, 1, n_steps).tolist()
    mean = _path_mean(forward_fn, inputs, baseline, n_steps, lambda s: s[:, target], alphas)
    return (inputs - baseline) * mean


def ig_class_zero(forward_fn, inputs, baseline, target, n_steps):
    mean = _path_mean(forward_fn, inputs, baseline, n_steps, lambda s: s[:, 0])
    return (inputs - baseline) * mean


def ig_predicted_class(forward_fn, inputs, baseline, target, n_steps):
    predicted = forward_fn(inputs).argmax(-1)
    mean = _path_mean(
        forward_fn, inputs, baseline, n_steps, lambda s: s.gather(1, predicted[:, None])
    )
    return (inputs - baseline) * mean


def ig_sum_over_classes(forward_fn, inputs, baseline, target, n_steps):
    mean = _path_mean(forward_fn, inputs, baseline, n_steps, lambda s: s.sum(-1))
    return (inputs - baseline) * mean


def ig_gradient_at_input_only(forward_fn, inputs, baseline, target, n_steps):
    gradient = _gradient_at(forward_fn, inputs, lambda s: s[:, target])
    return (inputs - baseline) * gradient


IG_BUGS = [
    (ig_forgets_difference, "multiply the mean gradient by (inputs - baseline)"),
    (ig_ignores_baseline, "baseline is ignored"),
    (ig_sums_steps, "not their sum"),
    (ig_alphas_from_zero, "off by one"),
    (ig_linspace_alphas, "torch.linspace(0, 1, n)"),
    (ig_class_zero, "not class 0"),
    (ig_predicted_class, "not the predicted class"),
    (ig_sum_over_classes, "sum over classes"),
    (ig_gradient_at_input_only, "Input x Gradient"),
]


# ----------------------------------------------------------------------------
# Control labels
# ----------------------------------------------------------------------------


def control_labels(words, labels, seed):
    rng = random.Random(seed)
    chosen = {}
    for word in words:
        if word.lower() not in chosen:
            chosen[word.lower()] = rng.choice(labels)
    return [chosen[w.lower()] for w in words]


def control_labels_numpy(words, labels, seed):
    """Another correct answer, with numpy's generator: other draws, the same properties."""
    rng = np.random.default_rng(seed)
    types = list(dict.fromkeys(w.lower() for w in words))
    drawn = dict(zip(types, rng.choice(labels, size=len(types)).tolist(), strict=True))
    return [drawn[w.lower()] for w in words]


def control_per_token(words, labels, seed):
    rng = random.Random(seed)
    return [rng.choice(labels) for _ in words]


def control_case_sensitive(words, labels, seed):
    rng = random.Random(seed)
    chosen = {}
    for word in words:
        if word not in chosen:
            chosen[word] = rng.choice(labels)
    return [chosen[w] for w in words]


def control_uniform(words, labels, seed):
    rng = random.Random(seed)
    label_set = sorted(set(labels))
    chosen = {}
    for word in words:
        if word.lower() not in chosen:
            chosen[word.lower()] = rng.choice(label_set)
    return [chosen[w.lower()] for w in words]


def control_copies_labels(words, labels, seed):
    return list(labels)


def control_outside_label_set(words, labels, seed):
    rng = random.Random(seed)
    chosen = {}
    for word in words:
        if word.lower() not in chosen:
            chosen[word.lower()] = rng.randrange(len(set(labels)))  # 0..k-1, not the labels
    return [chosen[w.lower()] for w in words]


def control_global_random(words, labels, seed):
    chosen = {}
    for word in words:
        if word.lower() not in chosen:
            chosen[word.lower()] = random.choice(labels)
    return [chosen[w.lower()] for w in words]


def control_seed_ignored(words, labels, seed):
    return control_labels(words, labels, 0)


CONTROL_BUGS = [
    (control_per_token, "not per token"),
    (control_case_sensitive, "case-sensitive"),
    (control_uniform, "uniform"),
    (control_copies_labels, "copies nothing"),
    (control_outside_label_set, "outside the label set"),
    (control_global_random, "not deterministic"),
    (control_seed_ignored, "seed is ignored"),
]


# checker -> (reference solution, [(planted bug, word its hint must contain), ...])
PLANTED = {
    check_attention_rollout: (attention_rollout, ROLLOUT_BUGS),
    check_integrated_gradients: (integrated_gradients, IG_BUGS),
    check_control_labels: (control_labels, CONTROL_BUGS),
}


class TestPlantedBugs(PlantedBugs):
    planted = PLANTED


@pytest.mark.parametrize(
    ("checker", "solution", "cases"),
    [
        (check_attention_rollout, rollout_loop, 7),
        (check_integrated_gradients, integrated_gradients_one_batch, 6),
        (check_control_labels, control_labels_numpy, 4),
    ],
    ids=lambda x: getattr(x, "__name__", str(x)),
)
def test_chapter_15_checkers_pass_other_correct_solutions(checker, solution, cases, capsys):
    assert checker(solution) is True
    assert capsys.readouterr().out.strip() == f"✓ {checker.__name__}: all {cases} cases passed"


# ----------------------------------------------------------------------------
# The cases against captum, hand-computed values and the written-out variants
# ----------------------------------------------------------------------------


def test_rollout_cases_equal_the_variant_and_rows_sum_to_one():
    for case in _rollout_cases():
        attentions, mask = case.args
        torch.testing.assert_close(_rollout(attentions, mask), case.expected)
        real = mask.bool()
        sums = case.expected.sum(-1)
        torch.testing.assert_close(sums[real], torch.ones_like(sums[real]))
        assert case.expected[~real].abs().max() == 0 if (~real).any() else True
    # The case with weight on the padding keys is the one where renormalising matters.
    weighted = _rollout_cases()[3]
    assert weighted.args[0][0][1, :, :, 3:].sum() > 0.1
    assert not torch.allclose(_rollout(*weighted.args, renormalise=False), weighted.expected)


def test_ig_cases_equal_captum_right_riemann_and_the_variant():
    for case in _ig_cases():
        forward_fn, inputs, baseline, target, n_steps = case.args
        theirs = IntegratedGradients(forward_fn).attribute(
            inputs, baseline, target=target, n_steps=n_steps, method="riemann_right"
        )
        torch.testing.assert_close(theirs, case.expected)
        torch.testing.assert_close(_ig(*case.args), case.expected)


def test_ig_linear_case_is_exact_and_some_target_is_not_the_prediction():
    first = _ig_cases()[0]
    forward_fn, inputs, _, target, _ = first.args
    weight_column = forward_fn(torch.eye(inputs.shape[1]))[:, target]
    torch.testing.assert_close(first.expected, inputs * weight_column)
    predicted_elsewhere = any(
        bool((case.args[0](case.args[1]).argmax(-1) != case.args[3]).any())
        for case in _ig_cases()[2:]
    )
    assert predicted_elsewhere
    assert any(case.args[3] != 0 for case in _ig_cases()[2:])


def test_control_cases_are_large_where_statistics_are_checked():
    cases = _control_cases()
    assert [case.expected.many_types for case in cases] == [False, False, True, True]
    assert len({w.lower() for w in cases[2].args[0]}) > 2500


def test_a_planted_bug_gets_the_case_and_the_hint():
    with pytest.raises(ExerciseFailed) as failure:
        check_integrated_gradients(ig_sums_steps)
    lines = failure.value.message.splitlines()
    assert lines[0].startswith("✗ check_integrated_gradients: case 1 of 6: a linear model")
    assert lines[-1].startswith("HINT: take the mean of the n gradients")
