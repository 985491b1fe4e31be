"""What both tasks of `python -m bertcourse finetune` share: the --init hint, the schedule."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from ..files import atomic_save_file
from ..training import TrainingArguments, TrainResult

__all__ = ["INIT_HINT", "run_record", "training_arguments", "write_metrics"]

INIT_HINT = (
    "--init minilm, course-tiny, random:course-tiny, or a folder with config.json, "
    "model.safetensors and vocab.txt (a run's model/ or final/)."
)


def training_arguments(
    options: argparse.Namespace, num_examples: int, metric_for_best: str = "eval_accuracy"
) -> TrainingArguments:
    """The engine's arguments: --epochs capped at --max-steps, evaluation each epoch and twice at least."""
    steps_per_epoch = num_examples // options.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"{num_examples} training examples are fewer than one batch of "
            f"{options.batch_size}: lower --batch-size."
        )
    max_steps = max(1, math.ceil(options.epochs * steps_per_epoch))
    if options.max_steps:
        if options.max_steps < max_steps:
            print(
                f"Stopping after {options.max_steps:,} steps ({options.max_steps / steps_per_epoch:.2f} "
                f"epochs) instead of {options.epochs:g} epochs ({max_steps:,} steps): pass "
                "--max-steps 0 to train all epochs."
            )
        max_steps = min(max_steps, options.max_steps)
    eval_every = max(1, min(steps_per_epoch // options.evals_per_epoch, max_steps // 2))
    return TrainingArguments(
        output_dir=Path(options.out),
        max_steps=max_steps,
        per_device_batch_size=options.batch_size,
        learning_rate=options.lr,
        warmup_ratio=options.warmup_ratio,
        weight_decay=options.weight_decay,
        mixed_precision=options.mixed_precision,
        eval_every=eval_every,
        save_every=eval_every,
        log_every=max(1, min(50, steps_per_epoch // 10)),
        seed=options.seed,
        resume=options.resume,
        overwrite_output_dir=options.overwrite,
        group_by_length=options.group_by_length,
        metric_for_best=metric_for_best,
        show_progress=options.show_progress,
    )


def run_record(result: TrainResult, options: argparse.Namespace) -> dict[str, Any]:
    """What metrics.json says of the run itself, for both tasks: steps, time, --init, options."""
    return {
        "best_step": None if result.best is None else result.best["step"],
        "steps": result.global_step,
        "training_seconds": round(result.elapsed_s, 1),
        "examples_per_s": round(result.examples_per_s, 1),
        "init": options.init,
        "options": {k: v for k, v in vars(options).items() if k not in ("resume", "overwrite")},
    }


def write_metrics(metrics: dict[str, Any], out: Path) -> None:
    """out/metrics.json, written atomically (a crash leaves the old file or none)."""
    text = json.dumps(metrics, indent=2) + "\n"
    atomic_save_file(lambda tmp: Path(tmp).write_text(text), out / "metrics.json")
