"""Ship a pretraining run as the course checkpoint: bertcourse/checkpoints/<name>/ with its card.

    make course-checkpoint     # the pretraining run (about 25 minutes on 2 cores), then this
    python scripts/package_course_checkpoint.py runs/course-tiny --command "python -m ..."

Copies the run's exported final/ folder (config.json, model.safetensors, vocab.txt,
tokenizer_config.json), scores the copy again on the held-out split (the test suite does the
same and compares with the card), and writes card.json: the command, the commit it ran from, the
machine, the wall time, the speed and the held-out masked-LM accuracy at every evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import torch

from bertcourse.commands import pretrain

ROOT = Path(__file__).resolve().parent.parent
FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the pretrain --out folder")
    parser.add_argument("--name", default="course-tiny")
    parser.add_argument("--command", required=True, help="the pretrain command that made the run")
    parser.add_argument("--commit", help="the commit the run started from (default: HEAD)")
    parser.add_argument("--load", default="", help="what else the machine ran meanwhile")
    options = parser.parse_args()
    setup = json.loads((options.run / "pretrain_setup.json").read_text())
    log = [json.loads(line) for line in (options.run / "log.jsonl").read_text().splitlines()]
    evaluations = [row for row in log if "eval_mlm_accuracy" in row]
    trained = [row for row in log if "elapsed_s" in row and "loss" in row]
    destination = ROOT / "bertcourse" / "checkpoints" / options.name
    destination.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy2(options.run / "final" / name, destination / name)
    held_out = pretrain.evaluate_checkpoint(
        destination, setup["corpus"], setup["seq_len"], setup["eval_examples"], setup["seed"]
    )
    final = evaluations[-1]["eval_mlm_accuracy"]
    if abs(held_out["eval_mlm_accuracy"] - final) > 1e-6:
        raise SystemExit(f"re-scored {held_out['eval_mlm_accuracy']:.6f}, the run said {final:.6f}")
    commit = (
        options.commit
        or subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True, capture_output=True
        ).stdout.strip()
    )
    card = {
        "name": options.name,
        "command": options.command,
        "commit": commit,
        "setup": setup,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, Python {platform.python_version()}",
        "load": options.load,
        "training_seconds": round(trained[-1]["elapsed_s"], 1) if trained else None,
        "steps": log[-1].get("step"),
        "held_out": {
            "split": f"{setup['corpus']}/validation",
            "sequences": held_out["eval_examples"],
            "sequence_length": setup["seq_len"],
            "masking": "15% of the tokens (80% [MASK], 10% random, 10% kept), masking seed "
            f"{setup['seed'] + 1}",
            "mlm_accuracy": round(held_out["eval_mlm_accuracy"], 6),
            "mlm_loss": round(held_out["eval_mlm_loss"], 6),
        },
        "evaluations": [
            {
                "step": row["step"],
                "mlm_accuracy": round(row["eval_mlm_accuracy"], 4),
                "mlm_loss": round(row["eval_mlm_loss"], 4),
            }
            for row in evaluations
        ],  # fmt: skip
        "size_bytes": sum((destination / name).stat().st_size for name in FILES),
    }
    (destination / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    print(
        json.dumps({k: card[k] for k in ("held_out", "training_seconds", "size_bytes")}, indent=1)
    )


if __name__ == "__main__":
    main()
