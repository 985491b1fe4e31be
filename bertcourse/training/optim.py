"""The optimizer and its schedule: AdamW with parameter groups, linear warm-up and decay."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from .arguments import TrainingArguments

# ----------------------------------------------------------------------------
# Optimizer and schedule
# ----------------------------------------------------------------------------


__all__ = [
    "parameter_groups",
    "linear_warmup_decay",
    "create_optimizer_and_schedule",
]


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: weights decay, biases and LayerNorm parameters do not.

    Weight decay pulls weights towards 0, which regularises a projection; a
    bias or a LayerNorm gain only shifts or scales, and pulling a gain to 0
    would switch its unit off. BERT's original optimizer excluded exactly
    these. Shared parameters (the tied decoder) are listed once.
    """
    no_decay_ids = set()
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    decay, no_decay = ([], []), ([], [])
    for name, parameter in model.named_parameters():  # each shared parameter once
        if not parameter.requires_grad:
            continue
        group = no_decay if name.endswith("bias") or id(parameter) in no_decay_ids else decay
        group[0].append(name)
        group[1].append(parameter)
    return [
        {"params": decay[1], "weight_decay": weight_decay, "param_names": decay[0]},
        {"params": no_decay[1], "weight_decay": 0.0, "param_names": no_decay[0]},
    ]


def linear_warmup_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier: 0 -> 1 linearly over the warm-up, then linearly down to 0.

    Warm-up keeps the first updates small while Adam's moment estimates are
    still noisy; the decay lets the last steps settle into a minimum.
    """
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def create_optimizer_and_schedule(
    model: nn.Module, args: TrainingArguments
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    # fused: one kernel updates every tensor (as transformers' Trainer does by default).
    fused = all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in model.parameters()
    )
    optimizer = torch.optim.AdamW(
        parameter_groups(model, args.weight_decay),
        lr=args.learning_rate,
        betas=args.adam_betas,
        eps=args.adam_epsilon,
        fused=fused or None,
    )
    # A partial, not a lambda: LambdaLR's state_dict can then describe it.
    multiplier = partial(
        linear_warmup_decay, warmup_steps=args.num_warmup_steps, total_steps=args.max_steps
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
