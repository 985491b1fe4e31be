"""`python -m bertcourse pretrain`: corpus -> vocabulary -> examples -> train -> export.

The command puts the library together for BERT's pretraining: a corpus split
into training and validation documents, a WordPiece vocabulary, NSP (or
MLM-only) examples, the training engine with sparse MLM prediction, and an
export that `transformers.pipeline("fill-mask", ...)` loads.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..config import SIZES, BertConfig
from ..data import (
    OFFLINE_CORPORA,
    Corpus,
    PretrainingCollator,
    create_mlm_examples,
    create_nsp_examples,
    is_validation_document,
    load_corpus,
)
from ..hf import export_for_transformers
from ..model import BertForMaskedLM, BertForPreTraining
from ..modern import LADDER, ModernBertForMaskedLM, ModernBertForPreTraining, ladder_config
from ..tokenization import BertTokenizer, save_vocab, train_reference_wordpiece, train_wordpiece
from ..training import (
    CHECKPOINT_PREFIX,
    LOG_CSV,
    LOG_JSONL,
    MIXED_PRECISIONS,
    TrainingArguments,
    TrainResult,
    evaluate_pretraining,
    latest_checkpoint,
    make_dataloader,
    train,
)
from ..viz import plot_training_curves
from .options import (
    about_option,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
)
from .rundir import check_output_dir, take_output_dir

__all__ = [
    "EVAL_MLM_PROBABILITY",
    "RECIPE",
    "PRETRAIN_ARTEFACTS",
    "build_parser",
    "corpus_splits",
    "evaluate_checkpoint",
    "run_pretraining",
    "load_pretraining_tokenizer",
    "prepare_pretraining_dir",
    "main",
    "make_pretraining_examples",
    "training_arguments",
]

CORPUS_HINT = (
    "--corpus offline, offline-large, wikitext-103 (online), a .txt/.csv/.tsv file, or a folder "
    "of .txt files."
)
# What the command writes in --out besides the engine's checkpoints and logs.
PRETRAIN_ARTEFACTS = ("final", "training_curves.png", "vocab.txt", "pretrain_setup.json")
EVAL_MLM_PROBABILITY = 0.15  # BERT's masking rate, at which every run is evaluated
# The laptop recipe, the defaults: chosen by scripts/pretrain_sweep.py
# (bertcourse/reference/pretrain_sweep.json), five-minute runs of a tiny BERT on the offline corpus on 2 CPU cores. Short sequences, 30%
# masking and a large learning rate learnt most per minute; NSP did not help masked LM.
RECIPE = {"vocab": "train:8000", "nsp": False, "seq_len": 64, "batch_size": 64, "lr": 3e-3,
          "mlm_probability": 0.3}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bertcourse pretrain",
        description="Pretrain a BERT from scratch with masked language modelling (and, with --nsp, "
        "next sentence prediction), then export a transformers directory that "
        "pipeline('fill-mask') loads. The defaults are the laptop recipe measured by "
        "scripts/pretrain_sweep.py.",
    )
    parser.add_argument("--size", default="tiny", choices=list(SIZES), help="model size")
    parser.add_argument(
        "--arch",
        default="bert",
        choices=["bert", "modern"],
        help="'bert' (the course's BERT, default) or 'modern': the encoder of bertcourse.modern, "
        "ModernBERT's layers (pre-LN, GeGLU, rotary positions, local/global attention, "
        "unpadding) or, with --rung, BERT plus the changes up to one rung of chapter 14's ladder",
    )
    parser.add_argument(
        "--rung",
        type=ladder_rung,
        default=None,
        help=f"with --arch modern: {', '.join(f'{i} {r.name}' for i, r in enumerate(LADDER, 1))} "
        f"(default {len(LADDER)}, ModernBERT). The rung sets the model; NSP and the masking rate "
        "stay those of --nsp and --mlm-probability",
    )
    parser.add_argument(
        "--local-attention",
        type=positive_int,
        default=128,
        help="with --arch modern: the window of the local layers in tokens, both sides together "
        "(default %(default)s, ModernBERT's; each token sees half of it on each side)",
    )
    parser.add_argument(
        "--corpus",
        default="offline",
        help="'offline' (Python's documentation, about 1 MB), 'offline-large' (that and the "
        "docstrings of the installed packages, about 12 MB), 'wikitext-103', or a local "
        ".txt/.csv/.tsv file or directory of .txt files",
    )
    parser.add_argument("--steps", type=positive_int, required=True, help="optimizer steps")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--vocab",
        default=RECIPE["vocab"],
        help="'minilm' (MiniLM's 30,522 tokens), 'train:N' (a WordPiece vocabulary of N tokens "
        "trained on the corpus by the course's trainer; smaller vocabularies train faster on a "
        "CPU), 'tokenizers:N' (the same by the tokenizers library), or a vocab.txt path "
        "(default %(default)s)",
    )
    nsp = parser.add_mutually_exclusive_group()
    nsp.add_argument(
        "--no-nsp",
        dest="no_nsp",
        action="store_true",
        default=not RECIPE["nsp"],
        help="masked LM only (BertForMaskedLM, packed text): the default",
    )
    nsp.add_argument(
        "--nsp",
        dest="no_nsp",
        action="store_false",
        help="masked LM + next sentence prediction (BertForPreTraining, sentence pairs), as BERT",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=RECIPE["batch_size"], help="per process"
    )
    parser.add_argument("--seq-len", type=positive_int, default=RECIPE["seq_len"])
    parser.add_argument("--lr", type=positive_float, default=RECIPE["lr"])
    parser.add_argument("--warmup-ratio", type=fraction, default=0.1)
    parser.add_argument("--weight-decay", type=non_negative_float, default=0.01)
    parser.add_argument("--grad-accum", type=positive_int, default=1)
    parser.add_argument("--mlm-probability", type=probability, default=RECIPE["mlm_probability"])
    parser.add_argument("--whole-word-mask", action="store_true")
    parser.add_argument(
        "--eval-every", type=positive_int, default=None, help="steps (default steps/10)"
    )
    parser.add_argument(
        "--save-every", type=positive_int, default=None, help="steps (default eval-every)"
    )
    parser.add_argument(
        "--log-every", type=positive_int, default=None, help="steps (default steps/50)"
    )
    parser.add_argument(
        "--eval-examples", type=non_negative_int, default=512, help="validation examples used"
    )
    parser.add_argument("--keep-checkpoints", type=positive_int, default=2)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--num-workers", type=non_negative_int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument(
        "--overwrite", action="store_true", help="start over in an --out that holds a run"
    )
    parser.add_argument("--mixed-precision", default="no", choices=MIXED_PRECISIONS)
    return parser


def load_pretraining_tokenizer(spec: str, train_texts: Callable[[], list[str]], out: Path) -> Any:
    """The tokenizer --vocab names; a trained vocabulary is trained once and kept in out/vocab.txt.

    'minilm': MiniLM's 30,522 tokens. 'train:N': N tokens learnt from the
    corpus by the course's WordPiece trainer (`train_wordpiece`).
    'tokenizers:N': the same size from the `tokenizers` library's trainer
    (`train_reference_wordpiece`), for comparison. Else a vocab.txt or a
    checkpoint directory.
    """
    if spec.lower() == "minilm":
        return BertTokenizer.from_pretrained("minilm")
    trainers = {"train": train_wordpiece, "tokenizers": train_reference_wordpiece}
    name, _, size = spec.partition(":")
    if name in trainers and size:
        if not size.isdigit():
            raise ValueError(f"--vocab {spec!r}: write {name}:N with a number, e.g. {name}:8000.")
        vocab_file = out / "vocab.txt"
        if not vocab_file.is_file():
            started = time.perf_counter()
            with about_option(
                "--vocab",
                spec,
                "--vocab train:N with N at least that (e.g. the default train:8000).",
            ):
                vocab = trainers[name](train_texts(), int(size))
            save_vocab(vocab, vocab_file)
            print(
                f"Trained a WordPiece vocabulary of {len(vocab):,} tokens "
                f"({trainers[name].__name__}) in {time.perf_counter() - started:.1f} s -> {vocab_file}"
            )
        return BertTokenizer(vocab_file)
    path = Path(spec).expanduser()
    if path.is_dir():
        return BertTokenizer.from_pretrained(path)
    if path.is_file():
        return BertTokenizer(path)
    raise FileNotFoundError(
        f"--vocab {spec!r} is neither 'minilm', 'train:N', 'tokenizers:N' nor an existing "
        "vocab.txt or checkpoint directory."
    )


def corpus_splits(name: str) -> tuple[Corpus, Corpus]:
    """(train, validation) corpora; a local file is split by the package's document-id rule."""
    path = Path(name).expanduser()
    if name in OFFLINE_CORPORA or not path.exists():
        return load_corpus(name, "train"), load_corpus(name, "validation")
    whole = load_corpus(path, "all")
    parts = [
        Corpus(f"{whole.name}/{split}", docs, whole.provenance, whole.license)
        for split, docs in (
            ("train", [d for d in whole.documents if not is_validation_document(d.id)]),
            ("validation", [d for d in whole.documents if is_validation_document(d.id)]),
        )
    ]
    if not parts[1].documents:  # a small file: hold out its last document
        parts = [
            Corpus(f"{whole.name}/train", whole.documents[:-1], whole.provenance, whole.license),
            Corpus(
                f"{whole.name}/validation", whole.documents[-1:], whole.provenance, whole.license
            ),
        ]
    return parts[0], parts[1]


def prepare_pretraining_dir(
    out: Path, setup: dict[str, Any], resume: bool, overwrite: bool
) -> None:
    """Check --out before the slow work; record the options that define the run.

    --resume with other data or model options would not continue the same
    run: refused. A new run where one exists needs --resume or --overwrite
    (the engine checks again). The trained vocabulary (out/vocab.txt) is
    reused only for the same corpus and --vocab.
    """
    path = out / "pretrain_setup.json"
    saved = json.loads(path.read_text()) if path.is_file() else None
    if resume and saved is not None:
        changed = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in setup.items() if saved.get(k) != v]
        if changed:
            raise ValueError(
                f"--resume with options that change the model or data ({'; '.join(changed)}). "
                "Use the original options, or a new --out."
            )
    has_run = latest_checkpoint(out) is not None or (out / LOG_JSONL).exists()
    if has_run and not (resume or overwrite):
        raise FileExistsError(
            f"{out} already holds a run: add --resume to continue it, --overwrite to start over "
            "there, or choose another --out."
        )
    take_output_dir(
        out, "pretrain", resume=resume, overwrite=overwrite, artefacts=PRETRAIN_ARTEFACTS
    )
    if saved is not None and any(saved.get(k) != setup[k] for k in ("corpus", "vocab")):
        (out / "vocab.txt").unlink(missing_ok=True)  # trained for other text or another size
    path.write_text(json.dumps(setup, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bertcourse pretrain ...`: corpus -> vocabulary -> examples -> train -> export."""
    parser = build_parser()
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if options.rung is not None and options.arch != "modern":
        parser.error("--rung needs --arch modern (a rung of the BERT -> ModernBERT ladder)")
    if options.arch == "modern" and options.rung is None:
        options.rung = len(LADDER)
    out = Path(options.out)
    setup = {
        key: getattr(options, key)
        for key in ("size", "corpus", "vocab", "no_nsp", "seq_len", "mlm_probability",
                    "whole_word_mask", "seed", "eval_examples", "arch", "rung", "local_attention")
    }  # fmt: skip
    check_output_dir(out, "pretrain")
    prepare_pretraining_dir(out, setup, options.resume, options.overwrite)

    started = time.perf_counter()
    with about_option("--corpus", options.corpus, CORPUS_HINT):
        train_corpus, validation_corpus = corpus_splits(options.corpus)
    print(f"Corpus: {train_corpus.summary()}; validation: {validation_corpus.summary()}")
    tokenizer = load_pretraining_tokenizer(options.vocab, train_corpus.texts, out)
    train_examples, eval_examples = make_pretraining_examples(
        options, tokenizer, train_corpus, validation_corpus
    )
    print(
        f"Examples: {len(train_examples):,} for training, {len(eval_examples):,} for evaluation "
        f"(sequences of at most {options.seq_len} tokens; built in "
        f"{time.perf_counter() - started:.1f} s)"
    )
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if len(train_examples) < options.batch_size * processes:
        raise ValueError(
            f"--batch-size {options.batch_size}: the corpus gives {len(train_examples):,} training "
            f"examples of --seq-len {options.seq_len}, fewer than one batch"
            + (f" on each of {processes} processes" if processes > 1 else "")
            + ": lower --batch-size or use a larger --corpus."
        )
    result = run_pretraining(options, tokenizer, train_examples, eval_examples)
    if result.interrupted:  # a checkpoint was saved: --resume continues
        return 128 + (result.stop_signal or signal.SIGINT)  # 130 after Ctrl-C, 143 after SIGTERM
    if int(os.environ.get("RANK", "0")) == 0:
        _finish_pretraining(result, tokenizer, out)
    return 0


def run_pretraining(
    options: argparse.Namespace,
    tokenizer: Any,
    train_examples: list[dict[str, Any]],
    eval_examples: list[dict[str, Any]],
) -> TrainResult:
    """The model the options name, from random weights (seeded), trained on the examples."""
    if options.seq_len > 512:
        print(
            f"--seq-len {options.seq_len} is longer than BERT's 512 positions: the model gets "
            f"{options.seq_len:,} position embeddings, and attention's cost grows with its square."
        )
    shared = dict(
        vocab_size=len(tokenizer),
        max_position_embeddings=max(512, options.seq_len),
        pad_token_id=tokenizer.pad_token_id,
    )
    if getattr(options, "arch", "bert") == "modern":
        config = ladder_config(
            options.rung, options.size, local_attention=options.local_attention, **shared
        )
        classes = (ModernBertForMaskedLM, ModernBertForPreTraining)
        described = f"rung {options.rung}: {config.describe()}"
    else:
        config = BertConfig.from_name(options.size, **shared)
        classes = (BertForMaskedLM, BertForPreTraining)
        described = options.size
    torch.manual_seed(options.seed)
    model = classes[0 if options.no_nsp else 1](config)
    print(
        f"Model: {type(model).__name__} ({options.size}, {described}), "
        f"{model.num_parameters() / 1e6:.1f}M parameters, vocabulary {len(tokenizer):,}"
    )
    collator = PretrainingCollator(
        tokenizer, mlm_probability=options.mlm_probability, whole_word_mask=options.whole_word_mask
    )
    # Held-out accuracy is always measured at BERT's 15%, so runs at other rates compare.
    eval_collator = PretrainingCollator(
        tokenizer, mlm_probability=EVAL_MLM_PROBABILITY, whole_word_mask=options.whole_word_mask
    )
    # Sparse prediction (masked_only): the V-wide MLM head runs on the masked tokens only.
    return train(
        model,
        train_examples,
        collator,
        training_arguments(options),
        eval_dataset=eval_examples or None,
        evaluate_fn=evaluate_pretraining,
        eval_collate_fn=eval_collator,
        forward_kwargs={"masked_only": True},
    )


def make_pretraining_examples(
    options: argparse.Namespace, tokenizer: Any, train_corpus: Corpus, validation_corpus: Corpus
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """NSP pairs (or, with --no-nsp, packed MLM sequences) for training and evaluation."""
    make_examples = partial(
        create_mlm_examples if options.no_nsp else create_nsp_examples,
        max_seq_length=options.seq_len,
    )
    documents = [d.sentences for d in train_corpus.documents]
    validation_documents = [d.sentences for d in validation_corpus.documents]
    train_examples = make_examples(documents, tokenizer, seed=options.seed)
    eval_examples = make_examples(validation_documents, tokenizer, seed=options.seed + 1)
    # A seeded sample of the whole validation split: its first examples would all come from its
    # first documents (the offline corpora start with the Language Reference's pages).
    if len(eval_examples) > options.eval_examples:
        eval_examples = random.Random(options.seed).sample(eval_examples, options.eval_examples)
    return train_examples, eval_examples


def evaluate_checkpoint(
    directory: str | Path,
    corpus: str = "offline-large",
    seq_len: int = 64,
    eval_examples: int = 2048,
    seed: int = 0,
    batch_size: int = 64,
) -> dict[str, float]:
    """Held-out masked-LM loss and top-1 accuracy of an exported checkpoint (a `final/` folder,
    "course-tiny", ...) on the validation split of `corpus`.

    The examples are those a pretrain run with the same --seq-len, --seed and
    --eval-examples evaluates on: a seeded sample of packed validation
    sequences, 15% of their tokens masked with a fixed seed. So the score is
    deterministic, and the same as the run's own final evaluation.
    """
    from accelerate import Accelerator  # deferred: only for evaluating a checkpoint alone

    tokenizer = BertTokenizer.from_pretrained(directory)
    validation = load_corpus(corpus, "validation")
    options = argparse.Namespace(
        no_nsp=True, seq_len=seq_len, seed=seed, eval_examples=eval_examples
    )
    _, examples = make_pretraining_examples(options, tokenizer, validation, validation)
    model = load_masked_lm(directory)
    collator = PretrainingCollator(tokenizer, mlm_probability=EVAL_MLM_PROBABILITY)
    loader = make_dataloader(
        examples, collator, batch_size, seed + 1, shuffle=False, drop_last=False
    )
    metrics = evaluate_pretraining(model, loader, Accelerator(cpu=True))
    return {**metrics, "eval_examples": len(examples)}


def ladder_rung(value: str) -> int:
    """--rung: a number 1-7 or a rung's name (bert, pre_ln, ...), as its number."""
    names = [rung.name for rung in LADDER]
    if value.isdigit() and 1 <= int(value) <= len(LADDER):
        return int(value)
    if value in names:
        return names.index(value) + 1
    raise argparse.ArgumentTypeError(
        f"{value!r} is not a rung: use 1-{len(LADDER)} or one of {', '.join(names)}"
    )


def load_masked_lm(directory: str | Path) -> torch.nn.Module:
    """The masked-LM model of an exported checkpoint: BERT, or a rung of the ModernBERT ladder."""
    config_file = Path(directory) / "config.json"
    if (
        config_file.is_file()
        and json.loads(config_file.read_text()).get("model_type") == "modernbert"
    ):
        return ModernBertForMaskedLM.from_hf(directory).eval()
    return BertForMaskedLM.from_hf(directory).eval()


def training_arguments(options: argparse.Namespace) -> TrainingArguments:
    """The engine's arguments from the command's options (evaluation every steps/10 by default)."""
    eval_every = options.eval_every or max(1, options.steps // 10)
    return TrainingArguments(
        output_dir=Path(options.out),
        max_steps=options.steps,
        per_device_batch_size=options.batch_size,
        learning_rate=options.lr,
        warmup_ratio=options.warmup_ratio,
        weight_decay=options.weight_decay,
        gradient_accumulation_steps=options.grad_accum,
        mixed_precision=options.mixed_precision,
        eval_every=eval_every,
        save_every=options.save_every or eval_every,
        log_every=options.log_every or max(1, options.steps // 50),
        keep_checkpoints=options.keep_checkpoints,
        seed=options.seed,
        resume=options.resume,
        overwrite_output_dir=options.overwrite,
        num_workers=options.num_workers,
    )


def _finish_pretraining(result: TrainResult, tokenizer: Any, out: Path) -> None:
    final = export_for_transformers(result.model, tokenizer, out / "final")
    figure = plot_training_curves(out / LOG_CSV)
    figure.savefig(out / "training_curves.png", dpi=120, bbox_inches="tight")
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in result.eval_metrics.items())
    print(
        f"Done: {result.global_step} steps, {result.elapsed_s:.0f} s, "
        f"{result.tokens_per_s:,.0f} tokens/s{'; ' + metrics if metrics else ''}\n"
        f"  checkpoints: {out}/{CHECKPOINT_PREFIX}<step>/ (resume with --resume)\n"
        f"  logs:        {out / LOG_CSV}, {out / LOG_JSONL}\n"
        f"  plot:        {out / 'training_curves.png'}\n"
        f"  model:       {final} (transformers.pipeline('fill-mask', model='{final}'))"
    )
