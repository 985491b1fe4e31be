"""`python -m bertcourse finetune --task embedding`: a sentence encoder for search, from pairs.

Reads query -> passage pairs (a CSV/TSV file, or the offline docstring task), starts from
--init, and trains a `BiEncoder` with in-batch negatives: each query must pick its own passage
among the batch's. The held-out queries search the held-out passages before training and at
each evaluation; the best evaluation's weights are kept. Writes metrics.json (recall@1,
recall@10, MRR@10 and nDCG@10, before and after), training curves, and a folder that
`sentence_transformers.SentenceTransformer` loads.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from accelerate import PartialState

from ..data import RetrievalData, load_retrieval_pairs, offline_retrieval
from ..embeddings import (
    BiEncoder,
    PairCollator,
    evaluate_retrieval,
    pair_examples,
    retrieval_evaluator,
    save_sentence_transformer,
)
from ..finetune import load_for_task
from ..model import BertModel
from ..training import BEST_DIR, LOG_CSV, TrainResult, load_model_weights, train
from ..viz import plot_training_curves
from .finetune_common import INIT_HINT, run_record, training_arguments, write_metrics
from .options import about_option
from .rundir import take_output_dir

__all__ = [
    "EMBEDDING_ARTEFACTS",
    "OFFLINE_TASKS",
    "HELD_OUT_FRACTION",
    "METRICS",
    "SearchTask",
    "search_task",
    "split_pairs",
    "load_pairs",
    "shared_passages",
    "train_embedding",
]

# What the command writes in --out besides the engine's checkpoints, best weights and logs.
EMBEDDING_ARTEFACTS = ("model", "metrics.json", "training_curves.png")
# --train names -> offline_retrieval's variant (trained on "train", evaluated on "test").
OFFLINE_TASKS = {"offline": "small", "offline-large": "large"}
HELD_OUT_FRACTION = 0.1  # without --valid: this share of the file's pairs, seeded
METRICS = ("recall@1", "recall@10", "mrr@10", "ndcg@10")
EVAL_BATCH_SIZE = 64


@dataclass
class SearchTask:
    """Queries, the collection they search, and each query's relevant passages (indices)."""

    queries: list[str]
    passages: list[str]
    relevant: list[set[int]]


def search_task(data: RetrievalData) -> SearchTask:
    """The held-out pairs as a search task: each distinct query and passage once.

    A passage that two pairs share is one entry of the collection (two copies would tie, and
    the second would count as a wrong answer); a query that two pairs share has both passages
    as its relevant ones.
    """
    passages: dict[str, int] = {}
    relevant: dict[str, set[int]] = {}
    for pair in data.pairs:
        index = passages.setdefault(pair.passage, len(passages))
        relevant.setdefault(pair.query, set()).add(index)
    for passage in data.extra_passages:
        passages.setdefault(passage, len(passages))
    return SearchTask(list(relevant), list(passages), list(relevant.values()))


def split_pairs(
    data: RetrievalData, fraction: float = HELD_OUT_FRACTION, seed: int = 0
) -> tuple[RetrievalData, RetrievalData]:
    """(train, held out): a seeded `fraction` of the pairs (one at least) is held out."""
    if len(data) < 2:
        raise ValueError(
            f"{data.name} has only {len(data)} pair: it needs 2 at least (one to learn from, "
            "one held out to measure the search): add pairs."
        )
    held_out = max(1, round(fraction * len(data)))
    chosen = set(random.Random(seed).sample(range(len(data)), held_out))
    kept = [pair for i, pair in enumerate(data.pairs) if i not in chosen]
    tested = [pair for i, pair in enumerate(data.pairs) if i in chosen]
    return (
        RetrievalData(kept, data.name, data.provenance),
        RetrievalData(tested, f"{data.name} (held out)", data.provenance),
    )


def _read_pairs(source: str, options: argparse.Namespace, split: str) -> RetrievalData:
    if source in OFFLINE_TASKS:
        return offline_retrieval(split, OFFLINE_TASKS[source])
    return load_retrieval_pairs(source, options.query_column, options.passage_column)


def load_pairs(options: argparse.Namespace) -> tuple[RetrievalData, RetrievalData, str]:
    """(training pairs, held-out pairs, where the held-out pairs come from)."""
    train_data = _read_pairs(options.train, options, "train")
    if options.valid is not None:
        held_out, about = _read_pairs(options.valid, options, "test"), options.valid
    elif options.train in OFFLINE_TASKS:
        held_out, about = offline_retrieval("test", OFFLINE_TASKS[options.train]), "its test split"
    else:
        train_data, held_out = split_pairs(train_data, HELD_OUT_FRACTION, options.seed)
        about = f"{HELD_OUT_FRACTION:.0%} of {options.train}, seed {options.seed}"
    if len(train_data) < 2:
        raise ValueError(
            f"{train_data.name} has only {len(train_data)} pair: training needs 2 at least "
            "(each query learns from the other pairs' passages): add pairs."
        )
    return train_data, held_out, about


def shared_passages(data: RetrievalData) -> list[list[str]]:
    """For each passage that answers two different queries or more, its pairs' sources."""
    by_passage: dict[str, list[Any]] = {}
    for pair in data.pairs:
        by_passage.setdefault(pair.passage, []).append(pair)
    return [
        [pair.source for pair in pairs]
        for pairs in by_passage.values()
        if len({pair.query for pair in pairs}) > 1
    ]


def _check_sizes(options: argparse.Namespace, num_pairs: int, positions: int) -> None:
    if options.batch_size > num_pairs:
        raise ValueError(
            f"--batch-size {options.batch_size} is larger than the {num_pairs} training pairs "
            f"(each step takes one full batch): use --batch-size {num_pairs} or less."
        )
    for flag in ("query_max_length", "passage_max_length"):
        length = getattr(options, flag)
        if length > positions:
            raise ValueError(
                f"--{flag.replace('_', '-')} {length} is longer than the {positions} positions "
                f"of --init {options.init}: use {positions} or less."
            )


def _summary(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name} {metrics[name]:.3f}" for name in METRICS)


def train_embedding(options: argparse.Namespace) -> int:
    """`finetune --task embedding`: pairs -> model -> evaluate, train, evaluate -> report, export.

    --out has been checked (`check_output_dir`); every check here comes before its first write.
    """
    out = Path(options.out)
    train_data, held_out, held_out_about = load_pairs(options)
    task = search_task(held_out)
    shared = shared_passages(train_data)
    if shared:
        print(
            f"warning: {len(shared)} passage(s) of {train_data.name} answer more than one query "
            f"(e.g. {' and '.join(shared[0][:2])}): in a batch with two such pairs, each "
            "query's passage is also the other's wrong answer (a false negative). Training goes "
            "on; merge or remove such pairs for a cleaner signal.",
            file=sys.stderr,
        )
    with about_option("--init", options.init, INIT_HINT):
        encoder, tokenizer = load_for_task(BertModel, options.init, seed=options.seed)
    _check_sizes(options, len(train_data), encoder.config.max_position_embeddings)
    started = time.perf_counter()
    lengths = {
        "query_max_length": options.query_max_length,
        "passage_max_length": options.passage_max_length,
    }
    train_examples = pair_examples(
        tokenizer, train_data.queries, [pair.passage for pair in train_data.pairs], **lengths
    )
    # The engine wants an evaluation set to evaluate at all; the evaluator searches `task`.
    eval_examples = pair_examples(
        tokenizer, held_out.queries, [pair.passage for pair in held_out.pairs], **lengths
    )
    print(
        f"Tokenized {len(train_examples):,} training pairs in {time.perf_counter() - started:.1f}"
        f" s; held out ({held_out_about}): {len(task.queries):,} queries searching "
        f"{len(task.passages):,} passages."
    )
    arguments = training_arguments(options, len(train_examples), metric_for_best="eval_mrr@10")
    take_output_dir(out, "finetune", resume=options.resume, overwrite=options.overwrite,
                    artefacts=EMBEDDING_ARTEFACTS)  # fmt: skip
    # Measured again by a resumed run: the same weights (seeded) give the same numbers.
    initial = evaluate_retrieval(
        encoder, tokenizer, task.queries, task.passages, task.relevant,
        pooling=options.pooling, batch_size=EVAL_BATCH_SIZE,
    )  # fmt: skip
    print(f"Before training: {_summary(initial)}")
    result = train(
        BiEncoder(encoder, pooling=options.pooling, scale=options.scale),
        train_examples,
        PairCollator(tokenizer.pad_token_id),
        arguments,
        eval_dataset=eval_examples,
        evaluate_fn=retrieval_evaluator(
            tokenizer, task.queries, task.passages, task.relevant, batch_size=EVAL_BATCH_SIZE
        ),
    )
    if result.interrupted:  # a checkpoint was saved: --resume continues
        return 128 + (result.stop_signal or signal.SIGINT)  # 130 after Ctrl-C, 143 after SIGTERM
    if PartialState().is_main_process:
        sizes = {
            "train_pairs": len(train_data),
            "held_out_queries": len(task.queries),
            "collection_size": len(task.passages),
            "held_out": held_out_about,
        }
        _finish(result, initial, sizes, tokenizer, out, options)
    return 0


def _finish(
    result: TrainResult,
    initial: dict[str, float],
    sizes: dict[str, Any],
    tokenizer: Any,
    out: Path,
    options: argparse.Namespace,
) -> dict[str, Any]:
    """Best weights back in, metrics.json, the training curves, and the sentence-transformers export."""
    model = result.model
    evaluation = result.eval_metrics
    if result.best is not None:
        load_model_weights(model, out / BEST_DIR)
        evaluation = result.best["metrics"]  # measured on these very weights
    final = {name: evaluation[f"eval_{name}"] for name in METRICS}
    metrics = {
        **final,
        "initial": {name: initial[name] for name in METRICS},
        **sizes,
        **run_record(result, options),
    }
    write_metrics(metrics, out)
    figure = plot_training_curves(
        out / LOG_CSV, title=f"held-out MRR@10 {initial['mrr@10']:.3f} -> {final['mrr@10']:.3f}"
    )
    figure.savefig(out / "training_curves.png", dpi=120, bbox_inches="tight")
    plt.close(figure)  # saved, not shown: a notebook that runs the command keeps its own figures
    exported = save_sentence_transformer(
        model.bert,
        tokenizer,
        out / "model",
        pooling=options.pooling,
        max_seq_length=options.passage_max_length,
    )
    print(
        f"Done: held-out MRR@10 {initial['mrr@10']:.3f} -> {final['mrr@10']:.3f} "
        f"(recall@1 {initial['recall@1']:.3f} -> {final['recall@1']:.3f}) after "
        f"{result.global_step} steps in {result.elapsed_s:.0f} s; {out / 'metrics.json'}; "
        f"SentenceTransformer('{exported}')."
    )
    return metrics
