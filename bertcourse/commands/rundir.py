"""Whose is --out? A command writes only into a folder that is new, empty, or one of its own runs.

The first file a command writes in --out is `bertcourse_run.json`, naming the command. A folder
that holds other files and no such record (a reader's own results, another program's output)
is refused before anything is read or written, so nothing of the reader's is replaced and no
stray file there (a vocab.txt, a config.json) is mistaken for the run's own. --overwrite starts
a run of the same command over: it removes that run's artefacts first, so an interrupted start
never leaves the old run's model or metrics beside the new run's checkpoints.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from ..files import atomic_save_file
from ..training import BEST_DIR, CHECKPOINT_PREFIX, LOG_CSV, LOG_JSONL

__all__ = ["RUN_RECORD", "check_output_dir", "take_output_dir"]

RUN_RECORD = "bertcourse_run.json"
# What the engine writes in every run (and what runs made before the record existed hold).
ENGINE_ARTEFACTS = (LOG_CSV, LOG_JSONL, BEST_DIR)


def _is_checkpoint(path: Path) -> bool:
    return path.name.startswith(CHECKPOINT_PREFIX) and path.is_dir()


def check_output_dir(out: Path, command: str) -> None:
    """Refuse an --out that is a file, another command's run, or a folder no run of ours wrote.

    Reads only: call it before any slow work, and `take_output_dir` before the first write.
    """
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a folder: choose a folder.")
    contents = sorted(out.iterdir()) if out.is_dir() else []
    record = out / RUN_RECORD
    if record.is_file():
        owner = json.loads(record.read_text()).get("command")
        if owner != command:
            raise FileExistsError(
                f"--out {out} holds a `{owner}` run, not a `{command}` one: choose another folder."
            )
    elif contents:
        made_before_records = any(_is_checkpoint(p) or p.name == LOG_JSONL for p in contents)
        if not made_before_records:  # not a run of this package: nothing there is touched
            names = ", ".join(p.name for p in contents[:3]) + (", ..." if len(contents) > 3 else "")
            raise FileExistsError(
                f"--out {out} already holds files that no bertcourse run wrote ({names}): choose a "
                "new or empty folder (nothing there was changed)."
            )


def take_output_dir(
    out: Path, command: str, *, resume: bool, overwrite: bool, artefacts: Sequence[str]
) -> None:
    """Check --out again, clear the old run's artefacts for --overwrite, and record the run.

    `artefacts`: the names of the files and folders the command writes besides the engine's.
    """
    check_output_dir(out, command)
    if overwrite and not resume and out.is_dir():
        for path in sorted(out.iterdir()):
            if path.name in artefacts or path.name in ENGINE_ARTEFACTS or _is_checkpoint(path):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    text = json.dumps({"command": command, "written_by": "bertcourse"}, indent=2) + "\n"
    atomic_save_file(lambda tmp: Path(tmp).write_text(text), out / RUN_RECORD)
