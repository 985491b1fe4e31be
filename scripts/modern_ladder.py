"""From BERT to ModernBERT, measured: chapter 14's ladder under one budget on a 2-core CPU.

    python scripts/modern_ladder.py                          # the whole ladder (~25 min)
    python scripts/modern_ladder.py --steps 40 --only 1 7 --seeds 0 --json /tmp/ladder.json

Each rung is `python -m bertcourse pretrain --arch modern --rung K` with the options below: a
tiny encoder (2 layers, 128 wide), the large offline corpus, one WordPiece vocabulary of 8,000
tokens for every rung, sequences of 128 tokens, batches of 64, the same number of optimizer
steps (so the same tokens), peak learning rate 3e-3 with 10% warm-up, no dropout (no run sees a
token twice). Rungs 1-2 train MLM + NSP at 15% masking, as BERT; from rung 3 on, MLM only at 30%.
The local layers see 64 tokens (32 on each side), so at 128 tokens they are really local.

For every rung: held-out MLM accuracy (15% masking, the same validation sequences for every rung)
at 128 tokens and at 256 (positions it never trained on), training tokens/s, and the validation
accuracy of a short fine-tune on the offline classification task (`offline_classification`,
5 labels; 200 steps of 32; three learning rates, two fine-tuning seeds each, the best rate's
mean). `--redo-downstream` repeats only the fine-tunes, from the runs' final checkpoints. Rungs 1 and 7 (BERT and ModernBERT)
are trained with two seeds. Also measured: the first steps of rungs 1 and 2 without warm-up,
attention's cost against sequence length for a global and a local layer (512 to 8,192 tokens),
and a training step on a length-skewed padded batch with and without unpadding.
Results go to bertcourse/reference/modern_ladder_cpu.json with the commit, the machine, the load
and the command. Time it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from bertcourse import BertTokenizer
from bertcourse.commands import pretrain
from bertcourse.data import PretrainingCollator, offline_classification
from bertcourse.modern import (
    LADDER,
    ModernBertForMaskedLM,
    ladder_config,
    local_attention,
    sliding_window_mask,
)
from bertcourse.training import TrainingArguments, evaluate_pretraining, make_dataloader, train

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from downstream_comparison import finetune  # noqa: E402  (the same fine-tuning as chapter 9's)
from pretrain_sweep import machine  # noqa: E402  (the same record of the machine)

SETUP = ["--size", "tiny", "--corpus", "offline-large", "--vocab", "train:8000", "--seq-len", "128",
         "--batch-size", "64", "--lr", "3e-3", "--local-attention", "64"]  # fmt: skip
FINETUNE_LRS = (3e-4, 1e-3, 3e-3)
FINETUNE_SEEDS = (0, 1)
DOWNSTREAM_SETUP = (
    "offline_classification (5 labels, 2,431 training and 300 validation sentences): 200 steps "
    "of 32, max length 64, AdamW with 10% warm-up; each learning rate of "
    f"{list(FINETUNE_LRS)} with fine-tuning seeds {list(FINETUNE_SEEDS)}; the learning rate "
    "with the best mean accuracy, and that mean"
)
EVAL_EXAMPLES = 1024
LONG = 256  # the extrapolation test: twice the trained length
COST_LENGTHS = (512, 1024, 2048, 4096, 8192)
# The warm-up experiment at depth (--warmup-at-depth): 12 layers, post-LN against pre-LN.
DEEP = {"steps": 400, "batch_size": 32, "seq_len": 64, "lr": 1e-3}


def rung_argv(rung: int, out: Path, steps: int, seed: int, warmup: float = 0.1) -> list[str]:
    training = {}
    for step in LADDER[:rung]:
        training.update(step.training)
    argv = [*SETUP, "--arch", "modern", "--rung", str(rung), "--steps", str(steps)]
    argv += ["--nsp" if training.get("nsp") else "--no-nsp"]
    argv += ["--mlm-probability", str(training.get("mlm_probability", 0.15))]
    argv += ["--seed", str(seed), "--warmup-ratio", str(warmup), "--out", str(out)]
    argv += ["--eval-every", str(max(1, steps // 5)), "--log-every", str(max(1, steps // 40))]
    argv += ["--save-every", str(steps), "--keep-checkpoints", "1", "--eval-examples",
             str(EVAL_EXAMPLES), "--overwrite"]  # fmt: skip
    return argv


def command(argv: list[str]) -> str:
    shown = [a if not a.startswith("/") else "runs/ladder/" + Path(a).name for a in argv]
    return "python -m bertcourse pretrain " + " ".join(shown)


def mlm_accuracy(model, examples, tokenizer) -> dict:
    collator = PretrainingCollator(tokenizer, mlm_probability=pretrain.EVAL_MLM_PROBABILITY)
    loader = make_dataloader(examples, collator, 64, 1, shuffle=False, drop_last=False)
    metrics = evaluate_pretraining(model, loader, Accelerator(cpu=True))
    return {k: round(v, 4) for k, v in metrics.items() if k.startswith("eval_mlm")}


def downstream(model, tokenizer) -> dict:
    """Fine-tune the pretrained encoder on the offline task, each learning rate of FINETUNE_LRS
    with each seed of FINETUNE_SEEDS; the learning rate with the best mean is reported."""
    task = offline_classification("train"), offline_classification("validation")
    with tempfile.TemporaryDirectory() as folder:
        plain = ModernBertForMaskedLM(model.config)
        plain.load_state_dict(
            {k: v for k, v in model.state_dict().items() if k in plain.state_dict()}
        )
        plain.save_pretrained(folder)
        tokenizer.save_vocabulary(folder)
        runs = [
            {"lr": lr, "seed": seed, "accuracy": finetune(folder, lr, task, Namespace(
                steps=200, batch_size=32, max_length=64, seed=seed))["final_accuracy"]}
            for lr in FINETUNE_LRS
            for seed in FINETUNE_SEEDS
        ]  # fmt: skip
    means = {
        lr: sum(r["accuracy"] for r in runs if r["lr"] == lr) / len(FINETUNE_SEEDS)
        for lr in FINETUNE_LRS
    }
    best = max(means, key=means.get)
    return {"accuracy": round(means[best], 4), "lr": best, "runs": runs}


def warmup_at_depth(args: argparse.Namespace) -> int:
    """Post-LN and pre-LN at 12 layers, each with and without warm-up: the same MLM data (30%
    masking, no NSP) and schedule (DEEP). Added to --json."""
    payload = json.loads(args.json.read_text())
    train_corpus, validation_corpus = pretrain.corpus_splits("offline-large")
    tokenizer = BertTokenizer(args.out / "vocab" / "vocab.txt")
    options = Namespace(no_nsp=True, seq_len=DEEP["seq_len"], seed=0, eval_examples=EVAL_EXAMPLES)
    train_examples, eval_examples = pretrain.make_pretraining_examples(
        options, tokenizer, train_corpus, validation_corpus
    )
    layers = 12
    DEEP["lr"] = args.deep_lr
    previous = payload.get("no_warmup_deep", {}).get("runs", [])
    runs = [run for run in previous if run["lr"] != args.deep_lr]  # other rates are kept
    for rung, position in ((1, "post"), (2, "pre")):
        for warmup in (0.0, 0.1):
            torch.manual_seed(0)
            config = ladder_config(
                rung, "tiny", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                num_hidden_layers=layers, layer_types=["full_attention"] * layers,
            )  # fmt: skip
            with tempfile.TemporaryDirectory() as out:
                arguments = TrainingArguments(
                    output_dir=Path(out), max_steps=DEEP["steps"],
                    per_device_batch_size=DEEP["batch_size"], learning_rate=DEEP["lr"],
                    warmup_ratio=warmup, weight_decay=0.01, eval_every=DEEP["steps"] // 4,
                    save_every=DEEP["steps"], log_every=10,
                    show_progress=False, seed=0,
                )  # fmt: skip
                result = train(
                    ModernBertForMaskedLM(config),
                    train_examples,
                    PretrainingCollator(tokenizer, mlm_probability=0.3),
                    arguments,
                    eval_dataset=eval_examples,
                    evaluate_fn=evaluate_pretraining,
                    eval_collate_fn=PretrainingCollator(
                        tokenizer, mlm_probability=pretrain.EVAL_MLM_PROBABILITY
                    ),
                    forward_kwargs={"masked_only": True},
                )
            runs.append({
                "norm_position": position, "layers": layers, "warmup_ratio": warmup, **DEEP,
                "evaluations": [{k: round(row[k], 4) if isinstance(row[k], float) else row[k]
                                 for k in ("step", "eval_mlm_accuracy", "eval_mlm_loss")}
                                for row in result.log_history if "eval_mlm_accuracy" in row],
                "train_loss": [[row["step"], round(row["loss"], 4)]
                               for row in result.log_history
                               if "loss" in row and "eval_mlm_accuracy" not in row],
                "final": {k: round(v, 4) for k, v in result.eval_metrics.items()},
                "training_seconds": round(result.elapsed_s, 1),
            })  # fmt: skip
            print(f"{position}-LN, {layers} layers, warm-up {warmup}: {result.eval_metrics}")
    payload["no_warmup_deep"] = {
        "script": "python scripts/modern_ladder.py --warmup-at-depth --deep-lr LR, for each LR",
        "machine": machine(),
        "setup": f"{layers} layers of the tiny width (128), MLM only at 30%, batch "
        f"{DEEP['batch_size']} x {DEEP['seq_len']} tokens, {DEEP['steps']} steps, linear decay",
        "runs": runs,
    }
    args.json.write_text(json.dumps(payload, indent=1) + "\n")
    return 0


def random_baselines(args: argparse.Namespace) -> int:
    """The downstream fine-tune of rungs 1 and 7 from random weights (no pretraining at all),
    with the same grid: what the pretraining of each is worth. Added to --json."""
    payload = json.loads(args.json.read_text())
    tokenizer = BertTokenizer(args.out / "vocab" / "vocab.txt")
    results = {}
    for rung in (1, len(LADDER)):
        torch.manual_seed(0)
        config = ladder_config(
            rung, "tiny", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
            local_attention=64,
        )  # fmt: skip
        results[str(rung)] = downstream(ModernBertForMaskedLM(config), tokenizer)
        print(f"rung {rung}, random weights: {results[str(rung)]}", flush=True)
    payload["random_init_downstream"] = {
        "script": "python scripts/modern_ladder.py --random-baselines",
        "machine": machine(),
        "runs": results,
    }
    args.json.write_text(json.dumps(payload, indent=1) + "\n")
    return 0


def redo_downstream(args: argparse.Namespace) -> int:
    """The downstream column again, from the runs' final checkpoints under --out."""
    payload = json.loads(args.json.read_text())
    tokenizer = BertTokenizer(args.out / "vocab" / "vocab.txt")
    for record in payload["runs"]:
        folder = args.out / f"rung{record['rung']}-seed{record['seed']}"
        model = ModernBertForMaskedLM.from_hf(folder / f"checkpoint-{record['steps']}")
        record["downstream"] = downstream(model, tokenizer)
        print(f"rung {record['rung']} seed {record['seed']}: {record['downstream']}", flush=True)
    payload["downstream_redone_with"] = {
        "script": "python scripts/modern_ladder.py --redo-downstream",
        "machine": machine(),
    }
    payload["downstream_setup"] = DOWNSTREAM_SETUP
    args.json.write_text(json.dumps(payload, indent=1) + "\n")
    return 0


def best_of(repeats: int, fn, *args) -> float:
    """The fastest of `repeats` calls, after one call to warm up."""
    fn(*args)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - started)
    return best


def masked_attention(q, k, v, band) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=band)


def attention_cost(repeats: int = 3) -> list[dict]:
    """Seconds of one attention layer's core (2 heads of 64) at each length: a global layer, a
    local one (window 128) with a (T, T) mask, and the same local layer computed block by block."""
    rows = []
    for length in COST_LENGTHS:
        q, k, v = (torch.randn(1, 2, length, 64) for _ in range(3))
        band = sliding_window_mask(length, 128)
        timings = {
            "global": best_of(repeats, F.scaled_dot_product_attention, q, k, v),
            "local_masked": best_of(repeats, masked_attention, q, k, v, band),
            "local_blockwise": best_of(repeats, local_attention, q, k, v, 64),
        }  # fmt: skip
        rows.append({"length": length, **{name: round(t, 5) for name, t in timings.items()}})
        print(f"attention at {length}: {rows[-1]}", flush=True)
    return rows


def training_step(model, optimizer, ids, mask, labels) -> None:
    model(ids, mask, labels=labels, masked_only=True).loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def unpadding_speed(tokenizer_size: int, repeats: int = 5) -> dict:
    """A training step on a length-skewed padded batch, rung 6 (padded) vs rung 7 (unpadded)."""
    rng = random.Random(0)
    lengths = [min(512, max(8, int(rng.lognormvariate(4.3, 0.8)))) for _ in range(32)]
    longest = max(lengths)
    ids = torch.randint(5, tokenizer_size, (32, longest))
    mask = (torch.arange(longest)[None] < torch.tensor(lengths)[:, None]).long()
    labels = torch.full_like(ids, -100)
    chosen = (torch.rand(ids.shape) < 0.3) & mask.bool()
    labels[chosen] = ids[chosen]
    result = {"lengths": lengths, "padding_fraction": round(1 - sum(lengths) / (32 * longest), 4)}
    for rung in (6, 7):
        torch.manual_seed(0)
        config = ladder_config(
            rung, "tiny", vocab_size=tokenizer_size, pad_token_id=0, local_attention=64
        )
        model = ModernBertForMaskedLM(config).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        best = best_of(repeats, training_step, model, optimizer, ids, mask, labels)
        result[f"rung{rung}_step_s"] = round(best, 4)
        result[f"rung{rung}_real_tokens_per_s"] = round(sum(lengths) / best)
    result["speedup"] = round(result["rung6_step_s"] / result["rung7_step_s"], 2)
    print(
        f"unpadding: {result['speedup']}x at {result['padding_fraction']:.0%} padding", flush=True
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--only", nargs="*", type=int, help="these rungs only (1-7)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1],
                        help="seeds of rungs 1 and 7 (the others use the first)")  # fmt: skip
    parser.add_argument("--warmup-steps", type=int, default=150,
                        help="steps of the runs without warm-up (0: skip them)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ladder")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "bertcourse" / "reference" / "modern_ladder_cpu.json"
    )
    parser.add_argument(
        "--redo-downstream",
        action="store_true",
        help="only the fine-tunes again, from the final checkpoints of the runs in --json",
    )
    parser.add_argument(
        "--warmup-at-depth",
        action="store_true",
        help="only the warm-up experiment at 12 layers (post-LN and pre-LN), added to --json",
    )
    parser.add_argument(
        "--random-baselines",
        action="store_true",
        help="only the fine-tunes of rungs 1 and 7 from random weights, added to --json",
    )
    parser.add_argument("--deep-lr", type=float, default=1e-3, help="with --warmup-at-depth")
    args = parser.parse_args()
    if args.random_baselines:
        return random_baselines(args)
    if args.warmup_at_depth:
        return warmup_at_depth(args)
    if args.redo_downstream:
        return redo_downstream(args)
    torch.set_num_threads(os.cpu_count() or 1)
    started_all = time.perf_counter()
    here = {**machine(), "load_average_before": round(os.getloadavg()[0], 2)}
    train_corpus, validation_corpus = pretrain.corpus_splits("offline-large")
    vocab_dir = args.out / "vocab"
    vocab_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = pretrain.load_pretraining_tokenizer("train:8000", train_corpus.texts, vocab_dir)
    examples: dict[tuple, tuple] = {}

    def examples_for(options) -> tuple:
        key = (options.no_nsp, options.seq_len)
        if key not in examples:
            examples[key] = pretrain.make_pretraining_examples(
                options, tokenizer, train_corpus, validation_corpus
            )
        return examples[key]

    mlm_options = argparse.Namespace(no_nsp=True, seq_len=128, seed=0, eval_examples=EVAL_EXAMPLES)
    _, eval_128 = examples_for(mlm_options)
    long_options = argparse.Namespace(no_nsp=True, seq_len=LONG, seed=0, eval_examples=512)
    _, eval_long = pretrain.make_pretraining_examples(
        long_options, tokenizer, validation_corpus, validation_corpus
    )
    rungs = args.only or list(range(1, len(LADDER) + 1))
    records = []
    for rung in rungs:
        for seed in args.seeds if rung in (1, len(LADDER)) else args.seeds[:1]:
            argv = rung_argv(rung, args.out / f"rung{rung}-seed{seed}", args.steps, seed)
            options = pretrain.build_parser().parse_args(argv)
            train_examples, _ = examples_for(options)
            load = os.getloadavg()[0]
            result = pretrain.run_pretraining(options, tokenizer, train_examples, eval_128)
            model = result.model.eval()
            record = {
                "rung": rung,
                "name": LADDER[rung - 1].name,
                "label": LADDER[rung - 1].label,
                "seed": seed,
                "describe": model.config.describe(),
                "parameters": model.model.num_parameters(),
                "command": command(argv),
                "steps": args.steps,
                "tokens_per_s": round(result.tokens_per_s),
                "training_seconds": round(result.elapsed_s, 1),
                "mlm_128": mlm_accuracy(model, eval_128, tokenizer),
                f"mlm_{LONG}": mlm_accuracy(model, eval_long, tokenizer),
                "evaluations": [
                    {
                        k: round(row[k], 4) if isinstance(row[k], float) else row[k]
                        for k in ("step", "eval_mlm_accuracy", "eval_mlm_loss")
                    }
                    for row in result.log_history
                    if "eval_mlm_accuracy" in row
                ],  # fmt: skip
                "train_loss": [
                    [row["step"], round(row["loss"], 4)]
                    for row in result.log_history
                    if "loss" in row and "eval_mlm_accuracy" not in row
                ],
                "downstream": downstream(model, tokenizer),
                "load_average_before": round(load, 2),
            }
            records.append(record)
            print(
                f"rung {rung} seed {seed}: MLM {record['mlm_128']['eval_mlm_accuracy']:.4f} "
                f"(at {LONG}: {record[f'mlm_{LONG}']['eval_mlm_accuracy']:.4f}), "
                f"downstream {record['downstream']['accuracy']:.4f}, "
                f"{record['tokens_per_s']:,} tokens/s",
                flush=True,
            )
            write(args, here, records, None, None, None, started_all)
    no_warmup = []
    if args.warmup_steps:
        for rung in (1, 2):
            argv = rung_argv(rung, args.out / f"rung{rung}-no-warmup", args.warmup_steps, 0, 0.0)
            argv[argv.index("--log-every") + 1] = "5"
            options = pretrain.build_parser().parse_args(argv)
            for warmup in (0.0, 0.1):
                options.warmup_ratio = warmup
                result = pretrain.run_pretraining(
                    options, tokenizer, examples_for(options)[0], eval_128
                )
                no_warmup.append({
                    "rung": rung, "warmup_ratio": warmup, "steps": args.warmup_steps,
                    "command": command(argv).replace("--warmup-ratio 0.0", f"--warmup-ratio {warmup}"),
                    "train_loss": [[row["step"], round(row["loss"], 4)]
                                   for row in result.log_history
                                   if "loss" in row and "eval_mlm_accuracy" not in row],
                    "final": {k: round(v, 4) for k, v in result.eval_metrics.items()},
                })  # fmt: skip
                print(f"rung {rung} warm-up {warmup}: {result.eval_metrics}", flush=True)
    cost = attention_cost()
    unpad = unpadding_speed(len(tokenizer))
    write(args, here, records, no_warmup, cost, unpad, started_all)
    return 0


def write(args, here, records, no_warmup, cost, unpad, started_all) -> None:
    payload = {
        "description": "Chapter 14's ladder from BERT to ModernBERT: a tiny encoder, the same "
        "optimizer steps for every rung on the large offline corpus, held-out MLM accuracy at "
        "15% masking, and the validation accuracy of a 200-step fine-tune on the offline "
        "classification task.",
        "script": "python scripts/modern_ladder.py " + " ".join(sys.argv[1:]),
        "machine": here,
        "wall_seconds": round(time.perf_counter() - started_all, 1),
        "setup": " ".join(SETUP),
        "chance_downstream": 0.2,
        "downstream_setup": DOWNSTREAM_SETUP,
        "runs": records,
        "no_warmup": no_warmup,
        "attention_cost": cost,
        "unpadding": unpad,
    }
    args.json.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
