"""`python -m bertcourse finetune`: fine-tune a classifier on a CSV/TSV file.

Reads the files, starts from --init (MiniLM, a course run, a hub name or random
weights), trains with BERT's fine-tuning recipe, keeps the best evaluation's
weights, and writes metrics.json, a confusion matrix, training curves and a
transformers directory that `pipeline("text-classification")` loads.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from accelerate import PartialState

from ..data import LabelledData, load_classification
from ..files import atomic_save_file
from ..finetune import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LEARNING_RATE,
    DEFAULT_MAX_STEPS,
    DEFAULT_WARMUP_RATIO,
    PaddingCollator,
    encode_classification,
    evaluate_classification,
    load_for_task,
    predict_logits,
)
from ..hf import export_for_transformers
from ..metrics import classification_report
from ..model import BertForSequenceClassification
from ..training import BEST_DIR, LOG_CSV, TrainingArguments, TrainResult, load_model_weights, train
from ..viz import plot_confusion_matrix, plot_training_curves
from .options import (
    about_option,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from .rundir import check_output_dir, take_output_dir

__all__ = [
    "FINETUNE_ARTEFACTS",
    "build_parser",
    "load_task_data",
    "main",
    "training_arguments",
]

INIT_HINT = (
    "--init minilm, course-tiny, random:course-tiny, or a folder with config.json, "
    "model.safetensors and vocab.txt (a run's model/ or final/)."
)
SENTENCES_HELD_OUT = 1_000  # --holdout sentences: about the size of GLUE's SST-2 dev set (872)
# What the command writes in --out besides the engine's checkpoints, best weights and logs.
FINETUNE_ARTEFACTS = ("model", "metrics.json", "confusion_matrix.png", "training_curves.png")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bertcourse finetune",
        description="Fine-tune a BERT for text classification (single texts or pairs) on a CSV/TSV "
        "file, evaluate it each epoch, keep the best checkpoint, and write metrics.json, a "
        "confusion matrix and a transformers directory.",
    )
    parser.add_argument("--task", default="classification", choices=["classification"])
    parser.add_argument("--train", required=True, help="training file, .csv or .tsv with a header")
    parser.add_argument(
        "--holdout",
        choices=["stratified", "sentences"],
        default="stratified",
        help="without --valid, what of --train is held out: a stratified 10%% of the rows, or "
        "1,000 whole sentences and every row that is part of one (for phrase-level files such as "
        "SST-2's, whose rows include the sub-phrases of each sentence: a random row would "
        "usually sit inside a training row) (default %(default)s)",
    )
    parser.add_argument(
        "--valid",
        help="validation file (same columns); without it, part of --train is held out (--holdout)",
    )
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--text-pair-column", help="second text of a sentence-pair task")
    parser.add_argument("--label-column", default="label")
    parser.add_argument(
        "--init",
        default="minilm",
        help="minilm (offline), course-tiny (the course's own pretrained BERT, offline), a hub "
        "name such as bert-base-uncased, a checkpoint or course run directory, or "
        "random:<any of those> (that model's shape and vocabulary, no pretraining; 'random' is "
        "random:minilm)",
    )
    parser.add_argument("--epochs", type=positive_float, default=DEFAULT_EPOCHS)
    parser.add_argument(
        "--max-steps",
        type=non_negative_int,
        default=DEFAULT_MAX_STEPS,
        help="stop after at most this many steps even if --epochs are not done (default "
        f"{DEFAULT_MAX_STEPS}: minutes on a laptop CPU; 0 for no cap)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--lr", type=positive_float, default=DEFAULT_LEARNING_RATE)
    parser.add_argument("--warmup-ratio", type=fraction, default=DEFAULT_WARMUP_RATIO)
    parser.add_argument("--weight-decay", type=non_negative_float, default=0.01)
    parser.add_argument(
        "--max-length", type=positive_int, default=128, help="tokens per example, at most"
    )
    parser.add_argument(
        "--no-group-by-length",
        dest="group_by_length",
        action="store_false",
        help="random batches instead of batches of similar length (more padding, slower)",
    )
    parser.add_argument("--evals-per-epoch", type=positive_int, default=1)
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--overwrite", action="store_true", help="start over in --out")
    parser.add_argument("--no-progress", dest="show_progress", action="store_false")
    return parser


def load_task_data(options: argparse.Namespace) -> tuple[LabelledData, LabelledData]:
    """(train, validation) LabelledData from the files; validation labels must be known ones."""

    def load(path: str) -> LabelledData:
        return load_classification(
            path, options.text_column, options.label_column, options.text_pair_column
        )

    train_data = load(options.train)
    if options.valid is None and options.holdout == "sentences":
        return train_data.sentence_split(SENTENCES_HELD_OUT, seed=options.seed)
    if options.valid is None:
        return train_data.split(0.1, seed=options.seed)
    valid_data = load(options.valid)
    if valid_data.label_names != train_data.label_names:
        unseen = sorted(set(valid_data.label_names) - set(train_data.label_names))
        if unseen:
            raise ValueError(
                f"{options.valid} has label(s) {unseen} that {options.train} never shows, so the "
                "model cannot learn them: remove those rows or add training examples."
            )
        # Same names, other numbering (a class absent from the validation file): renumber.
        index = train_data.label2id
        valid_data.labels = [index[valid_data.label_names[i]] for i in valid_data.labels]
        valid_data.label_names = list(train_data.label_names)
    return train_data, valid_data


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bertcourse finetune ...`: files -> model -> train -> report and export."""
    options = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(options.out)
    check_output_dir(out, "finetune")  # before reading anything
    train_data, valid_data = load_task_data(options)
    with about_option("--init", options.init, INIT_HINT):
        model, tokenizer = load_for_task(
            BertForSequenceClassification,
            options.init,
            seed=options.seed,
            num_labels=len(train_data.label_names),
            id2label=train_data.id2label,
        )
    positions = model.config.max_position_embeddings
    if options.max_length > positions:
        raise ValueError(
            f"--max-length {options.max_length} is longer than the {positions} positions of "
            f"--init {options.init}: use --max-length {positions} or less."
        )
    started = time.perf_counter()
    train_examples = encode_classification(train_data, tokenizer, options.max_length)
    valid_examples = encode_classification(valid_data, tokenizer, options.max_length)
    print(
        f"Tokenized {len(train_examples):,} training and {len(valid_examples):,} validation "
        f"examples in {time.perf_counter() - started:.1f} s; labels: "
        f"{', '.join(f'{k} ({v:,})' for k, v in train_data.class_counts().items())}"
    )
    take_output_dir(out, "finetune", resume=options.resume, overwrite=options.overwrite,
                    artefacts=FINETUNE_ARTEFACTS)  # fmt: skip
    result = train(
        model,
        train_examples,
        PaddingCollator(tokenizer.pad_token_id),
        training_arguments(options, len(train_examples)),
        eval_dataset=valid_examples,
        evaluate_fn=evaluate_classification,
    )
    if result.interrupted:  # a checkpoint was saved: --resume continues
        return 128 + (result.stop_signal or signal.SIGINT)  # 130 after Ctrl-C, 143 after SIGTERM
    if PartialState().is_main_process:
        _finish_finetuning(result, valid_data, valid_examples, tokenizer, out, options)
    return 0


def training_arguments(options: argparse.Namespace, num_examples: int) -> TrainingArguments:
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
        metric_for_best="eval_accuracy",
        show_progress=options.show_progress,
    )


def _finish_finetuning(
    result: TrainResult,
    valid_data: LabelledData,
    valid_examples: list[dict[str, Any]],
    tokenizer: Any,
    out: Path,
    options: argparse.Namespace,
) -> dict[str, Any]:
    """Best weights back in, a full report on the validation set, plots, and the export."""
    model = result.model
    if result.best is not None:
        load_model_weights(model, out / BEST_DIR)
    logits = torch.stack(predict_logits(model, valid_examples, pad_token_id=tokenizer.pad_token_id))
    labels = torch.tensor(valid_data.labels)
    predictions = logits.argmax(-1)
    report = classification_report(labels.tolist(), predictions.tolist(), valid_data.label_names)
    metrics = {
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "loss": F.cross_entropy(logits, labels).item(),
        "per_class": report["per_class"],
        "confusion_matrix": report["confusion_matrix"],
        "label_names": report["label_names"],
        "num_validation_examples": len(valid_examples),
        "best_step": None if result.best is None else result.best["step"],
        "steps": result.global_step,
        "training_seconds": round(result.elapsed_s, 1),
        "examples_per_s": round(result.examples_per_s, 1),
        "init": options.init,
        "options": {k: v for k, v in vars(options).items() if k not in ("resume", "overwrite")},
    }
    text = json.dumps(metrics, indent=2) + "\n"
    atomic_save_file(lambda tmp: Path(tmp).write_text(text), out / "metrics.json")
    figure = plot_confusion_matrix(
        report["confusion_matrix"],
        valid_data.label_names,
        title=f"validation: accuracy {report['accuracy']:.1%}, macro-F1 {report['macro_f1']:.3f}",
    )
    figure.savefig(out / "confusion_matrix.png", dpi=120, bbox_inches="tight")
    plt.close(figure)  # saved, not shown: a notebook that runs the command keeps its own figures
    figure = plot_training_curves(out / LOG_CSV)
    figure.savefig(out / "training_curves.png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    exported = export_for_transformers(model, tokenizer, out / "model")
    print(
        f"Done: {result.global_step} steps in {result.elapsed_s:.0f} s "
        f"({result.examples_per_s:,.1f} examples/s); best at step {metrics['best_step']}.\n"
        f"  validation: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
        f"loss {metrics['loss']:.4f}\n"
        f"  metrics:    {out / 'metrics.json'}\n"
        f"  plots:      {out / 'confusion_matrix.png'}, {out / 'training_curves.png'}\n"
        f"  model:      {exported} (transformers.pipeline('text-classification', "
        f"model='{exported}'))"
    )
    return metrics
