"""Chapter 18's reference results: the chapter itself, run with the `cpu` profile on SST-2.

    python scripts/compression_reference.py            # ~10 minutes on 2 idle cores
    python scripts/compression_reference.py --smoke    # a few minutes: checks the pipeline only

Executes notebooks/18_smaller_models.ipynb with BERTCOURSE_PROFILE=cpu: MiniLM fine-tuned on
SST-2's training phrases (../shared/data/sst2/train.tsv next to the repository, else the hub),
1,000 whole review sentences held out by `LabelledData.sentence_split`, 800 teacher steps; a
3-layer student distilled for 500 steps, and the same student on the labels alone; int8 teacher
and student; a third of the heads pruned, with the curve of accuracy against heads removed; the
ONNX teacher; latencies at batch 1 and 32 on the CPU. It records what the chapter's cells
computed: the table, the distillation comparison, the int8 sizes and logit differences, head
importance and the pruning curves, the ONNX check. Results go to
bertcourse/reference/compression_cpu_reference.json with the commit, the machine, the load and
the wall time; the chapter prints them beside its own `ci` run. Time it on an otherwise idle
machine: the latencies are part of the record.

--smoke shortens every run (100 steps each, two pruning fractions, a few timed calls) and writes to
--json (default: a file in the temporary folder), never to the committed reference.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from chapter_reference import provenance, run_chapter  # noqa: E402

NOTEBOOK = ROOT / "notebooks" / "18_smaller_models.ipynb"
OUT = ROOT / "bertcourse" / "reference" / "compression_cpu_reference.json"
SMOKE_OUT = Path(tempfile.gettempdir()) / "compression_smoke_reference.json"
FAILED = Path(tempfile.gettempdir()) / "compression_reference_failed.ipynb"
# Inserted after the cell that picks RUN, with --smoke: every run as short as it can be.
SMOKE = """
RUN.update(
    steps=100,
    student_steps=100,
    importance_batches=2,
    fractions=(0.0, 0.4),
    random_orders=1,
    repeats=(3, 2),
)
print(f"smoke test, not a reference: {RUN}")
"""
# Evaluated in the notebook's kernel after its last cell: what the record keeps.
RESULTS = r"""
{
    "profile": profile.name,
    "run": {k: (list(v) if isinstance(v, tuple) else v) for k, v in RUN.items()},
    "task": TASK,
    "data": {
        "train_texts": len(train_data),
        "validation_texts": len(valid_data),
        "classes": list(label_names),
        "majority_class": chance,
    },
    "threads": THREADS,
    "load_average_while_timing": timing_load,
    "table": table.reset_index().to_dict(orient="records"),
    "accuracy": accuracy,
    "distillation": {
        "student_layers": chosen_layers,
        "student_before_training": student_start_accuracy,
        "agreement_with_teacher": {
            name: agreement(logits[name], logits["teacher"])
            for name in ("student", "hard-label student")
        },
        "soft_minus_hard": soft_gain,
        "standard_error": standard_error,
    },
    "int8": {
        "linear_weight_bytes": [bytes_before, bytes_after],
        "state_dict_bytes": [disk_before, disk_after],
        "largest_logit_difference": int8_largest,
        "quantize_dynamic_largest_logit_difference": float(torch_largest),
    },
    "pruning": {
        "importance": importance.tolist(),
        "pruned_heads": {str(k): v for k, v in pruned_heads.items()},
        "by_importance": by_importance,
        "at_random": at_random.tolist(),
    },
    "onnx": {"largest_difference": float(onnx_largest), "bytes": onnx_bytes},
}
"""


def insert_smoke(notebook: nbformat.NotebookNode) -> None:
    """Put the SMOKE cell right after the cell that picks RUN."""
    picks = next(i for i, cell in enumerate(notebook.cells) if "RUN = RUNS[" in cell.source)
    notebook.cells.insert(picks + 1, nbformat.v4.new_code_cell(SMOKE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", choices=("ci", "cpu", "gpu"))
    parser.add_argument("--json", type=Path, help=f"default {OUT} ({SMOKE_OUT} with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="a short run: checks, records nothing")
    options = parser.parse_args(argv)
    path = options.json or (SMOKE_OUT if options.smoke else OUT)
    if options.smoke and path.resolve() == OUT.resolve():
        raise SystemExit(f"--smoke never writes the committed reference {OUT}: pick --json.")
    started = time.perf_counter()
    results = run_chapter(
        NOTEBOOK,
        RESULTS,
        options.profile,
        prepare=insert_smoke if options.smoke else None,
        failed=FAILED,
    )
    flags = " --smoke" if options.smoke else ""
    command = f"python scripts/compression_reference.py --profile {options.profile}{flags}"
    results.update(provenance(__doc__, command, started), smoke=options.smoke)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {path} in {results['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
