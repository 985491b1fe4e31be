"""Does the course's own pretraining help downstream? Random weights vs course-tiny vs MiniLM.

    python scripts/downstream_comparison.py                 # every task and model (~25 min)
    python scripts/downstream_comparison.py --tasks offline --json /tmp/quick.json

Each model is fine-tuned with the same budget (--steps optimizer steps of --batch-size
examples, BERT's recipe: AdamW, 10% warmup, linear decay) on three tasks:

- offline: which package of the standard library a documentation sentence comes from
  (`offline_classification`, 5 labels, the course's default task);
- sst2: SST-2's movie-review phrases, positive or negative, from ../shared/data/sst2/train.tsv (the
  GLUE training file), split by `LabelledData.sentence_split`: 1,000 whole review sentences held
  out, and no phrase that is part of one of them trained on (a random split of the file would
  score the model on phrases it trained on as parts of longer ones);
- topics: the subject of a documentation sentence from packages the pretraining corpus left out
  (`offline_topic_classification`, 5 labels).

Models: "random:course-tiny" (the course checkpoint's architecture and vocabulary with random
weights: its twin without pretraining), "course-tiny" (the course's checkpoint) and "minilm". A
model's learning rate is the best of its grid on the validation split (the tiny models, random or
pretrained, get the same grid, 1e-4 to 1e-2; MiniLM 3e-5 to 3e-4, around the top of BERT's
fine-tuning range), so random weights are not a strawman held to a fine-tuning learning rate.
Results go to bertcourse/reference/downstream_comparison.json with the commit, the machine and the command.
Time it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bertcourse import BertForSequenceClassification
from bertcourse.data import (
    LabelledData,
    load_classification,
    offline_classification,
    offline_topic_classification,
)
from bertcourse.finetune import (
    PaddingCollator,
    encode_classification,
    evaluate_classification,
    load_for_task,
)
from bertcourse.training import TrainingArguments, train

ROOT = Path(__file__).resolve().parent.parent
SST2 = ROOT.parent / "shared" / "data" / "sst2" / "train.tsv"
MODELS = {"random": "random:course-tiny", "course": "course-tiny", "minilm": "minilm"}
# The tiny models (random or pretrained) get the same grid, wide enough that neither model's best
# rate sits at its edge; MiniLM, ~15x dearer per step on a CPU, a shorter grid around the top of
# BERT's fine-tuning range.
LEARNING_RATES = {"random": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2), "course": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
                  "minilm": (3e-5, 1e-4, 3e-4)}  # fmt: skip
SST2_VALIDATION = 1_000


def load_task(name: str, seed: int = 0) -> tuple[LabelledData, LabelledData]:
    """(train, validation) of a task."""
    if name == "offline":
        return offline_classification("train"), offline_classification("validation")
    if name == "topics":
        return offline_topic_classification("train"), offline_topic_classification("validation")
    if name == "sst2":
        if not SST2.is_file():
            raise FileNotFoundError(f"SST-2 is read from {SST2}, which is missing.")
        data = load_classification(SST2, "sentence", "label")
        data.label_names = ["negative", "positive"]
        data.name = "sst2"
        return data.sentence_split(SST2_VALIDATION, seed=seed)
    raise ValueError(f"Unknown task {name!r}: offline, sst2 or topics.")


def random_split_leak(seed: int = 0) -> dict:
    """Why SST-2 is split by sentence: how many phrases of a random split sit inside training ones."""
    data = load_classification(SST2, "sentence", "label")
    train, validation = data.split(SST2_VALIDATION / len(data.texts), seed=seed)
    training_text = "\n".join(f" {' '.join(text.split())} " for text in train.texts)
    inside = sum(f" {' '.join(text.split())} " in training_text for text in validation.texts)
    return {"validation_phrases": len(validation.texts), "inside_a_training_phrase": inside,
            "share": round(inside / len(validation.texts), 4), "seed": seed}  # fmt: skip


def finetune(
    init: str, lr: float, task: tuple[LabelledData, LabelledData], options: argparse.Namespace
) -> dict:
    """Fine-tune `init` on the task; the validation accuracy after every evaluation."""
    train_data, eval_data = task
    model, tokenizer = load_for_task(
        BertForSequenceClassification, init, seed=options.seed,
        num_labels=len(train_data.label_names), id2label=train_data.id2label,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=Path(out), max_steps=options.steps, per_device_batch_size=options.batch_size,
            learning_rate=lr, warmup_ratio=0.1, eval_every=max(1, options.steps // 2),
            save_every=options.steps, log_every=max(1, options.steps // 2), group_by_length=True,
            show_progress=False, seed=options.seed,
        )  # fmt: skip
        result = train(
            model, encode_classification(train_data, tokenizer, options.max_length),
            PaddingCollator(tokenizer.pad_token_id), args,
            eval_dataset=encode_classification(eval_data, tokenizer, options.max_length),
            evaluate_fn=evaluate_classification,
        )  # fmt: skip
    rows = [row for row in result.log_history if "eval_accuracy" in row]
    return {
        "lr": lr,
        "steps": [row["step"] for row in rows],
        "eval_accuracy": [round(row["eval_accuracy"], 4) for row in rows],
        "final_accuracy": round(rows[-1]["eval_accuracy"], 4),
        "seconds": round(result.elapsed_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["offline", "sst2", "topics"])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--json", default=str(ROOT / "bertcourse" / "reference" / "downstream_comparison.json")
    )
    options = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True).stdout.strip()  # fmt: skip
    path = Path(options.json)
    record = json.loads(path.read_text()) if path.is_file() else {"results": {}}
    record.update({
        "description": "Validation accuracy after fine-tuning with the same budget; each model's "
                       "learning rate is the best of its grid on the validation split.",
        "budget": {"steps": options.steps, "batch_size": options.batch_size,
                   "max_length": options.max_length, "warmup_ratio": 0.1, "seed": options.seed},
        "models": MODELS, "learning_rates": LEARNING_RATES,
    })  # fmt: skip
    if "sst2" in options.tasks:
        record["sst2_random_split_leak"] = random_split_leak(options.seed)
    for task_name in options.tasks:
        task = load_task(task_name, options.seed)
        for model_name in options.models:
            started = time.perf_counter()
            runs = [finetune(MODELS[model_name], lr, task, options)
                    for lr in LEARNING_RATES[model_name]]  # fmt: skip
            best = max(runs, key=lambda run: run["final_accuracy"])
            record["results"].setdefault(task_name, {})[model_name] = {
                "accuracy": best["final_accuracy"], "best": best, "runs": runs,
                "train_examples": len(task[0].texts), "validation_examples": len(task[1].texts),
                "chance": max(task[1].class_counts().values()) / len(task[1].texts),
                "commit": commit, "wall_seconds": round(time.perf_counter() - started, 1),
                "load_average_before": round(os.getloadavg()[0], 2),
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} "
                           f"cores, torch {torch.__version__}, Python {platform.python_version()}",
                "command": "python " + " ".join(["scripts/downstream_comparison.py", *sys.argv[1:]]),
            }  # fmt: skip
            print(f"{task_name:8} {model_name:7} {best['final_accuracy']:.1%} "
                  f"(lr {best['lr']:g}; {[r['final_accuracy'] for r in runs]})", flush=True)  # fmt: skip
            path.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
