"""What a run keeps on disk: checkpoints, the best weights, the metrics log, random states.

Checkpoints are written into `checkpoint-<step>.tmp/` and renamed when complete: a
crash mid-write never leaves a checkpoint that looks valid. A checkpoint holds the
weights, the optimizer and schedule, every random number generator and the position
in the data, so a run resumes exactly.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import re
import shutil
import signal
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..files import atomic_save_file
from ..hf import load_state_dict_checked, read_weights
from .arguments import TrainingArguments

__all__ = [
    "CHECKPOINT_PREFIX",
    "CHECKPOINT_PATTERN",
    "TRAINING_STATE_FILE",
    "MODEL_FILE",
    "LOG_CSV",
    "LOG_JSONL",
    "BEST_DIR",
    "BEST_FILE",
    "STATE_FORMAT_VERSION",
    "capture_rng_states",
    "restore_rng_states",
    "preserved_rng_states",
    "deferred_keyboard_interrupt",
    "StopRequested",
    "StopSignals",
    "checkpoint_step",
    "list_checkpoints",
    "latest_checkpoint",
    "write_checkpoint",
    "write_best",
    "read_best",
    "load_training_state",
    "load_model_weights",
    "MetricsLog",
    "prepare_output_dir",
]

CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINING_STATE_FILE = "training_state.pt"
MODEL_FILE = "model.safetensors"
LOG_CSV = "log.csv"
LOG_JSONL = "log.jsonl"
BEST_DIR = "best"
BEST_FILE = "best.json"
STATE_FORMAT_VERSION = 1


# ----------------------------------------------------------------------------
# Random states: saved in checkpoints, and kept untouched by evaluation
# ----------------------------------------------------------------------------


def capture_rng_states() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) generator states, as weights_only-loadable values."""
    numpy_state = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "keys": numpy_state[1].tolist(),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: Mapping[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = states["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np.array(numpy_state["keys"], dtype=np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@contextlib.contextmanager
def preserved_rng_states() -> Iterator[None]:
    """Run a block (an evaluation) without moving any random generator of the training run."""
    states = capture_rng_states()
    try:
        yield
    finally:
        restore_rng_states(states)


class StopRequested(KeyboardInterrupt):
    """A stop asked for by a signal: Ctrl-C (SIGINT) or SIGTERM (a scheduler, Colab, `kill`)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """While a run trains, Ctrl-C (SIGINT) and SIGTERM ask it to stop at its next safe point.

    The handler only notes the signal; the loop calls `check()` between steps, where the last
    step is complete, logged and (if due) saved, and stops there with `StopRequested`. So a
    signal never cuts a log line or a checkpoint in half. A second signal stops at once, except
    inside an optimizer update (`deferred_keyboard_interrupt`), which it lets finish first: the
    checkpoint saved after the stop never holds half an update.
    """

    active: StopSignals | None = None  # the one installed now, if any

    def __init__(self) -> None:
        self.received: list[int] = []
        self.previous: dict[int, Any] = {}
        self.updating = 0  # > 0 inside an optimizer update

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {
                signum: signal.signal(signum, self._handle)
                for signum in (signal.SIGINT, signal.SIGTERM)
            }
            StopSignals.active = self
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received.append(signum)
        if len(self.received) > 1 and not self.updating:  # asked twice: do not wait
            raise StopRequested(signum)

    @contextlib.contextmanager
    def update(self) -> Iterator[None]:
        """A block a second signal does not cut: it stops the run right after the block."""
        self.updating += 1
        try:
            yield
        finally:
            self.updating -= 1
        if len(self.received) > 1 and not self.updating:
            raise StopRequested(self.received[-1])

    def check(self) -> None:
        if self.received:
            raise StopRequested(self.received[0])

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        if StopSignals.active is self:
            StopSignals.active = None


@contextlib.contextmanager
def deferred_keyboard_interrupt() -> Iterator[None]:
    """Hold a Ctrl-C or SIGTERM until the block ends, so an update is never half-applied when it
    is saved."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if StopSignals.active:  # a training loop's: it waits for a safe point, and for the update
        with StopSignals.active.update():
            yield
        return
    received: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda number, frame: received.append(number))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            raise StopRequested(received[0])


# ----------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------


def checkpoint_step(path: Path) -> int | None:
    match = CHECKPOINT_PATTERN.match(path.name)
    return int(match.group(1)) if match else None


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first. `checkpoint-N.tmp` (a save cut short) is not one."""
    directory = Path(output_dir)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        step = checkpoint_step(path)
        if step is None or not path.is_dir():
            continue
        if (path / MODEL_FILE).is_file() and (path / TRAINING_STATE_FILE).is_file():
            found.append((step, path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def _replace_directory(tmp: Path, directory: Path) -> None:
    """Rename the complete `tmp` to `directory`, replacing an older one of the same name."""
    if directory.exists():  # the same step saved again (e.g. interrupted right after a save)
        old = directory.with_name(directory.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old)
    else:
        os.replace(tmp, directory)


def _fresh_tmp_directory(directory: Path) -> Path:
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)  # left by an earlier save that was cut short
    tmp.mkdir(parents=True)
    return tmp


def write_checkpoint(
    directory: Path, model: nn.Module, training_state: dict[str, Any], keep: int | None
) -> Path:
    """Write into `<directory>.tmp/`, then rename: the checkpoint appears complete or not at all."""
    tmp = _fresh_tmp_directory(directory)
    model.save_pretrained(tmp)  # config.json + model.safetensors, readable by transformers
    torch.save(training_state, tmp / TRAINING_STATE_FILE)
    _replace_directory(tmp, directory)
    if keep is not None:
        for stale in list_checkpoints(directory.parent)[:-keep]:
            shutil.rmtree(stale)
    return directory


def write_best(directory: Path, model: nn.Module, best: dict[str, Any]) -> Path:
    """The best model so far (config.json, model.safetensors) and best.json, written atomically."""
    tmp = _fresh_tmp_directory(directory)
    model.save_pretrained(tmp)
    (tmp / BEST_FILE).write_text(json.dumps(best, indent=2) + "\n")
    _replace_directory(tmp, directory)
    return directory


def read_best(output_dir: str | os.PathLike) -> dict[str, Any] | None:
    """What output_dir/best/best.json says (metric, value, step, metrics), or None."""
    path = Path(output_dir) / BEST_DIR / BEST_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def load_training_state(checkpoint: str | os.PathLike) -> dict[str, Any]:
    return read_weights(Path(checkpoint) / TRAINING_STATE_FILE)


def load_model_weights(model: nn.Module, checkpoint: str | os.PathLike) -> None:
    """The checkpoint's weights into `model`, every tensor checked (hf.load_state_dict_checked)."""
    load_state_dict_checked(model, read_weights(Path(checkpoint) / MODEL_FILE))


# ----------------------------------------------------------------------------
# Logging
# ----------------------------------------------------------------------------


def json_line(record: Mapping[str, Any]) -> str:
    """One line of log.jsonl: valid JSON, a NaN or infinite metric written as null."""
    finite = {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in record.items()
    }
    return json.dumps(finite, allow_nan=False) + "\n"


class MetricsLog:
    """Records appended to log.jsonl and log.csv (one column per metric seen so far).

    A record with a metric the CSV header lacks (the first evaluation) makes
    the CSV be rewritten, atomically, with the wider header; otherwise rows
    are appended.
    """

    def __init__(self, output_dir: Path, enabled: bool):
        self.output_dir = output_dir
        self.enabled = enabled  # only the main process writes
        self.records: list[dict[str, Any]] = []
        self.csv_columns: list[str] = []

    def load(self, up_to_step: int) -> None:
        """Keep what a resumed run already logged, up to its checkpoint (later rows are redone)."""
        path = self.output_dir / LOG_JSONL
        if path.is_file():
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            self.records = [r for r in records if r.get("step", 0) <= up_to_step]
        if self.enabled:
            text = "".join(json_line(r) for r in self.records)
            atomic_save_file(lambda tmp: Path(tmp).write_text(text), path)
            self._rewrite_csv()

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if not self.enabled:
            return
        with open(self.output_dir / LOG_JSONL, "a") as handle:
            handle.write(json_line(record))
        if set(record) <= set(self.csv_columns):
            with open(self.output_dir / LOG_CSV, "a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=self.csv_columns).writerow(record)
        else:
            self._rewrite_csv()

    def _rewrite_csv(self) -> None:
        self.csv_columns = list(dict.fromkeys(key for record in self.records for key in record))

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.csv_columns)
                writer.writeheader()
                writer.writerows(self.records)

        atomic_save_file(write, self.output_dir / LOG_CSV)


def prepare_output_dir(args: TrainingArguments, is_main: bool) -> Path | None:
    """The checkpoint to resume from (or None); refuses to mix a new run into an old one."""
    output_dir = args.output_dir
    checkpoint = latest_checkpoint(output_dir)
    if args.resume:
        stale = sorted(p.name for p in output_dir.glob(f"{CHECKPOINT_PREFIX}*.tmp"))
        if stale and is_main:
            print(f"Ignoring incomplete checkpoint(s) {', '.join(stale)} (a save cut short).")
        if checkpoint is None and is_main:
            print(f"resume=True but {output_dir} holds no complete checkpoint: starting fresh.")
            for name in (LOG_CSV, LOG_JSONL):  # the log of a run that left no checkpoint
                (output_dir / name).unlink(missing_ok=True)
            shutil.rmtree(output_dir / BEST_DIR, ignore_errors=True)
        return checkpoint
    leftovers = checkpoint is not None or (output_dir / LOG_JSONL).exists()
    if leftovers and not args.overwrite_output_dir:
        raise FileExistsError(
            f"{output_dir} already holds a run ({checkpoint.name if checkpoint else LOG_JSONL}). "
            "Pass resume=True (--resume) to continue it, overwrite_output_dir=True (--overwrite) "
            "to start over there, or choose another output_dir."
        )
    if leftovers and is_main:
        for path in output_dir.iterdir():
            if (path.name.startswith(CHECKPOINT_PREFIX) or path.name == BEST_DIR) and path.is_dir():
                shutil.rmtree(path)
            elif path.name in (LOG_CSV, LOG_JSONL):
                path.unlink()
    return None
