"""Run a chapter in a fresh kernel and collect what its cells computed, for the reference scripts.

A reference script (interpret_reference.py, compression_reference.py) gives a Python expression
over the chapter's variables; `run_chapter` appends a cell that prints it as JSON after a marker,
executes the notebook with the chosen profile, and returns the parsed value. `provenance` adds how
and where the record was made.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pretrain_sweep import machine  # noqa: E402  (the same record of the machine)

MARKER = "REFERENCE"


def run_chapter(
    path: Path,
    results: str,
    profile: str,
    *,
    prepare: Callable[[nbformat.NotebookNode], None] | None = None,
    failed: Path | None = None,
) -> dict:
    """Execute the notebook at `path` with BERTCOURSE_PROFILE=`profile`; the value of the
    expression `results`, evaluated in its kernel after its last cell.

    prepare: changes the notebook before it runs (e.g. inserts a cell). failed: where the
    executed notebook goes if a cell fails (every output up to the failing cell).
    """
    os.environ["BERTCOURSE_PROFILE"] = profile
    notebook = nbformat.read(path, as_version=4)
    if prepare is not None:
        prepare(notebook)
    collect = f"import json as _json\nprint({MARKER!r} + _json.dumps({results.strip()}))"
    notebook.cells.append(nbformat.v4.new_code_cell(collect))
    client = NotebookClient(
        notebook, timeout=3600, resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        client.execute()
    except Exception:
        if failed is not None:
            failed.write_text(nbformat.writes(notebook))
            print(f"the chapter failed; the executed notebook is in {failed}", file=sys.stderr)
        raise
    outputs = notebook.cells[-1].outputs
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    return json.loads(text[text.index(MARKER) + len(MARKER) :])


def provenance(doc: str, command: str, started: float) -> dict:
    """The record's description (the script docstring's second paragraph), command, machine
    (with the load at the end) and wall time since `started` (a time.perf_counter())."""
    return {
        "description": doc.split("\n\n")[1].replace("\n", " "),
        "command": command,
        "machine": {**machine(), "load_average_1min_at_end": round(os.getloadavg()[0], 2)},
        "wall_seconds": round(time.perf_counter() - started),
    }
