"""`python -m bertcourse finetune`: fine-tune a classifier, or a sentence encoder for search.

--task classification (the default) reads a CSV/TSV file of labelled texts, starts from --init
(MiniLM, a course run, a hub name or random weights), trains with BERT's fine-tuning recipe,
keeps the best evaluation's weights, and writes metrics.json, a confusion matrix, training
curves and a transformers directory that `pipeline("text-classification")` loads.

--task embedding trains on query -> passage pairs instead (`bertcourse.commands.embedding`).
Both tasks share this parser: the options of one task are refused for the other.
"""

from __future__ import annotations

import argparse
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
from ..embeddings import DEFAULT_SCALE, POOLINGS
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
from ..training import BEST_DIR, LOG_CSV, TrainResult, load_model_weights, train
from ..viz import plot_confusion_matrix, plot_training_curves
from .embedding import train_embedding
from .finetune_common import INIT_HINT, run_record, training_arguments, write_metrics
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
    "TASK_OPTIONS",
    "EMBEDDING_EPOCHS",
    "EMBEDDING_MAX_STEPS",
    "build_parser",
    "load_task_data",
    "main",
    "training_arguments",
]

SENTENCES_HELD_OUT = 1_000  # --holdout sentences: about the size of GLUE's SST-2 dev set (872)
# What the command writes in --out besides the engine's checkpoints, best weights and logs.
FINETUNE_ARTEFACTS = ("model", "metrics.json", "confusion_matrix.png", "training_curves.png")
# A sentence encoder learns from one pass over the pairs; 150 steps of 32 pairs take a few
# minutes on a laptop CPU with MiniLM.
EMBEDDING_EPOCHS = 1
EMBEDDING_MAX_STEPS = 150
# The options only one task reads, with that task's defaults. They are parsed with the default
# None, so that an option given for the other task is seen, and refused, not silently ignored.
TASK_OPTIONS = {
    "classification": {
        "holdout": "stratified",
        "text_column": "sentence",
        "text_pair_column": None,
        "label_column": "label",
        "max_length": 128,
    },
    "embedding": {
        "query_column": "query",
        "passage_column": "passage",
        "pooling": "mean",
        "scale": DEFAULT_SCALE,
        "query_max_length": 64,
        "passage_max_length": 256,
    },
}
# Options both tasks read, each with a default of its own.
TASK_DEFAULTS = {
    "epochs": {"classification": DEFAULT_EPOCHS, "embedding": EMBEDDING_EPOCHS},
    "max_steps": {"classification": DEFAULT_MAX_STEPS, "embedding": EMBEDDING_MAX_STEPS},
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class _TaskParser(argparse.ArgumentParser):
    """Fills in the chosen task's defaults after parsing, and refuses the other task's options."""

    def parse_known_args(self, args=None, namespace=None):
        options, rest = super().parse_known_args(args, namespace)
        task = options.task
        for name, defaults in TASK_DEFAULTS.items():
            if getattr(options, name) is None:
                setattr(options, name, defaults[task])
        wrong = []
        for owner, defaults in TASK_OPTIONS.items():
            for name, default in defaults.items():
                given = getattr(options, name) is not None
                if owner != task:
                    wrong += [_flag(name)] if given else []
                    delattr(options, name)  # not part of this task's run
                elif not given:
                    setattr(options, name, default)
        if wrong:
            other = next(owner for owner in TASK_OPTIONS if owner != task)
            one = len(wrong) == 1
            self.error(
                f"{', '.join(wrong)} {'is an option' if one else 'are options'} of --task "
                f"{other}, not of --task {task}: leave {'it' if one else 'them'} out, or choose "
                f"--task {other}."
            )
        if task == "embedding" and options.batch_size < 2:
            self.error(
                f"argument --batch-size: {options.batch_size}: --task embedding needs 2 pairs or "
                "more per batch (the other pairs' passages are each query's wrong answers)."
            )
        return options, rest


def build_parser() -> argparse.ArgumentParser:
    parser = _TaskParser(
        prog="python -m bertcourse finetune",
        description="Fine-tune a BERT for text classification (single texts or pairs) on a CSV/TSV "
        "file, evaluate it each epoch, keep the best checkpoint, and write metrics.json, a "
        "confusion matrix and a transformers directory. With --task embedding, train a sentence "
        "encoder for semantic search on query -> passage pairs (a CSV/TSV file, or the offline "
        "docstring task), report held-out recall@k, MRR@10 and nDCG@10 before and after, and "
        "write a folder that sentence_transformers.SentenceTransformer loads.",
    )
    parser.add_argument(
        "--task",
        default="classification",
        choices=["classification", "embedding"],
        help="classification: labelled texts -> a classifier (default); embedding: query -> "
        "passage pairs -> a sentence encoder trained with in-batch negatives",
    )
    parser.add_argument(
        "--train",
        required=True,
        help="training file, .csv or .tsv with a header; for --task embedding also 'offline' "
        "(docstring summaries -> the rest of the docstrings, built from the installed packages) "
        "or 'offline-large'",
    )
    parser.add_argument(
        "--valid",
        help="validation file (same columns); without it, part of --train is held out (--holdout "
        "for classification, a seeded 10%% of the pairs for embedding, the test split for "
        "'offline')",
    )
    classification = parser.add_argument_group("--task classification (the default)")
    classification.add_argument(
        "--holdout",
        choices=["stratified", "sentences"],
        help="without --valid, what of --train is held out: a stratified 10%% of the rows, or "
        "1,000 whole sentences and every row that is part of one (for phrase-level files such as "
        "SST-2's, whose rows include the sub-phrases of each sentence: a random row would "
        "usually sit inside a training row) (default stratified)",
    )
    classification.add_argument("--text-column", help="column of the texts (default sentence)")
    classification.add_argument("--text-pair-column", help="second text of a sentence-pair task")
    classification.add_argument("--label-column", help="column of the labels (default label)")
    classification.add_argument(
        "--max-length", type=positive_int, help="tokens per example, at most (default 128)"
    )
    embedding = parser.add_argument_group("--task embedding")
    embedding.add_argument("--query-column", help="column of the queries (default query)")
    embedding.add_argument(
        "--passage-column",
        help="column of the passages, each the answer to its row's query (default passage)",
    )
    embedding.add_argument(
        "--pooling",
        choices=POOLINGS,
        help="how token vectors become one text vector: their mean over the real tokens, the "
        "[CLS] vector, or their maximum (default mean)",
    )
    embedding.add_argument(
        "--scale",
        type=positive_float,
        help="cosine similarities are multiplied by this before the softmax: 1 / temperature "
        f"(default {DEFAULT_SCALE:g}, as sentence-transformers)",
    )
    embedding.add_argument(
        "--query-max-length", type=positive_int, help="tokens per query, at most (default 64)"
    )
    embedding.add_argument(
        "--passage-max-length",
        type=positive_int,
        help="tokens per passage, at most (default 256)",
    )
    training = parser.add_argument_group("both tasks")
    training.add_argument(
        "--init",
        default="minilm",
        help="minilm (offline), course-tiny (the course's own pretrained BERT, offline), a hub "
        "name such as bert-base-uncased, a checkpoint or course run directory, or "
        "random:<any of those> (that model's shape and vocabulary, no pretraining; 'random' is "
        "random:minilm)",
    )
    training.add_argument(
        "--epochs",
        type=positive_float,
        help=f"(default {DEFAULT_EPOCHS}; {EMBEDDING_EPOCHS} for --task embedding)",
    )
    training.add_argument(
        "--max-steps",
        type=non_negative_int,
        help="stop after at most this many steps even if --epochs are not done (default "
        f"{DEFAULT_MAX_STEPS}, {EMBEDDING_MAX_STEPS} for --task embedding: minutes on a laptop "
        "CPU; 0 for no cap)",
    )
    training.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        help="examples per step (default %(default)s); for --task embedding also each query's "
        "candidates: its own passage and the batch's other passages as wrong answers",
    )
    training.add_argument("--lr", type=positive_float, default=DEFAULT_LEARNING_RATE)
    training.add_argument("--warmup-ratio", type=fraction, default=DEFAULT_WARMUP_RATIO)
    training.add_argument("--weight-decay", type=non_negative_float, default=0.01)
    training.add_argument(
        "--no-group-by-length",
        dest="group_by_length",
        action="store_false",
        help="random batches instead of batches of similar length (more padding, slower)",
    )
    training.add_argument("--evals-per-epoch", type=positive_int, default=1)
    training.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    training.add_argument("--seed", type=non_negative_int, default=0)
    training.add_argument("--out", required=True, help="output directory")
    training.add_argument("--resume", action="store_true", help="continue the run in --out")
    training.add_argument("--overwrite", action="store_true", help="start over in --out")
    training.add_argument("--no-progress", dest="show_progress", action="store_false")
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
    if options.task == "embedding":
        return train_embedding(options)
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
        **run_record(result, options),
    }
    write_metrics(metrics, out)
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
