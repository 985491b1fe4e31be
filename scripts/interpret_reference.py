"""Chapter 15's reference results: the chapter itself, run with the `cpu` profile.

    python scripts/interpret_reference.py          # ~6 minutes on 2 cores

Executes notebooks/15_looking_inside.ipynb with BERTCOURSE_PROFILE=cpu (MiniLM; 1,000 sentences
for the head statistics, 300 fine-tuning steps, 160 explained sentences, 1,000 + 500 sentences for
the probes) and records what its cells computed: the head patterns, the classifier's accuracy,
the rank correlations with integrated gradients, the permutation and masking table and the probe
table. Results go to bertcourse/reference/interpret_cpu_reference.json with the commit, the
machine and the wall time; the chapter prints them beside its own `ci` run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from chapter_reference import provenance, run_chapter  # noqa: E402

NOTEBOOK = ROOT / "notebooks" / "15_looking_inside.ipynb"
OUT = ROOT / "bertcourse" / "reference" / "interpret_cpu_reference.json"
# Evaluated in the notebook's kernel after its last cell: what the record keeps.
RESULTS = r"""
{
    "profile": profile.name,
    "run": {k: (list(v) if isinstance(v, tuple) else v) for k, v in RUN.items()},
    "model": MODEL,
    "heads": {
        "sentences": RUN["head_sentences"],
        "summary": stats.summary(),
        "patterns": stats.patterns(),
        "max_to_previous": float(stats.to_previous.max()),
        "max_to_sep": float(stats.to_sep.max()),
        "max_to_cls": float(stats.to_cls.max()),
    },
    "rollout_share_from_cls": from_cls,
    "classifier_accuracy": result.eval_metrics["eval_accuracy"],
    "rho_with_ig": {
        name: {"median": medians[name], "values": values} for name, values in rhos.items()
    },
    "changes": {name: list(map(float, values)) for name, values in results.items()},
    "probes": probes.reset_index().to_dict(orient="records"),
}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", choices=("ci", "cpu", "gpu"))
    parser.add_argument("--json", type=Path, default=OUT)
    options = parser.parse_args(argv)
    started = time.perf_counter()
    results = run_chapter(NOTEBOOK, RESULTS, options.profile)
    command = f"python scripts/interpret_reference.py --profile {options.profile}"
    results.update(provenance(__doc__, command, started))
    options.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {options.json} in {results['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
