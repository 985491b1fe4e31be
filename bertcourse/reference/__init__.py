"""The course's committed reference results: runs too long for a page, measured once.

Each JSON record names the command that made it, the commit, the hardware and the wall time;
the CSV files are the training logs of those runs. They ship with the package, so a notebook
that plots them runs from any folder (Colab, a wheel) with only `pip install` of the package.
Written by the scripts in `scripts/` (`downstream_comparison.py`, `pretrain_sweep.py`, ...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["REFERENCE_DIR", "reference_path", "load_reference"]

REFERENCE_DIR = Path(__file__).resolve().parent


def reference_path(name: str) -> Path:
    """The path of one committed reference file, e.g. 'pretrain_cpu_tiny_log.csv'."""
    path = REFERENCE_DIR / name
    if not path.is_file():
        known = ", ".join(sorted(p.name for p in REFERENCE_DIR.iterdir() if p.suffix != ".py"))
        raise FileNotFoundError(
            f"No reference file {name!r} in {REFERENCE_DIR}; there are: {known}."
        )
    return path


def load_reference(name: str) -> dict[str, Any]:
    """One committed JSON record, e.g. load_reference('downstream_comparison.json')."""
    return json.loads(reference_path(name).read_text(encoding="utf-8"))
