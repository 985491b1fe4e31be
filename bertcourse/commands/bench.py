"""`python -m bertcourse bench`: the course's model against transformers, in one run.

The measuring is `bertcourse.bench`; this command picks the task (encoder,
pretraining, finetune), prints the table and can write it as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from ..bench import (
    format_finetuning,
    format_pretraining,
    format_table,
    run,
    run_finetuning,
    run_pretraining,
)
from ..config import SIZES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bertcourse bench",
        description="Throughput of the course's BERT against transformers, same weights and batches.",
    )
    parser.add_argument(
        "--task",
        choices=["encoder", "pretraining", "finetune"],
        default="encoder",
        help="encoder: BertModel forward/backward; pretraining: a full BertForPreTraining step; "
        "finetune: a BertForSequenceClassification step from the MiniLM weights (examples/s)",
    )
    parser.add_argument("--size", choices=list(SIZES), default="tiny")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--mode", choices=["inference", "train", "both"], default="both")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best one)")
    parser.add_argument("--padding", type=float, default=0.25, help="mean fraction of padding")
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--json", help="also write the setup and numbers to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not 0.0 <= args.padding < 0.5:
        parser.error("--padding is the mean padded fraction, in [0, 0.5)")
    common = dict(
        size=args.size,
        batch=args.batch,
        seq_len=args.seq_len,
        steps=args.steps,
        warmup=args.warmup,
        dtype=args.dtype,
        device=args.device,
        padding=args.padding,
        vocab_size=args.vocab_size,
    )
    if args.task == "finetune":
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
    return 0
