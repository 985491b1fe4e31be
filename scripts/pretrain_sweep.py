"""The laptop pretraining sweep: which recipe learns most in a few minutes of a 2-core CPU?

    python scripts/pretrain_sweep.py                      # every run, 5 minutes of training each
    python scripts/pretrain_sweep.py --only lr3e-3 mask30 # some of them
    python scripts/pretrain_sweep.py --minutes 1 --json /tmp/sweep.json   # a quick look

Each run is `python -m bertcourse pretrain --corpus offline-large ...` with the options below,
its number of steps chosen so that its training takes about --minutes on this machine (a
20-step pilot measures the speed first). Held-out MLM accuracy is measured at 15% masking on a
seeded sample of the validation split of about EVAL_TOKENS tokens, whatever the sequence length. The corpus and the examples of
each vocabulary and sequence length are built once. Results go to bertcourse/reference/pretrain_sweep.json
(one record per run, written after each run, with the command that reproduces it), together
with the commit, the machine and its load. Time it alone: a second busy process on two cores
slows a run several times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from bertcourse.commands import pretrain
from bertcourse.config import BertConfig
from bertcourse.data import PretrainingCollator
from bertcourse.model import BertForMaskedLM, BertForPreTraining
from bertcourse.training import (
    evaluate_pretraining,
    latest_checkpoint,
    load_model_weights,
    make_dataloader,
)

ROOT = Path(__file__).resolve().parent.parent
# name -> the pretrain options that differ from the baseline (tiny, MLM only, train:8000, 128
# tokens, batch 32, lr 1e-3, 15% masking).
BASELINE = ["--size", "tiny", "--no-nsp", "--vocab", "train:8000", "--seq-len", "128",
            "--batch-size", "32", "--lr", "1e-3", "--mlm-probability", "0.15"]  # fmt: skip
RUNS = {
    "baseline": [],
    "lr3e-3": ["--lr", "3e-3"],
    "lr3e-3-mask30": ["--lr", "3e-3", "--mlm-probability", "0.3"],
    "lr3e-3-seq64-batch64": ["--lr", "3e-3", "--seq-len", "64", "--batch-size", "64"],
    "lr3e-3-vocab4k": ["--lr", "3e-3", "--vocab", "train:4000"],
    "lr3e-3-batch64": ["--lr", "3e-3", "--batch-size", "64"],
    "lr3e-3-nsp": ["--lr", "3e-3", "--nsp"],
    "mini-lr1e-3": ["--size", "mini"],
    "lr3e-3-vocab16k": ["--lr", "3e-3", "--vocab", "train:16000"],
    "seq64-batch64-mask30": ["--lr", "3e-3", "--seq-len", "64", "--batch-size", "64",
                             "--mlm-probability", "0.3"],
    "seq32-batch128-mask30": ["--lr", "3e-3", "--seq-len", "32", "--batch-size", "128",
                              "--mlm-probability", "0.3"],
}  # fmt: skip
PILOT_STEPS = 20
# Every run is scored on a seeded sample of the validation split of about this many tokens
# (1,024 sequences of 128 tokens, 4,096 of 32), so runs of every sequence length compare.
EVAL_TOKENS = 131_072
EVALUATIONS = 5


def options_for(name: str, out: Path, steps: int) -> argparse.Namespace:
    argv = [*BASELINE, *RUNS[name]]
    if "--nsp" in argv:  # the baseline is MLM only; this run adds NSP
        argv = [a for a in argv if a != "--no-nsp"]
    argv += ["--corpus", "offline-large", "--out", str(out / name), "--steps", str(steps)]
    argv += ["--eval-every", str(max(1, steps // EVALUATIONS)), "--log-every", "20"]
    argv += ["--save-every", str(steps), "--keep-checkpoints", "1"]
    argv += ["--eval-examples", str(EVAL_TOKENS // _seq_len(argv))]
    return pretrain.build_parser().parse_args([*argv, "--overwrite"])


def _seq_len(argv: list[str]) -> int:
    return int(argv[len(argv) - 1 - argv[::-1].index("--seq-len") + 1])


def command(options: argparse.Namespace) -> str:
    """The `python -m bertcourse pretrain` command line of these options."""
    parts = ["python -m bertcourse pretrain"]
    for flag, key in (("--size", "size"), ("--corpus", "corpus"), ("--vocab", "vocab"),
                      ("--seq-len", "seq_len"), ("--batch-size", "batch_size"), ("--lr", "lr"),
                      ("--mlm-probability", "mlm_probability"), ("--steps", "steps"),
                      ("--eval-every", "eval_every"), ("--eval-examples", "eval_examples"),
                      ("--log-every", "log_every")):  # fmt: skip
        parts.append(f"{flag} {getattr(options, key)}")
    parts.append("--no-nsp" if options.no_nsp else "--nsp")
    parts.append(f"--out runs/{Path(options.out).name}")
    return " ".join(parts)


def elapsed_at(log_history: list[dict], step: int) -> float | None:
    """Training seconds at `step`, from the last training log row at or before it."""
    rows = [row for row in log_history if "elapsed_s" in row and row["step"] <= step]
    return rows[-1]["elapsed_s"] if rows else None


def machine() -> dict:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "commit": commit,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training time of each run")
    parser.add_argument("--only", nargs="*", choices=list(RUNS), help="these runs only")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "sweep")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "bertcourse" / "reference" / "pretrain_sweep.json"
    )
    parser.add_argument(
        "--reevaluate",
        action="store_true",
        help="score the final checkpoints under --out again on today's evaluation sample "
        "(records made before the sample spanned the whole validation split)",
    )
    args = parser.parse_args()
    if args.reevaluate:
        return reevaluate(args)
    names = args.only or list(RUNS)
    here = machine()  # the code this invocation runs: the commit at its start
    train_corpus, validation_corpus = pretrain.corpus_splits("offline-large")
    tokenizers, examples = {}, {}
    # Runs of earlier invocations are kept; a run measured again replaces its old record.
    previous = json.loads(args.json.read_text()) if args.json.is_file() else {"runs": []}
    records = [
        {"machine": previous.get("machine"), "script": previous.get("script"), **r}
        for r in previous["runs"]
        if r["name"] in RUNS and r["name"] not in names
    ]
    for name in names:
        options = options_for(name, args.out, PILOT_STEPS)
        if options.vocab not in tokenizers:
            vocab_dir = args.out / f"vocab-{options.vocab.replace(':', '-')}"
            vocab_dir.mkdir(parents=True, exist_ok=True)
            tokenizers[options.vocab] = pretrain.load_pretraining_tokenizer(
                options.vocab, train_corpus.texts, vocab_dir
            )
        tokenizer = tokenizers[options.vocab]
        key = (options.vocab, options.seq_len, options.no_nsp)
        if key not in examples:
            examples[key] = pretrain.make_pretraining_examples(
                options, tokenizer, train_corpus, validation_corpus
            )
        train_examples, eval_examples = examples[key]
        options.eval_every = None  # the pilot only measures speed
        pilot = pretrain.run_pretraining(options, tokenizer, train_examples, [])
        steps = max(
            EVALUATIONS, round(args.minutes * 60 * pilot.examples_per_s / options.batch_size)
        )
        options = options_for(name, args.out, steps)
        started = time.perf_counter()
        load_before = os.getloadavg()[0]
        result = pretrain.run_pretraining(options, tokenizer, train_examples, eval_examples)
        evaluations = [
            {k: row[k] for k in ("step", "eval_mlm_accuracy", "eval_mlm_loss") if k in row}
            for row in result.log_history
            if "eval_mlm_accuracy" in row
        ]
        for row in evaluations:
            row["elapsed_s"] = elapsed_at(result.log_history, row["step"])
        records.append(
            {
                "name": name,
                "command": command(options),
                "steps": steps,
                "training_seconds": round(result.elapsed_s, 1),
                "wall_seconds": round(time.perf_counter() - started, 1),
                "tokens_per_s": round(result.tokens_per_s),
                "train_examples": len(train_examples),
                "eval_examples": len(eval_examples),
                "final": result.eval_metrics,
                "evaluations": evaluations,
                "load_average_before": round(load_before, 2),
                "machine": here,
                "script": "python scripts/pretrain_sweep.py " + " ".join(sys.argv[1:]),
            }
        )
        records.sort(key=lambda r: list(RUNS).index(r["name"]))
        print(f"{name}: {result.eval_metrics}", flush=True)
        payload = {
            "description": "Laptop pretraining sweep on the large offline corpus: held-out MLM "
            "accuracy (15% masking, validation documents) after about the same training time.",
            "minutes_per_run": args.minutes,
            "corpus": {
                "train": train_corpus.summary(),
                "validation": validation_corpus.summary(),
                "provenance": train_corpus.provenance,
            },  # fmt: skip
            "runs": records,
        }
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
    return 0


def reevaluate(args: argparse.Namespace) -> int:
    """Each recorded run's final checkpoint, scored again; adds "final_reevaluated"."""
    payload = json.loads(args.json.read_text())
    train_corpus, validation_corpus = pretrain.corpus_splits("offline-large")
    accelerator = Accelerator(cpu=True)
    for record in payload["runs"]:
        options = options_for(record["name"], args.out, record["steps"])
        vocab_dir = args.out / f"vocab-{options.vocab.replace(':', '-')}"
        tokenizer = pretrain.load_pretraining_tokenizer(
            options.vocab, train_corpus.texts, vocab_dir
        )
        _, eval_examples = pretrain.make_pretraining_examples(  # (training examples unused)
            options, tokenizer, validation_corpus, validation_corpus
        )
        config = BertConfig.from_name(
            options.size,
            vocab_size=len(tokenizer),
            max_position_embeddings=max(512, options.seq_len),
            pad_token_id=tokenizer.pad_token_id,
        )
        model = (BertForMaskedLM if options.no_nsp else BertForPreTraining)(config).eval()
        load_model_weights(model, latest_checkpoint(args.out / record["name"]))
        collator = PretrainingCollator(tokenizer, mlm_probability=pretrain.EVAL_MLM_PROBABILITY)
        loader = make_dataloader(eval_examples, collator, 64, 1, shuffle=False, drop_last=False)
        metrics = evaluate_pretraining(model, loader, accelerator)
        log = [json.loads(line) for line in (args.out / record["name"] / "log.jsonl").open()]
        for row in record["evaluations"]:
            row["elapsed_s"] = elapsed_at(log, row["step"])
        record["final_reevaluated"] = {**metrics, "eval_examples": len(eval_examples)}
        print(f"{record['name']}: {metrics['eval_mlm_accuracy']:.4f}", flush=True)
    payload["reevaluated_with"] = {
        "script": "python scripts/pretrain_sweep.py --reevaluate",
        "machine": machine(),
    }
    args.json.write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
