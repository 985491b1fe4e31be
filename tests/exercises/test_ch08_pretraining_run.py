"""Chapter 8: the parameter-group and schedule checkers, their solutions and planted bugs."""

from __future__ import annotations

import math

import pytest
import torch
from planted import PlantedBugs

from bertcourse.exercises import ExerciseFailed, check_parameter_groups, check_warmup_schedule
from bertcourse.training import linear_warmup_decay, parameter_groups


def weight_decay_groups(
    model,
    weight_decay,
    *,
    exempt_layer_norms=True,
    exempt_biases=True,
    every_name=False,
    drop_layer_norms=False,
    layer_norms_in_both=False,
    fixed_decay=None,
):
    """The chapter's two AdamW groups by parameter name, with switches that plant one bug each."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters(remove_duplicate=not every_name):
        is_layer_norm = "LayerNorm" in name
        if (exempt_biases and name.endswith("bias")) or (exempt_layer_norms and is_layer_norm):
            if drop_layer_norms and is_layer_norm:
                continue
            no_decay.append(parameter)
            if layer_norms_in_both and is_layer_norm:
                decay.append(parameter)
        else:
            decay.append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay if fixed_decay is None else fixed_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def groups_by_module_type(model, weight_decay):
    """Another correct answer: one group per parameter, LayerNorm found by its module type."""
    layer_norm_ids = {
        id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()
    }
    return [
        {
            "params": [parameter],
            "weight_decay": 0.0
            if name.endswith("bias") or id(parameter) in layer_norm_ids
            else weight_decay,
        }
        for name, parameter in model.named_parameters()
    ]


def groups_bug(name, **bug):
    def groups(model, weight_decay):
        return weight_decay_groups(model, weight_decay, **bug)

    groups.__name__ = groups.__qualname__ = name
    return groups


def groups_as_names(model, weight_decay):
    groups = weight_decay_groups(model, weight_decay)
    names = {id(p): n for n, p in model.named_parameters()}
    return [{**g, "params": [names[id(p)] for p in g["params"]]} for g in groups]


def groups_without_decay_key(model, weight_decay):
    decay, no_decay = weight_decay_groups(model, weight_decay)
    return [decay, {"params": no_decay["params"]}]


def groups_of_copies(model, weight_decay):
    return [
        {**g, "params": [p.detach().clone() for p in g["params"]]}
        for g in weight_decay_groups(model, weight_decay)
    ]


PARAMETER_GROUP_BUGS = [
    (groups_bug("decays_layer_norms", exempt_layer_norms=False), "LayerNorm parameters must not"),
    (groups_bug("decays_biases", exempt_biases=False), "biases must not decay"),
    (groups_bug("forgets_layer_norms", drop_layer_norms=True), "in no group"),
    (groups_bug("layer_norms_in_both", layer_norms_in_both=True), "exactly one group"),
    (groups_bug("ignores_weight_decay", fixed_decay=0.01), "weight_decay argument"),
    (groups_bug("tied_decoder_twice", every_name=True), "tied tensor"),
    (groups_bug("nothing_decays", fixed_decay=0.0), "weight matrices and embeddings do decay"),
    (groups_as_names, "not their names"),
    (groups_without_decay_key, "no 'weight_decay' entry"),
    (groups_of_copies, "not a parameter of the model"),
]


def warmup_schedule(step, warmup_steps, total_steps):
    """The chapter's multiplier: linear warm-up, then linear decay to 0."""
    if step < warmup_steps:
        return step / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def warmup_schedule_as_transformers(step, warmup_steps, total_steps):
    """Another correct answer: the lambda inside transformers.get_linear_schedule_with_warmup."""
    import transformers

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    return schedule.lr_lambdas[0](step)


def warmup_schedule_float32_tensor(step, warmup_steps, total_steps):
    """Also correct: computed with float32 tensors (LambdaLR accepts a 0-d tensor's value)."""
    step = torch.tensor(step, dtype=torch.float32)
    warmup = torch.tensor(max(1, warmup_steps), dtype=torch.float32)
    if step < warmup_steps:
        return step / warmup
    return torch.clamp((total_steps - step) / max(1, total_steps - warmup_steps), min=0.0)


def schedule_no_warmup(step, warmup_steps, total_steps):
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def schedule_warmup_one_early(step, warmup_steps, total_steps):
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return warmup_schedule(step, warmup_steps, total_steps)


def schedule_decay_off_by_one(step, warmup_steps, total_steps):
    if step < warmup_steps:
        return step / warmup_steps
    return max(0.0, (total_steps - step) / (total_steps - warmup_steps + 1))


def schedule_with_floor(step, warmup_steps, total_steps):
    if step < warmup_steps:
        return step / warmup_steps
    return max(0.1, (total_steps - step) / max(1, total_steps - warmup_steps))


def schedule_cosine(step, warmup_steps, total_steps):
    if step < warmup_steps:
        return step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def schedule_goes_negative(step, warmup_steps, total_steps):
    if step < warmup_steps:
        return step / warmup_steps
    return (total_steps - step) / max(1, total_steps - warmup_steps)


def schedule_divides_by_zero(step, warmup_steps, total_steps):
    return max(0.0, min(step / warmup_steps, (total_steps - step) / (total_steps - warmup_steps)))


def schedule_as_tensor_without_guard(step, warmup_steps, total_steps):
    step, warmup = torch.tensor(float(step)), torch.tensor(float(warmup_steps))
    return torch.clamp(
        torch.minimum(step / warmup, (total_steps - step) / (total_steps - warmup)), 0
    )


WARMUP_BUGS = [
    (schedule_no_warmup, "there is no warm-up"),
    (schedule_warmup_one_early, "off by one"),
    (schedule_decay_off_by_one, "off by one at the end of the warm-up"),
    (schedule_with_floor, "a floor"),
    (schedule_cosine, "cosine"),
    (schedule_goes_negative, "max(0.0, ...)"),
    (schedule_divides_by_zero, "warmup_steps=0"),
    (schedule_as_tensor_without_guard, "warmup_steps=0"),
]


# checker -> (reference solution, [(planted bug, word its hint must contain), ...])
PLANTED = {
    check_parameter_groups: (weight_decay_groups, PARAMETER_GROUP_BUGS),
    check_warmup_schedule: (warmup_schedule, WARMUP_BUGS),
}


class TestPlantedBugs(PlantedBugs):
    planted = PLANTED


@pytest.mark.parametrize(
    "solution",
    [weight_decay_groups, groups_by_module_type, parameter_groups],
    ids=lambda f: f.__name__,
)
def test_check_parameter_groups_passes_correct_groups(solution, capsys):
    assert check_parameter_groups(solution) is True
    assert capsys.readouterr().out.strip() == "✓ check_parameter_groups: all 4 cases passed"


def test_check_parameter_groups_names_the_tied_parameter():
    with pytest.raises(ExerciseFailed) as failure:
        check_parameter_groups(groups_bug("tied_decoder_twice", every_name=True))
    assert "cls.predictions.decoder.weight" in failure.value.message


def test_check_parameter_groups_reports_stubs_and_keeps_the_random_state():
    def my_parameter_groups(model, weight_decay):
        raise NotImplementedError

    with pytest.raises(ExerciseFailed, match="^Not implemented yet: .* in my_parameter_groups"):
        check_parameter_groups(my_parameter_groups)
    state = torch.random.get_rng_state()
    check_parameter_groups(weight_decay_groups)
    assert torch.equal(torch.random.get_rng_state(), state)
    with pytest.raises(ExerciseFailed, match="list of parameter-group dicts"):
        check_parameter_groups(lambda model, weight_decay: {"params": list(model.parameters())})


@pytest.mark.parametrize(
    "solution",
    [
        warmup_schedule,
        warmup_schedule_as_transformers,
        warmup_schedule_float32_tensor,
        linear_warmup_decay,
    ],
    ids=lambda f: f.__name__,
)
def test_check_warmup_schedule_passes_correct_schedules(solution, capsys):
    assert check_warmup_schedule(solution) is True
    assert capsys.readouterr().out.strip() == "✓ check_warmup_schedule: all 4 cases passed"


def test_check_warmup_schedule_names_the_line_that_divides_by_zero():
    with pytest.raises(ExerciseFailed) as failure:
        check_warmup_schedule(schedule_divides_by_zero)
    assert "case 3 of 4" in failure.value.message
    assert "ZeroDivisionError at line " in failure.value.message


def test_check_warmup_schedule_reports_stubs_and_odd_answers():
    def lr_multiplier(step, warmup_steps, total_steps):
        raise NotImplementedError

    with pytest.raises(ExerciseFailed, match="^Not implemented yet: .* in lr_multiplier with"):
        check_warmup_schedule(lr_multiplier)
    with pytest.raises(ExerciseFailed, match="not a number"):
        check_warmup_schedule(lambda step, warmup_steps, total_steps: None)
