"""What a training run is told: `TrainingArguments`, checked when made."""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError

__all__ = [
    "MIXED_PRECISIONS",
    "TrainingArguments",
    "resolve_mixed_precision",
]

MIXED_PRECISIONS = ("no", "bf16", "fp16")


# ----------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------


@dataclass
class TrainingArguments:
    """Everything a run needs besides the model and the data; validated when created.

    A *step* is one optimizer update: `gradient_accumulation_steps` batches of
    `per_device_batch_size` examples on each of the processes. The defaults
    are BERT's (Devlin et al. 2019): AdamW with beta = (0.9, 0.999),
    epsilon = 1e-6, weight decay 0.01, gradients clipped to norm 1.
    """

    output_dir: str | os.PathLike
    max_steps: int
    per_device_batch_size: int = 32
    learning_rate: float = 1e-4
    # Warm-up length: warmup_steps if given, else warmup_ratio * max_steps.
    warmup_steps: int | None = None
    warmup_ratio: float = 0.0
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_epsilon: float = 1e-6
    max_grad_norm: float | None = 1.0
    gradient_accumulation_steps: int = 1
    # "bf16" / "fp16" autocast on a GPU; on a CPU the run falls back to "no", with a warning.
    mixed_precision: str = "no"
    eval_every: int | None = None  # steps; the last step is always evaluated
    save_every: int | None = None  # steps; the last step is always saved
    log_every: int = 10
    keep_checkpoints: int = 2
    seed: int = 0
    resume: bool = False
    # Start over in an output_dir that already holds checkpoints and logs (they are deleted).
    overwrite_output_dir: bool = False
    num_workers: int = 0
    show_progress: bool = True
    # Batches of examples of similar length (less padding); the order stays random. Needs
    # examples with input_ids.
    group_by_length: bool = False
    # Keep the weights of the best evaluation in output_dir/best/, judged by this metric
    # (a key of the evaluation's metrics, e.g. "eval_accuracy").
    metric_for_best: str | None = None
    greater_is_better: bool = True

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        self.adam_betas = tuple(self.adam_betas)
        positive_ints = {
            "max_steps": self.max_steps,
            "per_device_batch_size": self.per_device_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "log_every": self.log_every,
            "keep_checkpoints": self.keep_checkpoints,
        }
        for name in ("eval_every", "save_every"):
            if getattr(self, name) is not None:
                positive_ints[name] = getattr(self, name)
        for name, value in positive_ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate!r}.")
        if self.warmup_steps is not None:
            if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
                raise ConfigError(
                    f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}."
                )
            if self.warmup_ratio:
                raise ConfigError(
                    "Give either warmup_steps or warmup_ratio, not both "
                    f"(got warmup_steps={self.warmup_steps}, warmup_ratio={self.warmup_ratio})."
                )
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio is a fraction in [0, 1), got {self.warmup_ratio!r}.")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay!r}.")
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise ConfigError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas!r}.")
        if not self.adam_epsilon > 0:
            raise ConfigError(f"adam_epsilon must be > 0, got {self.adam_epsilon!r}.")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ConfigError(
                f"max_grad_norm must be > 0 (or None for no clipping), got {self.max_grad_norm!r}."
            )
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ConfigError(
                f"mixed_precision must be one of {', '.join(MIXED_PRECISIONS)}, got "
                f"{self.mixed_precision!r}."
            )
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers!r}.")
        if self.resume and self.overwrite_output_dir:
            raise ConfigError(
                "resume=True continues the run in output_dir; overwrite_output_dir=True deletes "
                "it. Choose one."
            )

    @property
    def num_warmup_steps(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return math.ceil(self.warmup_ratio * self.max_steps)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (str, int, float, bool, list), so it fits a weights_only checkpoint."""
        fields = dataclasses.asdict(self)
        fields["output_dir"] = str(self.output_dir)
        fields["adam_betas"] = list(self.adam_betas)
        return fields


def resolve_mixed_precision(requested: str) -> str:
    """The precision this machine can run: bf16/fp16 need a CUDA GPU, else "no" with a warning."""
    if requested == "no":
        return "no"
    if not torch.cuda.is_available():
        warnings.warn(
            f"mixed_precision={requested!r} needs a CUDA GPU and this machine has none: training in "
            "float32 (mixed_precision='no') instead. Half precision pays off on a GPU's tensor "
            "cores; this engine uses it there only.",
            UserWarning,
            stacklevel=4,
        )
        return "no"
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"This GPU ({torch.cuda.get_device_name()}) does not support bfloat16; use "
            "mixed_precision='fp16' (with loss scaling) or 'no'."
        )
    return requested
