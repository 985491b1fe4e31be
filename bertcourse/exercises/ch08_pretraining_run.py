"""Chapter 8, the pretraining run: AdamW's parameter groups, the learning-rate schedule."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..config import BertConfig
from ..model import BertForMaskedLM, BertForPreTraining, BertForSequenceClassification, BertModel
from ..training import linear_warmup_decay, parameter_groups
from ._grading import (
    Case,
    Problem,
    _first_line,
    _fmt_shape,
    _location,
    _require_callable,
    _run_cases,
    _unwrap_scalar,
)

__all__ = [
    "check_parameter_groups",
    "check_warmup_schedule",
]


def _groups_model(kind: str) -> torch.nn.Module:
    """A small BERT of the kind named (2 layers, 16 wide), built without touching the caller's RNG."""
    config = BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=24,
    )
    classes = {
        "BertForPreTraining": BertForPreTraining,
        "BertForMaskedLM": BertForMaskedLM,
        "BertModel": BertModel,
        "BertForSequenceClassification": BertForSequenceClassification,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return classes[kind](config)


_GROUPS_FORMAT_HINT = (
    "return a list of dicts, e.g. [{'params': decay, 'weight_decay': weight_decay}, "
    "{'params': no_decay, 'weight_decay': 0.0}], each 'params' a list of the model's parameters."
)


# parameter id -> (group index, weight decay), once for every time the answer lists it
_Placements = dict[int, list[tuple[int, float]]]


def _parameter_groups_problem(weight_decay: float, answer: Any) -> Problem | None:
    """The first way the learner's groups would make AdamW decay the wrong parameters."""
    model, groups = answer
    if isinstance(groups, dict) or not isinstance(groups, (list, tuple)):
        return Problem(
            [f"expected a list of parameter-group dicts, got {type(groups).__name__}"],
            _GROUPS_FORMAT_HINT,
        )
    names = {id(p): name for name, p in model.named_parameters()}  # a shared tensor once
    placed = _groups_placements(groups, names)
    if isinstance(placed, Problem):
        return placed
    return (
        _groups_repeat_problem(model, names, placed)
        or _groups_missing_problem(names, placed)
        or _groups_decay_problem(model, weight_decay, groups, names, placed)
    )


def _groups_placements(groups: list | tuple, names: dict[int, str]) -> _Placements | Problem:
    """Where the groups put each parameter, or the first group that is not a proper one."""
    placed: _Placements = {}
    for index, group in enumerate(groups):
        if not isinstance(group, dict) or "params" not in group:
            return Problem(
                [f"group {index} is a {type(group).__name__}, not a dict with a 'params' key"],
                _GROUPS_FORMAT_HINT,
            )
        if "weight_decay" not in group:
            return Problem(
                [f"group {index} has no 'weight_decay' entry"],
                "give every group its own 'weight_decay': a group without one gets AdamW's "
                "default (0.01), so the no-decay group would decay after all.",
            )
        params = group["params"]
        if isinstance(params, (set, frozenset)):
            return Problem(
                [f"group {index}'s 'params' is a set"],
                "use a list: a set has no fixed order, so the optimizer's saved state could not be "
                "matched to the parameters when a run resumes (torch refuses sets).",
            )
        if isinstance(params, torch.Tensor):
            params = [params]
        for parameter in params:
            if not isinstance(parameter, torch.Tensor):
                return Problem(
                    [f"group {index} holds a {type(parameter).__name__} ({parameter!r:.40})"],
                    "'params' must hold the parameter tensors themselves (the p of "
                    "`for name, p in model.named_parameters()`), not their names.",
                )
            if id(parameter) not in names:
                return Problem(
                    [
                        f"group {index} holds a tensor of shape {_fmt_shape(parameter.shape)} that "
                        "is not a parameter of the model"
                    ],
                    "put the model's own parameter objects in the groups (not p.data, p.clone() "
                    "or another model's parameters): the optimizer updates what it is given.",
                )
            decay = group["weight_decay"]
            placed.setdefault(id(parameter), []).append((index, float(decay)))
    return placed


def _groups_repeat_problem(
    model: torch.nn.Module, names: dict[int, str], placed: _Placements
) -> Problem | None:
    """A parameter listed more than once, a tied one (under several names) named as such."""
    repeated = {key: where for key, where in placed.items() if len(where) > 1}
    if not repeated:
        return None
    aliases: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(parameter), []).append(name)
    key, where = next(iter(repeated.items()))
    groups_text = " and ".join(str(index) for index, _ in where)
    line = f"{names[key]} is listed {len(where)} times (groups {groups_text})"
    if len(aliases[key]) > 1:
        return Problem(
            [line, f"it has {len(aliases[key])} names: {', '.join(aliases[key])}"],
            "that is one tied tensor (the MLM decoder shares the word embeddings): list each "
            "parameter once. model.named_parameters() skips repeats; "
            "named_parameters(remove_duplicate=False) and state_dict() do not.",
        )
    return Problem(
        [line],
        "each parameter belongs in exactly one group: decide decay or no decay with one "
        "if/else per parameter, so no parameter lands in both lists.",
    )


def _groups_missing_problem(names: dict[int, str], placed: _Placements) -> Problem | None:
    """Parameters of the model that no group holds."""
    missing = [name for key, name in names.items() if key not in placed]
    if not missing:
        return None
    shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
    return Problem(
        [f"{len(missing)} of the model's {len(names)} parameters are in no group: {shown}"],
        "a parameter in no group is never updated: every parameter of "
        "model.named_parameters() must go to exactly one of the groups.",
    )


def _groups_decay_problem(
    model: torch.nn.Module,
    weight_decay: float,
    groups: list | tuple,
    names: dict[int, str],
    placed: _Placements,
) -> Problem | None:
    """Parameters with the wrong weight decay, or groups that AdamW itself refuses."""
    expected = {}
    for group in parameter_groups(model, weight_decay):
        for parameter in group["params"]:
            expected[id(parameter)] = group["weight_decay"]
    wrong = [
        (names[key], where[0][1], expected[key])
        for key, where in placed.items()
        if not math.isclose(where[0][1], expected[key], rel_tol=1e-9, abs_tol=1e-12)
    ]
    if wrong:
        return _groups_wrong_decay_problem(wrong, weight_decay)
    try:
        torch.optim.AdamW(list(groups), lr=1e-3)
    except Exception as error:
        return Problem([f"torch.optim.AdamW(your_groups) fails: {_first_line(error)}"])
    return None


def _groups_wrong_decay_problem(
    wrong: list[tuple[str, float, float]], weight_decay: float
) -> Problem:
    """The kind of parameter that got the wrong decay, (name, got, expected) each, and why."""
    layer_norms = [w for w in wrong if "LayerNorm" in w[0] and w[1] != 0.0]
    if layer_norms:
        return _decay_mismatch(
            layer_norms,
            "LayerNorm parameters must not decay: pulling a LayerNorm gain towards 0 switches its "
            "unit off. Exclude every parameter of an nn.LayerNorm, its weight too, not only biases.",
        )
    biases = [w for w in wrong if w[0].endswith("bias") and w[1] != 0.0]
    if biases:
        return _decay_mismatch(
            biases,
            "biases must not decay (they shift, they do not scale): exclude every parameter whose "
            "name ends in 'bias', cls.predictions.bias included.",
        )
    undecayed = [w for w in wrong if w[1] == 0.0]
    if undecayed:
        return _decay_mismatch(
            undecayed,
            "weight matrices and embeddings do decay: only biases and LayerNorm parameters go to "
            "the group with weight_decay 0.",
        )
    return _decay_mismatch(
        wrong,
        f"use the weight_decay argument ({weight_decay:g}) for the decaying group instead of a "
        "fixed number.",
    )


def _decay_mismatch(selected: list[tuple[str, float, float]], hint: str) -> Problem:
    """The first of these (name, got, expected) parameters, how many share its fault, the hint."""
    name, got, want = selected[0]
    lines = [f"{name} has weight_decay {got:g}; expected {want:g}"]
    if len(selected) > 1:
        lines.append(f"({len(selected)} parameters like it)")
    return Problem(lines, hint)


def check_parameter_groups(fn: Callable) -> bool:
    """Grade `fn(model, weight_decay)` -> AdamW parameter groups, as `bertcourse.training.parameter_groups`.

    Every parameter must be in exactly one group (the tied MLM decoder once);
    biases and LayerNorm parameters get weight_decay 0, every other parameter
    the weight_decay given. Any number of groups is accepted.
    """

    _require_callable("check_parameter_groups", fn)

    @functools.wraps(fn)
    def graded(kind, weight_decay):
        model = _groups_model(kind)
        return model, fn(model, weight_decay)

    cases = [
        Case(
            "BertForPreTraining (2 layers, 16 wide; the MLM decoder tied to the word embeddings), "
            "weight_decay=0.01",
            ("BertForPreTraining", 0.01),
            0.01,
        ),
        Case("BertForMaskedLM, weight_decay=0.1", ("BertForMaskedLM", 0.1), 0.1),
        Case("BertModel (encoder and pooler only), weight_decay=0.05", ("BertModel", 0.05), 0.05),
        Case(
            "BertForSequenceClassification, weight_decay=0.01",
            ("BertForSequenceClassification", 0.01),
            0.01,
        ),
    ]
    return _run_cases(
        "check_parameter_groups",
        graded,
        cases,
        _parameter_groups_problem,
        (),
        "print, for every name in model.named_parameters(), the group it went to.",
    )


@dataclass(frozen=True)
class _ScheduleCase:
    warmup_steps: int
    total_steps: int
    steps: tuple[int, ...]
    expected: tuple[float, ...]


@dataclass(frozen=True)
class _RaisedZeroDivision:
    """The learner's function divided by zero at this step (returned, not raised, to give a hint)."""

    step: int
    where: str
    message: str


_SCHEDULE_TOLERANCE = 1e-6  # a multiplier computed in float32 is fine
_ZERO_WARMUP_HINT = (
    "warmup_steps=0 (no warm-up) must work too: guard the division, e.g. "
    "step / max(1, warmup_steps), or return the decay alone when there is no warm-up."
)


def _schedule_problem(spec: _ScheduleCase, answer: Any) -> Problem | None:
    """Where the learner's multipliers leave BERT's schedule, with a hint that names the bug."""
    values = _schedule_values(spec, answer)
    if isinstance(values, Problem):
        return values
    wrong = [
        i for i in range(len(spec.steps)) if abs(values[i] - spec.expected[i]) > _SCHEDULE_TOLERANCE
    ]
    if not wrong:
        return None
    return (
        _schedule_warmup_problem(spec, values, wrong)
        or _schedule_peak_problem(spec, values, wrong)
        or _schedule_decay_problem(spec, values, wrong)
        or _schedule_after_total_problem(spec, values, wrong)
    )


def _schedule_values(spec: _ScheduleCase, answer: Any) -> list[float] | Problem:
    """The multipliers as floats, or the first step where there is no finite number."""
    values = []
    for step, value in zip(spec.steps, answer, strict=True):
        if isinstance(value, _RaisedZeroDivision):
            return Problem(
                [
                    f"at step {step} your function raised ZeroDivisionError{value.where}: "
                    f"{value.message}"
                ],
                _ZERO_WARMUP_HINT,
            )
        value = _unwrap_scalar(value)
        try:
            values.append(float(value))
        except (TypeError, ValueError):
            return Problem(
                [f"at step {step} your function returned a {type(value).__name__}, not a number"],
                "return the multiplier as a Python float (e.g. 0.5), not a list or None.",
            )
    for step, value in zip(spec.steps, values, strict=True):
        if not math.isfinite(value):
            hint = (
                _ZERO_WARMUP_HINT
                if spec.warmup_steps == 0
                else "a multiplier is a finite number in [0, 1]."
            )
            return Problem([f"at step {step} your function returned {value}"], hint, nonfinite=True)
    return values


def _schedule_lines(spec: _ScheduleCase, values: list[float], indices: list[int]) -> list[str]:
    """Expected and got at the first three of these steps, on one line."""
    shown = [
        f"step {spec.steps[i]}: expected {spec.expected[i]:.6g}, got {values[i]:.6g}"
        for i in indices
    ]
    return ["; ".join(shown[:3])]


def _schedule_warmup_problem(
    spec: _ScheduleCase, values: list[float], wrong: list[int]
) -> Problem | None:
    """Wrong during the warm-up: one step early, no warm-up at all, or not linear from 0."""
    steps, w = spec.steps, spec.warmup_steps
    in_warmup = [i for i in wrong if steps[i] < w]
    if not in_warmup:
        return None
    warmup_indices = [i for i in range(len(steps)) if steps[i] < w]
    if all(abs(values[i] - (steps[i] + 1) / w) <= _SCHEDULE_TOLERANCE for i in warmup_indices):
        return Problem(
            _schedule_lines(spec, values, in_warmup),
            "off by one: the warm-up multiplier is step / warmup_steps, 0 at step 0 and exactly "
            "1.0 at step warmup_steps; (step + 1) / warmup_steps peaks one step early.",
        )
    if values[in_warmup[0]] >= 1.0 - _SCHEDULE_TOLERANCE:
        return Problem(
            _schedule_lines(spec, values, in_warmup),
            "there is no warm-up: for step < warmup_steps the multiplier must rise linearly "
            "from 0 (step / warmup_steps) before the decay starts.",
        )
    return Problem(
        _schedule_lines(spec, values, in_warmup),
        "during the warm-up (step < warmup_steps) the multiplier is step / warmup_steps: "
        "0 at step 0, rising linearly to 1.",
    )


def _schedule_peak_problem(
    spec: _ScheduleCase, values: list[float], wrong: list[int]
) -> Problem | None:
    """Wrong at step warmup_steps, where the multiplier is exactly 1."""
    at_peak = [i for i in wrong if spec.steps[i] == spec.warmup_steps]
    if not at_peak:
        return None
    return Problem(
        _schedule_lines(spec, values, at_peak),
        f"off by one at the end of the warm-up: at step warmup_steps ({spec.warmup_steps}) the "
        "multiplier is exactly 1.0, and the decay (total_steps - step) / (total_steps - "
        "warmup_steps) starts from there.",
    )


def _schedule_decay_problem(
    spec: _ScheduleCase, values: list[float], wrong: list[int]
) -> Problem | None:
    """Wrong during the decay: a cosine, a floor above 0, or not linear."""
    steps, w, total = spec.steps, spec.warmup_steps, spec.total_steps
    decaying = [i for i in wrong if w < steps[i] <= total]
    if not decaying:
        return None
    decay_indices = [i for i in range(len(steps)) if w < steps[i] <= total]

    def cosine(step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * (step - w) / max(1, total - w)))

    if all(abs(values[i] - cosine(steps[i])) <= _SCHEDULE_TOLERANCE for i in decay_indices):
        return Problem(
            _schedule_lines(spec, values, decaying),
            "this is a cosine decay; BERT's schedule decays linearly: "
            "(total_steps - step) / (total_steps - warmup_steps).",
        )
    at_end = [i for i in decay_indices if steps[i] == total]
    if at_end and values[at_end[0]] > _SCHEDULE_TOLERANCE:
        return Problem(
            _schedule_lines(spec, values, sorted({decaying[0], at_end[0]})),
            f"the multiplier must reach exactly 0 at step total_steps; yours stops at "
            f"{values[at_end[0]]:.3g} (a floor). BERT's schedule decays all the way to 0.",
        )
    return Problem(
        _schedule_lines(spec, values, decaying),
        "after the warm-up the multiplier falls linearly from 1 at step warmup_steps to 0 at "
        "step total_steps: (total_steps - step) / (total_steps - warmup_steps).",
    )


def _schedule_after_total_problem(
    spec: _ScheduleCase, values: list[float], wrong: list[int]
) -> Problem:
    """Wrong past total_steps: negative, or not 0."""
    after = [i for i in wrong if spec.steps[i] > spec.total_steps]
    if any(values[i] < 0 for i in after):
        negative = [i for i in after if values[i] < 0]
        return Problem(
            _schedule_lines(spec, values, negative),
            "past total_steps the linear formula goes negative, and a negative learning rate "
            "climbs the loss: clamp it, max(0.0, ...).",
        )
    return Problem(_schedule_lines(spec, values, after), "past total_steps the multiplier stays 0.")


def check_warmup_schedule(fn: Callable) -> bool:
    """Grade `fn(step, warmup_steps, total_steps)` -> the learning-rate multiplier of BERT's schedule.

    Linear warm-up from 0 to 1 over warmup_steps, then linear decay to 0 at
    total_steps, and 0 afterwards (as `bertcourse.training.linear_warmup_decay`
    and `transformers.get_linear_schedule_with_warmup`); warmup_steps=0 must
    work.
    """

    _require_callable("check_warmup_schedule", fn)

    @functools.wraps(fn)
    def graded(warmup_steps, total_steps, steps):
        answers = []
        for step in steps:
            try:
                answers.append(fn(step, warmup_steps, total_steps))
            except ZeroDivisionError as error:
                where = _location(error, getattr(fn, "__name__", None))
                answers.append(_RaisedZeroDivision(step, where, _first_line(error)))
        return answers

    def case(description: str, warmup_steps: int, total_steps: int, steps) -> Case:
        steps = tuple(steps)
        expected = tuple(linear_warmup_decay(s, warmup_steps, total_steps) for s in steps)
        spec = _ScheduleCase(warmup_steps, total_steps, steps, expected)
        return Case(description, (warmup_steps, total_steps, steps), spec)

    bert_steps = (0, 1, 5_000, 9_999, 10_000, 10_001, 500_000, 999_999, 1_000_000, 1_000_001)
    cases = [
        case("warmup_steps=10, total_steps=100, steps 0 to 104", 10, 100, range(105)),
        case("warmup_steps=4, total_steps=12, steps 0 to 15", 4, 12, range(16)),
        case("no warm-up: warmup_steps=0, total_steps=20, steps 0 to 22", 0, 20, range(23)),
        case(
            "BERT's own: warmup_steps=10,000, total_steps=1,000,000, ten steps from 0 to 1,000,001",
            10_000,
            1_000_000,
            bert_steps,
        ),
    ]
    return _run_cases(
        "check_warmup_schedule",
        graded,
        cases,
        _schedule_problem,
        (),
        "print your multiplier for steps 0 to 12 with warmup_steps=4, total_steps=10 and compare "
        "with the chapter's plot.",
    )
