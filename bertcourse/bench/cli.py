"""python -m bertcourse.bench (or python -m bertcourse bench): the options and the dispatch."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

import torch

from ..config import SIZES
from ..modern import ModernConfig
from .bert import (
    format_finetuning,
    format_pretraining,
    format_table,
    run,
    run_finetuning,
    run_pretraining,
)
from .embed import EMBED_TEXT_KINDS, format_embed, run_embed
from .matrix import MATRIX_TOKENS_PER_BATCH, MATRIX_WORKLOADS, format_matrix, run_matrix
from .modern import MODERN_TOKENS_PER_BATCH, format_modern, run_modern
from .tokenizer import format_tokenizer, run_tokenizer

__all__ = [
    "build_parser",
    "main",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bertcourse.bench",
        description="Throughput of the course's BERT against transformers, same weights and batches.",
    )
    parser.add_argument(
        "--task",
        choices=["matrix", "encoder", "pretraining", "finetune", "tokenizer", "embed", "modern"],
        default="matrix",
        help="matrix (the default): every workload of our BERT against transformers' at sizes "
        "tiny mini small and lengths 128 512 (see bertcourse.bench.matrix); "
        "encoder: BertModel forward/backward; pretraining: a full BertForPreTraining step; "
        "finetune: a BertForSequenceClassification step from the MiniLM weights (examples/s); "
        "tokenizer: our BertTokenizer against transformers' fast one on long documents; "
        "embed: sentence embeddings (MiniLM) against sentence-transformers (texts/s); "
        "modern: ModernBERT inference and masked-LM training steps (dense and sparse "
        "prediction) against transformers'",
    )
    parser.add_argument(
        "--size",
        choices=list(SIZES),
        nargs="+",
        default=None,
        help="model size (tiny); matrix: one or more (tiny mini small; base on request); "
        "modern: one or more (tiny mini)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help=f"sequences per batch (32); modern: {MODERN_TOKENS_PER_BATCH} tokens / seq-len",
    )
    parser.add_argument(
        "--seq-len",
        type=int,
        nargs="+",
        default=None,
        help="tokens per sequence (128); matrix and modern: one or more (128 512)",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps per side (20; modern: 10)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first (3; modern: 2)"
    )
    parser.add_argument("--mode", choices=["inference", "train", "both"], default="both")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        nargs="+",
        default=None,
        help="float32, or autocast to bfloat16/float16 (float32; matrix: one or more, default "
        "bfloat16 on CUDA, float32 on a CPU and bfloat16 too where the CPU has native bf16)",
    )
    parser.add_argument(
        "--workload",
        choices=list(MATRIX_WORKLOADS),
        nargs="+",
        default=None,
        help="matrix: the workloads to run (all)",
    )
    parser.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best one)")
    parser.add_argument("--padding", type=float, default=0.25, help="mean fraction of padding")
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help=f"30522 (BERT's); modern: {ModernConfig.vocab_size} (ModernBERT's)",
    )
    parser.add_argument(
        "--local-attention",
        type=int,
        default=128,
        help="modern: the window of the local layers, in tokens (ModernBERT's 128)",
    )
    parser.add_argument(
        "--unpad",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="modern: our model skips padding in its dense layers (ModernBERT's unpadding)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch's CPU threads (default: torch's own)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument(
        "--texts", type=int, default=None, help="embed: how many texts of each kind (512)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="matrix: tiny and mini only, float32 only unless --dtype, 2048 positions per batch "
        "(under 3 minutes on 2 CPU cores); embed: 256 texts unless --texts; modern: 128 tokens unless --seq-len, 3 steps "
        "after 1 unless --steps/--warmup",
    )
    parser.add_argument(
        "--text-kind",
        choices=[*EMBED_TEXT_KINDS, "both"],
        default="both",
        help="embed: passages (a few sentences each), queries (one sentence), or both",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="embed: timed rounds per side (the median counts)"
    )
    parser.add_argument("--json", help="also write the setup and numbers to this file")
    return parser


def _disagreement_status(rows: list[dict], message: str) -> int:
    """0 if the two sides agreed in every row; else `message` on stderr and exit status 1."""
    if all(row["agree"] for row in rows):
        return 0
    print(message, file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not 0.0 <= args.padding < 0.5:
        parser.error("--padding is the mean padded fraction, in [0, 0.5)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.task not in ("modern", "matrix"):
        for name in ("size", "seq_len", "dtype"):
            if len(getattr(args, name) or ()) > 1:
                flag = "--" + name.replace("_", "-")
                parser.error(f"{flag} takes one value except with --task matrix or modern")
    if args.task == "modern" and len(args.dtype or ()) > 1:
        parser.error("--dtype takes one value except with --task matrix")
    if args.workload and args.task != "matrix":
        parser.error("--workload is an option of --task matrix")
    common = dict(
        size=args.size[0] if args.size else "tiny",
        batch=args.batch or 32,
        seq_len=args.seq_len[0] if args.seq_len else 128,
        steps=args.steps or 20,
        warmup=3 if args.warmup is None else args.warmup,
        dtype=args.dtype[0] if args.dtype else "float32",
        device=args.device,
        padding=args.padding,
        vocab_size=args.vocab_size or 30522,
    )
    status = 0
    if args.task == "matrix":
        budget = "quick" if args.quick else "full"
        setup, rows = run_matrix(
            sizes=args.size or (("tiny", "mini") if args.quick else ("tiny", "mini", "small")),
            seq_lens=args.seq_len or (128, 512),
            dtypes=args.dtype or (("float32",) if args.quick else None),
            workloads=args.workload or MATRIX_WORKLOADS,
            tokens_per_batch=args.batch * (args.seq_len or [128])[0]
            if args.batch
            else MATRIX_TOKENS_PER_BATCH[budget],
            steps=args.steps or 5,
            warmup=args.warmup if args.warmup is not None else 1,
            device=args.device,
            padding=args.padding,
            vocab_size=args.vocab_size or 30522,
        )
        print(format_matrix(setup, rows))
        payload = {"setup": setup, "rows": rows}
        status = _disagreement_status(
            rows,
            "Our BERT and transformers' compute different things in some rows, which have "
            "no ratio: check the weights and the config before reading any speed.",
        )
    elif args.task == "modern":
        setup, rows = run_modern(
            sizes=args.size or ("tiny", "mini"),
            seq_lens=args.seq_len or ((128,) if args.quick else (128, 512)),
            batch=args.batch,
            steps=args.steps or (3 if args.quick else 10),
            warmup=args.warmup if args.warmup is not None else (1 if args.quick else 2),
            modes=("inference", "train") if args.mode == "both" else (args.mode,),
            dtype=args.dtype[0] if args.dtype else "float32",
            attn_implementation=args.attn,
            device=args.device,
            padding=args.padding,
            vocab_size=args.vocab_size or ModernConfig.vocab_size,
            local_attention=args.local_attention,
            unpad=args.unpad,
        )
        print(format_modern(setup, rows))
        payload = {"setup": setup, "rows": rows}
        status = _disagreement_status(
            rows,
            "Our ModernBERT and transformers' compute different things, so some rows have "
            "no ratio: check the weights and the config before reading any speed.",
        )
    elif args.task == "embed":
        texts = args.texts if args.texts is not None else (256 if args.quick else 512)
        kinds = EMBED_TEXT_KINDS if args.text_kind == "both" else (args.text_kind,)
        setup, rows = run_embed(texts, common["batch"], args.repeats, args.device, kinds)
        print(format_embed(setup, rows))
        payload = {"setup": setup, "rows": rows}
        status = _disagreement_status(
            rows,
            "The two sides' vectors differ, so some rows have no ratio: check the model "
            "and the tokenizer before reading any speed.",
        )
    elif args.task == "tokenizer":
        payload = run_tokenizer()
        print(format_tokenizer(payload))
    elif args.task == "finetune":
        common.pop("size"), common.pop("vocab_size")
        setup, result = run_finetuning(**common)
        print(format_finetuning(setup, result))
        payload = {
            "setup": setup,
            "result": {
                "ours_examples_per_s": result.ours_tokens_per_s,
                "reference_examples_per_s": result.reference_tokens_per_s,
                "ours_peak_memory_mb": result.ours_peak_memory_mb,
                "reference_peak_memory_mb": result.reference_peak_memory_mb,
                "ratio": result.ratio,
            },
        }
    elif args.task == "pretraining":
        setup, result = run_pretraining(**common)
        print(format_pretraining(setup, result))
        payload = {"setup": setup, "result": asdict(result) | {"ratio": result.ratio}}
    else:
        modes = ("inference", "train") if args.mode == "both" else (args.mode,)
        setup, results = run(
            **common, modes=modes, attn_implementation=args.attn, compile=args.compile
        )
        print(format_table(setup, results))
        payload = {"setup": setup, "results": [asdict(r) | {"ratio": r.ratio} for r in results]}
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(payload, handle, indent=2)
    return status
