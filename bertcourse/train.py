"""The training engine: one loop for pretraining and fine-tuning, on one CPU or many GPUs.

`train(model, train_dataset, collate_fn, args)` runs AdamW with a linear
warm-up and decay through Hugging Face Accelerate, so the same code runs on a
laptop CPU, one GPU (with bf16/fp16 mixed precision) or several processes
(`torchrun --nproc_per_node N script.py`) without a change.

What makes it a course's engine rather than a script:

- Resuming is exact. A checkpoint holds the weights, the optimizer and
  schedule, every random number generator and the position in the data, and
  the masking of a batch depends only on *which* batch it is. So 4 steps,
  stop, resume to 8 gives bitwise the weights of 8 steps in one go (a test
  proves it), and a reader who presses Ctrl-C loses nothing.
- Checkpoints are written into `checkpoint-<step>.tmp/` and renamed when
  complete: a crash mid-write never leaves a checkpoint that looks valid.
- Every number is logged to `log.csv` / `log.jsonl`, and
  `bertcourse.viz.plot_training_curves` draws them.

`python -m bertcourse pretrain ...` (`pretrain_main`) puts it together for
BERT's pretraining: corpus, vocabulary, NSP/MLM examples, training, and an
export that `transformers.pipeline("fill-mask", ...)` loads.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import inspect
import json
import math
import os
import random
import re
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .config import ConfigError
from .files import atomic_save_file

MIXED_PRECISIONS = ("no", "bf16", "fp16")
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
# Arguments
# ----------------------------------------------------------------------------


@dataclass
class TrainingArguments:
    """Everything a run needs besides the model and the data; validated when created.

    A *step* is one optimizer update: `gradient_accumulation_steps` batches of
    `per_device_batch_size` examples on each of the processes. The defaults
    are BERT's (Devlin et al. 2019): AdamW with beta = (0.9, 0.999),
    epsilon = 1e-6, weight decay 0.01, gradients clipped to norm 1.
    """

    output_dir: str | os.PathLike
    max_steps: int
    per_device_batch_size: int = 32
    learning_rate: float = 1e-4
    # Warm-up length: warmup_steps if given, else warmup_ratio * max_steps.
    warmup_steps: int | None = None
    warmup_ratio: float = 0.0
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_epsilon: float = 1e-6
    max_grad_norm: float | None = 1.0
    gradient_accumulation_steps: int = 1
    # "bf16" / "fp16" autocast on a GPU; on a CPU the run falls back to "no", with a warning.
    mixed_precision: str = "no"
    eval_every: int | None = None  # steps; the last step is always evaluated
    save_every: int | None = None  # steps; the last step is always saved
    log_every: int = 10
    keep_checkpoints: int = 2
    seed: int = 0
    resume: bool = False
    # Start over in an output_dir that already holds checkpoints and logs (they are deleted).
    overwrite_output_dir: bool = False
    num_workers: int = 0
    show_progress: bool = True
    # Batches of examples of similar length (less padding); the order stays random. Needs
    # examples with input_ids.
    group_by_length: bool = False
    # Keep the weights of the best evaluation in output_dir/best/, judged by this metric
    # (a key of the evaluation's metrics, e.g. "eval_accuracy").
    metric_for_best: str | None = None
    greater_is_better: bool = True

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        self.adam_betas = tuple(self.adam_betas)
        positive_ints = {
            "max_steps": self.max_steps,
            "per_device_batch_size": self.per_device_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "log_every": self.log_every,
            "keep_checkpoints": self.keep_checkpoints,
        }
        for name in ("eval_every", "save_every"):
            if getattr(self, name) is not None:
                positive_ints[name] = getattr(self, name)
        for name, value in positive_ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate!r}.")
        if self.warmup_steps is not None:
            if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
                raise ConfigError(
                    f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}."
                )
            if self.warmup_ratio:
                raise ConfigError(
                    "Give either warmup_steps or warmup_ratio, not both "
                    f"(got warmup_steps={self.warmup_steps}, warmup_ratio={self.warmup_ratio})."
                )
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio is a fraction in [0, 1), got {self.warmup_ratio!r}.")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay!r}.")
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise ConfigError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas!r}.")
        if not self.adam_epsilon > 0:
            raise ConfigError(f"adam_epsilon must be > 0, got {self.adam_epsilon!r}.")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ConfigError(
                f"max_grad_norm must be > 0 (or None for no clipping), got {self.max_grad_norm!r}."
            )
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ConfigError(
                f"mixed_precision must be one of {', '.join(MIXED_PRECISIONS)}, got "
                f"{self.mixed_precision!r}."
            )
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers!r}.")
        if self.resume and self.overwrite_output_dir:
            raise ConfigError(
                "resume=True continues the run in output_dir; overwrite_output_dir=True deletes "
                "it. Choose one."
            )

    @property
    def num_warmup_steps(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return math.ceil(self.warmup_ratio * self.max_steps)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (str, int, float, bool, list), so it fits a weights_only checkpoint."""
        fields = dataclasses.asdict(self)
        fields["output_dir"] = str(self.output_dir)
        fields["adam_betas"] = list(self.adam_betas)
        return fields


def resolve_mixed_precision(requested: str) -> str:
    """The precision this machine can run: bf16/fp16 need a CUDA GPU, else "no" with a warning."""
    if requested == "no":
        return "no"
    if not torch.cuda.is_available():
        warnings.warn(
            f"mixed_precision={requested!r} needs a CUDA GPU and this machine has none: training in "
            "float32 (mixed_precision='no') instead. Half precision pays off on a GPU's tensor "
            "cores; this engine uses it there only.",
            UserWarning,
            stacklevel=4,
        )
        return "no"
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"This GPU ({torch.cuda.get_device_name()}) does not support bfloat16; use "
            "mixed_precision='fp16' (with loss scaling) or 'no'."
        )
    return requested


# ----------------------------------------------------------------------------
# Optimizer and schedule
# ----------------------------------------------------------------------------


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: weights decay, biases and LayerNorm parameters do not.

    Weight decay pulls weights towards 0, which regularises a projection; a
    bias or a LayerNorm gain only shifts or scales, and pulling a gain to 0
    would switch its unit off. BERT's original optimizer excluded exactly
    these. Shared parameters (the tied decoder) are listed once.
    """
    no_decay_ids = set()
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    decay, no_decay = ([], []), ([], [])
    for name, parameter in model.named_parameters():  # each shared parameter once
        if not parameter.requires_grad:
            continue
        group = no_decay if name.endswith("bias") or id(parameter) in no_decay_ids else decay
        group[0].append(name)
        group[1].append(parameter)
    return [
        {"params": decay[1], "weight_decay": weight_decay, "param_names": decay[0]},
        {"params": no_decay[1], "weight_decay": 0.0, "param_names": no_decay[0]},
    ]


def linear_warmup_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier: 0 -> 1 linearly over the warm-up, then linearly down to 0.

    Warm-up keeps the first updates small while Adam's moment estimates are
    still noisy; the decay lets the last steps settle into a minimum.
    """
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def create_optimizer_and_schedule(
    model: nn.Module, args: TrainingArguments
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    # fused: one kernel updates every tensor (as transformers' Trainer does by default).
    fused = all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in model.parameters()
    )
    optimizer = torch.optim.AdamW(
        parameter_groups(model, args.weight_decay),
        lr=args.learning_rate,
        betas=args.adam_betas,
        eps=args.adam_epsilon,
        fused=fused or None,
    )
    # A partial, not a lambda: LambdaLR's state_dict can then describe it.
    multiplier = partial(
        linear_warmup_decay, warmup_steps=args.num_warmup_steps, total_steps=args.max_steps
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


# ----------------------------------------------------------------------------
# Reproducible, resumable data order and masking
# ----------------------------------------------------------------------------


def derive_seed(*numbers: int) -> int:
    """One 63-bit seed from several integers (e.g. run seed, epoch, position), well mixed."""
    return int(
        np.random.SeedSequence([int(n) for n in numbers]).generate_state(2, np.uint64)[0] >> 1
    )


class EpochSampler(Sampler):
    """Yields (example index, epoch, position in epoch); the order is a permutation seeded by (seed, epoch).

    The order of an epoch is a function of the seed and the epoch number
    only, so a resumed run finds the same order and only has to skip the
    batches it already consumed. The epoch and position travel with each
    index so the collator knows which batch it is building (see SeededCollate).
    """

    def __init__(self, num_examples: int, seed: int, shuffle: bool = True):
        self.num_examples = num_examples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_examples

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        # An unshuffled (evaluation) pass is the same every time, and so is its masking.
        epoch = self.epoch if self.shuffle else 0
        if self.shuffle:
            order_rng = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
            order = torch.randperm(self.num_examples, generator=order_rng).tolist()
        else:
            order = range(self.num_examples)
        for position, index in enumerate(order):
            yield index, epoch, position


class LengthGroupedEpochSampler(EpochSampler):
    """An EpochSampler whose batches hold examples of similar length, in a random order.

    Each epoch: a seeded random permutation, cut into mega-batches of
    `batch_size * mega_batches` examples, each sorted by length (longest
    first) and cut into batches; the full batches are then shuffled, and an
    incomplete last batch stays last (so drop_last drops only it). Padding
    shrinks to almost nothing while every example still lands in a random
    batch each epoch. The order is a function of (seed, epoch), as for
    EpochSampler, so resuming stays exact.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int,
        mega_batches: int = 50,
    ):
        super().__init__(len(lengths), seed, shuffle=True)
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.mega_batch_size = batch_size * mega_batches

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        order = torch.randperm(self.num_examples, generator=generator).tolist()
        batches = []
        for start in range(0, len(order), self.mega_batch_size):
            mega_batch = sorted(
                order[start : start + self.mega_batch_size], key=lambda i: -self.lengths[i]
            )
            batches += [
                mega_batch[i : i + self.batch_size]
                for i in range(0, len(mega_batch), self.batch_size)
            ]
        full = [batch for batch in batches if len(batch) == self.batch_size]
        partial_batches = [batch for batch in batches if len(batch) < self.batch_size]
        shuffled = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
        # Several incomplete batches (one per mega-batch at most) would misalign the
        # DataLoader's batches: merge them into full ones at the end.
        rest = [index for batch in partial_batches for index in batch]
        order = [index for batch in shuffled for index in batch] + rest
        for position, index in enumerate(order):
            yield index, self.epoch, position


def example_lengths(dataset: Any) -> list[int]:
    """len(input_ids) of every example of a map-style dataset (a datasets.Dataset column at once)."""
    column_names = getattr(dataset, "column_names", None)
    if column_names is not None and "input_ids" in column_names:
        return [len(ids) for ids in dataset["input_ids"]]
    try:
        return [len(dataset[i]["input_ids"]) for i in range(len(dataset))]
    except (KeyError, TypeError) as error:
        raise ValueError(
            "group_by_length=True needs examples with input_ids (e.g. dicts from a tokenizer); "
            f"this dataset's examples have none ({error!r})."
        ) from error


class KeyedDataset(Dataset):
    """dataset[(index, epoch, position)] -> ((index, epoch, position), dataset[index])."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[tuple[int, int, int], Any]:
        return key, self.dataset[key[0]]


def accepts_generator(collate_fn: Callable) -> bool:
    """Whether collate_fn can be called with generator=... (a named or a ** parameter)."""
    try:
        parameters = inspect.signature(collate_fn).parameters
    except (TypeError, ValueError):  # some builtins have no signature
        return False
    return "generator" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


class SeededCollate:
    """Calls collate_fn(examples, generator=g), g seeded by (seed, epoch, position of the batch).

    Random masking then depends only on which batch is built: not on how
    many batches this process built before (a resumed run masks exactly as
    an uninterrupted one), nor on the DataLoader's worker processes. A
    collate_fn without a `generator` parameter runs with torch's global
    generator seeded the same way, then restored.
    """

    def __init__(self, collate_fn: Callable, seed: int):
        self.collate_fn = collate_fn
        self.seed = seed
        self.pass_generator = accepts_generator(collate_fn)

    def __call__(self, keyed_examples: list[tuple[tuple[int, int, int], Any]]) -> Any:
        (_, epoch, position), _ = keyed_examples[0]  # the batch's first example names it
        examples = [example for _, example in keyed_examples]
        batch_seed = derive_seed(self.seed, epoch, position)
        if self.pass_generator:
            return self.collate_fn(examples, generator=torch.Generator().manual_seed(batch_seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch_seed)
            return self.collate_fn(examples)


def make_dataloader(
    dataset: Any,
    collate_fn: Callable,
    batch_size: int,
    seed: int,
    shuffle: bool,
    drop_last: bool,
    num_workers: int = 0,
    group_by_length: bool = False,
) -> DataLoader:
    """A DataLoader whose order and collation randomness are functions of (seed, epoch, position).

    Its own torch.Generator keeps it from drawing on the global generator
    (a DataLoader draws a base seed each epoch), which dropout uses. With
    group_by_length (training only), batches hold examples of similar length.
    """
    if isinstance(dataset, torch.utils.data.IterableDataset):
        raise TypeError(
            "train() needs a map-style dataset (len() and dataset[i]), e.g. a list of dicts or a "
            "datasets.Dataset: an iterable dataset cannot be shuffled or resumed reproducibly."
        )
    if group_by_length and shuffle:
        sampler = LengthGroupedEpochSampler(example_lengths(dataset), batch_size, seed)
    else:
        sampler = EpochSampler(len(dataset), seed, shuffle)
    return DataLoader(
        KeyedDataset(dataset),
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=SeededCollate(collate_fn, seed),
        drop_last=drop_last,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )


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


@contextlib.contextmanager
def deferred_keyboard_interrupt() -> Iterator[None]:
    """Hold a Ctrl-C until the block ends, so an update is never half-applied when it is saved."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


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
    return torch.load(Path(checkpoint) / TRAINING_STATE_FILE, map_location="cpu", weights_only=True)


def load_model_weights(model: nn.Module, checkpoint: str | os.PathLike) -> None:
    """The checkpoint's weights into `model`, every tensor checked (hf.load_state_dict_checked)."""
    from safetensors.torch import load_file

    from .hf import load_state_dict_checked

    load_state_dict_checked(model, load_file(Path(checkpoint) / MODEL_FILE))


# ----------------------------------------------------------------------------
# Logging
# ----------------------------------------------------------------------------


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
            text = "".join(json.dumps(r) + "\n" for r in self.records)
            atomic_save_file(lambda tmp: Path(tmp).write_text(text), path)
            self._rewrite_csv()

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if not self.enabled:
            return
        with open(self.output_dir / LOG_JSONL, "a") as handle:
            handle.write(json.dumps(record) + "\n")
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


# ----------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------


def evaluate_loss(model: nn.Module, dataloader: DataLoader, accelerator: Any) -> dict[str, float]:
    """The mean of the model's loss over the evaluation batches: {"eval_loss": ...}."""
    model.eval()
    total = torch.zeros(2, device=accelerator.device)  # loss sum, batches
    with torch.no_grad():
        for batch in dataloader:
            total[0] += model(**batch).loss.float()
            total[1] += 1
    total = accelerator.reduce(total, reduction="sum")
    return {"eval_loss": (total[0] / total[1].clamp(min=1)).item()}


def evaluate_pretraining(
    model: nn.Module, dataloader: DataLoader, accelerator: Any
) -> dict[str, float]:
    """MLM loss and accuracy on the masked positions, NSP loss and accuracy (if the batches have it).

    The engine builds the evaluation batches with a fixed masking seed, so the
    same tokens are masked at every evaluation and the numbers are comparable
    across steps. Runs the MLM head on masked positions only (masked_only).
    """
    model.eval()
    # mlm loss sum, mlm correct, masked tokens, nsp loss sum, nsp correct, nsp examples
    totals = torch.zeros(6, dtype=torch.float64, device=accelerator.device)
    with torch.no_grad():
        for batch in dataloader:
            out = model(**batch, masked_only=True)
            logits = getattr(out, "prediction_logits", None)
            logits = out.logits if logits is None else logits  # (N, V): the N masked positions
            targets = batch["labels"][batch["labels"] != -100]  # (N,)
            totals[0] += F.cross_entropy(logits.float(), targets, reduction="sum")
            totals[1] += (logits.argmax(dim=-1) == targets).sum()
            totals[2] += targets.numel()
            nsp_labels = batch.get("next_sentence_label")
            nsp_logits = getattr(out, "seq_relationship_logits", None)
            if nsp_labels is not None and nsp_logits is not None:
                nsp_labels = nsp_labels.view(-1)
                totals[3] += F.cross_entropy(nsp_logits.float(), nsp_labels, reduction="sum")
                totals[4] += (nsp_logits.argmax(dim=-1) == nsp_labels).sum()
                totals[5] += nsp_labels.numel()
    totals = accelerator.reduce(totals, reduction="sum").tolist()
    mlm_loss = totals[0] / max(totals[2], 1)
    metrics = {
        "eval_mlm_loss": mlm_loss,
        "eval_mlm_accuracy": totals[1] / max(totals[2], 1),
        "eval_loss": mlm_loss,
    }
    if totals[5]:
        nsp_loss = totals[3] / totals[5]
        metrics.update(
            eval_nsp_loss=nsp_loss,
            eval_nsp_accuracy=totals[4] / totals[5],
            eval_loss=mlm_loss + nsp_loss,  # as the model's loss: the sum of the two
        )
    return metrics


# ----------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------


@dataclass
class TrainState:
    """What a callback sees after each step."""

    step: int
    max_steps: int
    epoch: int
    loss: float  # this step's training loss on this process (mean over accumulated batches)
    learning_rate: float
    eval_metrics: dict[str, float] = field(default_factory=dict)  # if evaluated at this step


@dataclass
class TrainResult:
    model: nn.Module
    global_step: int
    train_loss: float | None  # the last logged training loss
    eval_metrics: dict[str, float]  # the last evaluation
    log_history: list[dict[str, Any]]
    elapsed_s: float  # including the time of the runs this one resumed
    tokens_per_s: float  # this run's training steps (not evaluation, saving), all processes
    examples_per_s: float
    last_checkpoint: Path | None
    interrupted: bool
    mixed_precision: str
    output_dir: Path
    # With metric_for_best: {"metric", "value", "step", "metrics"} of the best evaluation,
    # whose weights are in output_dir/best/.
    best: dict[str, Any] | None = None


@dataclass
class Position:
    """Where a run stands: after `step` updates, `batches_in_epoch` batches into `epoch`."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0


def batch_stream(
    dataloader: Any, accelerator: Any, start: Position
) -> Iterator[tuple[int, int, Any]]:
    """(epoch, batches consumed in that epoch, batch), epoch after epoch, from `start` on.

    A resumed run re-creates the epoch's order (EpochSampler) and skips the
    batches already used without loading them (accelerate's skip_first_batches).
    """
    epoch, consumed = start.epoch, start.batches_in_epoch
    while True:
        dataloader.set_epoch(epoch)
        epoch_loader = (
            accelerator.skip_first_batches(dataloader, consumed) if consumed else dataloader
        )
        for batch in epoch_loader:
            consumed += 1
            yield epoch, consumed, batch
        epoch, consumed = epoch + 1, 0


def count_tokens(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Real (not padding) tokens in a batch."""
    if "attention_mask" in batch:
        return batch["attention_mask"].sum()
    return torch.tensor(batch["input_ids"].numel())


class _Meter:
    """Sums loss, tokens and examples between two log rows, on the device (no sync per step)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(
            3, dtype=torch.float64, device=self.device
        )  # loss, tokens, examples
        self.steps = 0
        self.started = time.perf_counter()

    def add_batch(self, batch: Mapping[str, torch.Tensor]) -> None:
        self.sums[1] += count_tokens(batch)
        self.sums[2] += len(batch["input_ids"])

    def add_step(self, loss: torch.Tensor) -> None:
        self.sums[0] += loss
        self.steps += 1


def train(
    model: nn.Module,
    train_dataset: Any,
    collate_fn: Callable,
    args: TrainingArguments,
    eval_dataset: Any | None = None,
    evaluate_fn: Callable[[nn.Module, DataLoader, Any], dict[str, float]] | None = None,
    forward_kwargs: Mapping[str, Any] | None = None,
    callbacks: Sequence[Callable[[TrainState], None]] = (),
) -> TrainResult:
    """Train `model` for args.max_steps optimizer steps (see `Trainer`); returns a TrainResult."""
    trainer = Trainer(
        model, train_dataset, collate_fn, args, eval_dataset, evaluate_fn, forward_kwargs, callbacks
    )
    return trainer.train()


class Trainer:
    """One training run: set up (or resume), loop over steps, log, evaluate, save.

    model(**batch, **forward_kwargs) must return an object with `.loss`
    (every head of this package does); forward_kwargs={"masked_only": True}
    turns on sparse MLM prediction for the pretraining heads. collate_fn
    turns a list of dataset items into that batch (a dict of tensors with
    input_ids); if it takes a `generator` argument, its randomness (masking)
    is seeded per batch, so a run resumes exactly. evaluate_fn(model,
    eval_dataloader, accelerator) -> metrics (default `evaluate_loss`) runs
    every args.eval_every steps and after the last one. Each callback gets a
    TrainState after every step. A KeyboardInterrupt, from Ctrl-C or a
    callback, saves a checkpoint and ends the run with `interrupted=True`.
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataset: Any,
        collate_fn: Callable,
        args: TrainingArguments,
        eval_dataset: Any | None = None,
        evaluate_fn: Callable[[nn.Module, DataLoader, Any], dict[str, float]] | None = None,
        forward_kwargs: Mapping[str, Any] | None = None,
        callbacks: Sequence[Callable[[TrainState], None]] = (),
    ):
        self.args = args
        self.model = model
        self.train_dataset = train_dataset
        self.collate_fn = collate_fn
        self.eval_dataset = eval_dataset
        self.evaluate_fn = evaluate_fn or (evaluate_loss if eval_dataset is not None else None)
        self.forward_kwargs = dict(forward_kwargs or {})
        self.callbacks = list(callbacks)
        self.accelerator = _make_accelerator(args)
        self.is_main = self.accelerator.is_main_process

    # -- the run -----------------------------------------------------------------------
    def train(self) -> TrainResult:
        args, accelerator = self.args, self.accelerator
        self._setup()
        self.started = time.perf_counter()
        meter = _Meter(accelerator.device)
        stream = batch_stream(self.train_loader, accelerator, self.position)
        progress = _progress_bar(args, self.position.step, enabled=self.is_main)
        interrupted = False
        try:
            while self.position.step < args.max_steps:
                step_loss = self._optimizer_step(stream, meter)
                step = self.position.step
                progress.update(1)
                if step % args.log_every == 0 or step == args.max_steps:
                    record = self._log_training(meter)
                    progress.set_postfix(
                        loss=f"{record['loss']:.3f}",
                        lr=f"{record['lr']:.2e}",
                        tok_s=f"{record['tokens_per_s']:,.0f}",
                    )
                paused = time.perf_counter()
                if self.eval_loader is not None and self._due(args.eval_every, step):
                    self._evaluate(progress)
                if self._due(args.save_every, step):
                    self.save_checkpoint(progress)
                meter.started += time.perf_counter() - paused  # throughput counts training only
                self._run_callbacks(step_loss)
        except KeyboardInterrupt:
            interrupted = True
            self._save_after_interrupt(progress)
        finally:
            progress.close()
            stream.close()
        return self._result(interrupted)

    def _due(self, every: int | None, step: int) -> bool:
        return step == self.args.max_steps or (every is not None and step % every == 0)

    def _optimizer_step(self, stream: Iterator, meter: _Meter) -> torch.Tensor:
        """One update from gradient_accumulation_steps batches; returns the mean loss (a tensor)."""
        args, accelerator = self.args, self.accelerator
        step_loss = torch.zeros((), device=accelerator.device)
        for _ in range(args.gradient_accumulation_steps):
            epoch, batches_in_epoch, batch = next(stream)
            with accelerator.accumulate(self.model):  # no DDP all-reduce until the last batch
                loss = self.model(**batch, **self.forward_kwargs).loss
                accelerator.backward(loss)  # divides by gradient_accumulation_steps
                step_loss += loss.detach().float() / args.gradient_accumulation_steps
                meter.add_batch(batch)
                if accelerator.sync_gradients:  # the last accumulated batch: update
                    with deferred_keyboard_interrupt():
                        self._update()
                        self.position = Position(self.position.step + 1, epoch, batches_in_epoch)
                        self.rng_after_step = capture_rng_states()
        meter.add_step(step_loss)
        return step_loss

    def _update(self) -> None:
        if self.args.max_grad_norm is not None:
            self.grad_norm = self.accelerator.clip_grad_norm_(
                self.model.parameters(), self.args.max_grad_norm
            )
        self.optimizer.step()
        # Stepped here, once per update: accelerate's scheduler wrapper would step it once per
        # process (it assumes a schedule counted in single-process batches).
        if not self.accelerator.optimizer_step_was_skipped:  # fp16 overflow: no update happened
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    # -- set-up ------------------------------------------------------------------------
    def _setup(self) -> None:
        from accelerate.utils import set_seed

        args, accelerator = self.args, self.accelerator
        if self.is_main:
            args.output_dir.mkdir(parents=True, exist_ok=True)
        resume_from = _prepare_output_dir(args, self.is_main)
        accelerator.wait_for_everyone()
        set_seed(args.seed)  # python, numpy, torch and CUDA; replaced by the checkpoint's on resume
        self.position, self.elapsed_before, state = Position(), 0.0, None
        if resume_from is not None:
            state = load_training_state(resume_from)
            self.position = Position(state["step"], state["epoch"], state["batches_in_epoch"])
            self.elapsed_before = state["elapsed_s"]
            _warn_if_setup_changed(state, args, len(self.train_dataset), accelerator.num_processes)
            load_model_weights(self.model, resume_from)
        if self.position.step >= args.max_steps:
            raise ValueError(
                f"{resume_from} is at step {self.position.step}, already max_steps="
                f"{args.max_steps}: raise max_steps to train further."
            )
        self._make_loaders()
        self.model.train()
        optimizer, self.scheduler = create_optimizer_and_schedule(self.model, args)
        self.model, self.optimizer, self.train_loader = accelerator.prepare(
            self.model, optimizer, self.train_loader
        )
        if self.eval_loader is not None:
            self.eval_loader = accelerator.prepare(self.eval_loader)
        if state is not None:
            self._restore(state)
        self.rng_after_step = capture_rng_states()
        self.grad_norm = None
        self.eval_metrics: dict[str, float] = {}
        self.evaluated_at = -1
        self.last_checkpoint: Path | None = resume_from
        self.saved_at = self.position.step if resume_from is not None else -1
        self.totals = {"tokens": 0.0, "examples": 0.0, "seconds": 0.0}
        self.log = MetricsLog(args.output_dir, enabled=self.is_main)
        self.best: dict[str, Any] | None = None
        if resume_from is not None:
            self.log.load(up_to_step=self.position.step)
            best = read_best(args.output_dir)
            if best is not None and best["step"] <= self.position.step:
                self.best = best
        if self.is_main:
            self._print_plan(resume_from)

    def _make_loaders(self) -> None:
        args = self.args
        self.train_loader = make_dataloader(
            self.train_dataset,
            self.collate_fn,
            args.per_device_batch_size,
            args.seed,
            shuffle=True,
            drop_last=True,  # every step sees the same number of examples
            num_workers=args.num_workers,
            group_by_length=args.group_by_length,
        )
        if len(self.train_loader) == 0:
            raise ValueError(
                f"The training set has {len(self.train_dataset)} examples, fewer than one batch "
                f"of {args.per_device_batch_size}: lower per_device_batch_size or add data."
            )
        self.eval_loader = None
        if self.eval_dataset is not None:
            self.eval_loader = make_dataloader(
                self.eval_dataset,
                self.collate_fn,
                args.per_device_batch_size,
                args.seed + 1,  # a fixed masking seed: every evaluation masks the same tokens
                shuffle=False,
                drop_last=False,
                num_workers=args.num_workers,
            )

    def _restore(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])  # moves the moments to the device
        self.scheduler.load_state_dict(state["scheduler"])
        if self.accelerator.scaler is not None and state.get("scaler"):
            self.accelerator.scaler.load_state_dict(state["scaler"])
        rng_states = state["rng_states"]  # one per process (one only after an interrupt)
        restore_rng_states(rng_states[min(self.accelerator.process_index, len(rng_states) - 1)])

    def _print_plan(self, resume_from: Path | None) -> None:
        args, accelerator = self.args, self.accelerator
        processes = accelerator.num_processes
        global_batch = args.per_device_batch_size * args.gradient_accumulation_steps * processes
        start = (
            f"resuming from {resume_from} (step {self.position.step})"
            if resume_from
            else "from step 0"
        )
        print(
            f"Training {type(accelerator.unwrap_model(self.model)).__name__} {start}: "
            f"{len(self.train_dataset):,} examples, {args.max_steps:,} steps of {global_batch} "
            f"examples ({args.per_device_batch_size} x {processes} process(es) x "
            f"{args.gradient_accumulation_steps} accumulated), on {accelerator.device}, mixed "
            f"precision {accelerator.mixed_precision}. Checkpoints and logs: {args.output_dir}"
        )

    # -- logging, evaluation, checkpoints ----------------------------------------------
    def _log_training(self, meter: _Meter) -> dict[str, Any]:
        """A log row for the steps since the last one, all processes together."""
        accelerator = self.accelerator
        seconds = max(time.perf_counter() - meter.started, 1e-9)
        loss = accelerator.reduce(meter.sums[:1] / max(meter.steps, 1), reduction="mean")
        tokens, examples = accelerator.reduce(meter.sums[1:].clone(), reduction="sum").tolist()
        self.totals["tokens"] += tokens
        self.totals["examples"] += examples
        self.totals["seconds"] += seconds
        record = {
            "step": self.position.step,
            "epoch": self.position.epoch,
            "loss": round(loss.item(), 6),
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": None if self.grad_norm is None else round(float(self.grad_norm), 6),
            "examples_per_s": round(examples / seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1),
            "elapsed_s": round(self._elapsed(), 3),
        }
        self.log.append(record)
        meter.reset()
        return record

    def _evaluate(self, progress: Any) -> None:
        with preserved_rng_states():  # evaluating must not change what training draws next
            self.eval_metrics = self.evaluate_fn(self.model, self.eval_loader, self.accelerator)
        self.model.train()
        self.evaluated_at = self.position.step
        self.log.append({"step": self.position.step, **self.eval_metrics})
        is_best = self._keep_if_best()
        if self.is_main:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in self.eval_metrics.items())
            progress.write(f"step {self.position.step}: {shown}{' (best)' if is_best else ''}")

    def _keep_if_best(self) -> bool:
        """With metric_for_best: save the weights to output_dir/best/ if this evaluation is the best."""
        name = self.args.metric_for_best
        if name is None:
            return False
        if name not in self.eval_metrics:
            raise ValueError(
                f"metric_for_best={name!r} is not a metric of the evaluation, which gives "
                f"{', '.join(sorted(self.eval_metrics))}."
            )
        value = self.eval_metrics[name]
        if self.best is not None:
            previous = self.best["value"]
            if not (value > previous if self.args.greater_is_better else value < previous):
                return False
        self.best = {
            "metric": name,
            "value": value,
            "step": self.position.step,
            "metrics": dict(self.eval_metrics),
        }
        if self.is_main:
            write_best(
                self.args.output_dir / BEST_DIR,
                self.accelerator.unwrap_model(self.model),
                self.best,
            )
        self.accelerator.wait_for_everyone()
        return True

    def save_checkpoint(self, progress: Any | None = None) -> None:
        """Every process's random state to the main one, which writes checkpoint-<step>/."""
        from accelerate.utils import gather_object

        accelerator = self.accelerator
        if accelerator.num_processes > 1:
            rng_states = gather_object([self.rng_after_step])
        else:
            rng_states = [self.rng_after_step]
        if self.is_main:
            self._write_checkpoint(rng_states)
            if progress is not None:
                progress.write(f"step {self.position.step}: saved {self.last_checkpoint}")
        accelerator.wait_for_everyone()

    def _write_checkpoint(self, rng_states: list[dict[str, Any]]) -> None:
        accelerator = self.accelerator
        training_state = {
            "format_version": STATE_FORMAT_VERSION,
            "step": self.position.step,
            "epoch": self.position.epoch,
            "batches_in_epoch": self.position.batches_in_epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
            "rng_states": rng_states,
            "elapsed_s": self._elapsed(),
            "num_examples": len(self.train_dataset),
            "num_processes": accelerator.num_processes,
            "args": self.args.to_dict(),
        }
        self.last_checkpoint = write_checkpoint(
            self.args.output_dir / f"{CHECKPOINT_PREFIX}{self.position.step}",
            accelerator.unwrap_model(self.model),
            training_state,
            self.args.keep_checkpoints,
        )
        self.saved_at = self.position.step

    def _save_after_interrupt(self, progress: Any) -> None:
        """Save the last complete step, without collectives: other processes may not have stopped.

        They resume with this process's random state (so their dropout masks
        differ from an uninterrupted run's); a single process resumes exactly.
        """
        self.optimizer.zero_grad(set_to_none=True)  # a half-accumulated step is dropped
        if not self.is_main:
            return
        if self.position.step > 0 and self.saved_at != self.position.step:
            self._write_checkpoint([self.rng_after_step])
        saved = (
            f"saved {self.last_checkpoint}. " if self.last_checkpoint else "nothing to save yet. "
        )
        progress.write(
            f"\nInterrupted after step {self.position.step}: {saved}To continue, run the same "
            "command with --resume (or TrainingArguments(..., resume=True))."
        )

    def _run_callbacks(self, step_loss: torch.Tensor) -> None:
        if not self.callbacks:
            return
        state = TrainState(
            step=self.position.step,
            max_steps=self.args.max_steps,
            epoch=self.position.epoch,
            loss=step_loss.item(),
            learning_rate=self.scheduler.get_last_lr()[0],
            eval_metrics=self.eval_metrics if self.evaluated_at == self.position.step else {},
        )
        for callback in self.callbacks:
            callback(state)

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def _result(self, interrupted: bool) -> TrainResult:
        run_time = time.perf_counter() - self.started
        model = self.accelerator.unwrap_model(self.model)
        self.accelerator.free_memory()  # drops accelerate's references to model and optimizer
        last_train = [r["loss"] for r in self.log.records if "loss" in r]
        return TrainResult(
            model=model,
            global_step=self.position.step,
            train_loss=last_train[-1] if last_train else None,
            eval_metrics=self.eval_metrics,
            log_history=list(self.log.records),
            elapsed_s=self.elapsed_before + run_time,
            tokens_per_s=self.totals["tokens"] / max(self.totals["seconds"], 1e-9),
            examples_per_s=self.totals["examples"] / max(self.totals["seconds"], 1e-9),
            last_checkpoint=self.last_checkpoint,
            interrupted=interrupted,
            mixed_precision=self.accelerator.mixed_precision,
            output_dir=self.args.output_dir,
            best=self.best,
        )


def _prepare_output_dir(args: TrainingArguments, is_main: bool) -> Path | None:
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


def _make_accelerator(args: TrainingArguments) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import GradientAccumulationPlugin

    mixed_precision = resolve_mixed_precision(args.mixed_precision)
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != mixed_precision:
        # Accelerate keeps one precision per process; a notebook that trains twice with two
        # precisions needs it forgotten (the process group, if any, is kept).
        AcceleratorState._reset_state()
    plugin = GradientAccumulationPlugin(
        num_steps=args.gradient_accumulation_steps,
        # A step is always gradient_accumulation_steps batches, even across an epoch's end,
        # so step numbers, and resuming, do not depend on the dataset's size.
        sync_with_dataloader=False,
    )
    # Launched as several processes (torchrun) on a machine without CUDA: accelerate runs
    # them as one CPU job over gloo only when told `cpu=True`; otherwise each trains alone.
    multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    return Accelerator(
        mixed_precision=mixed_precision, gradient_accumulation_plugin=plugin, cpu=multi_cpu
    )


def _progress_bar(args: TrainingArguments, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=args.max_steps,
        initial=initial,
        desc="train",
        unit="step",
        disable=not (enabled and args.show_progress),
        dynamic_ncols=True,
    )


def _warn_if_setup_changed(
    state: Mapping[str, Any], args: TrainingArguments, num_examples: int, num_processes: int
) -> None:
    """Resuming with other data or batch settings works, but is no longer the same run: say so."""
    saved = state.get("args", {})
    changes = [
        f"{name} {saved[name]} -> {value}"
        for name, value in (
            ("per_device_batch_size", args.per_device_batch_size),
            ("gradient_accumulation_steps", args.gradient_accumulation_steps),
            ("seed", args.seed),
            ("max_steps", args.max_steps),
            ("learning_rate", args.learning_rate),
        )
        if name in saved and saved[name] != value
    ]
    if state.get("num_examples") != num_examples:
        changes.append(f"training examples {state.get('num_examples')} -> {num_examples}")
    if state.get("num_processes") != num_processes:
        changes.append(f"processes {state.get('num_processes')} -> {num_processes}")
    if changes:
        warnings.warn(
            "Resuming with a changed setup (" + "; ".join(changes) + "): training continues, but "
            "not as the original run would have (data order or schedule differ).",
            UserWarning,
            stacklevel=4,
        )


# ----------------------------------------------------------------------------
# python -m bertcourse pretrain
# ----------------------------------------------------------------------------


def build_pretrain_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bertcourse pretrain",
        description="Pretrain a BERT from scratch with masked language modelling (+ next sentence "
        "prediction), then export a transformers directory that pipeline('fill-mask') loads.",
    )
    parser.add_argument("--size", default="tiny", help="model size: tiny, mini, small, base")
    parser.add_argument(
        "--corpus",
        default="offline",
        help="'offline' (Python's documentation), 'wikitext-103', or a local .txt/.csv/.tsv "
        "file or directory of .txt files",
    )
    parser.add_argument("--steps", type=int, required=True, help="optimizer steps")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--vocab",
        default="train:8000",
        help="'minilm' (MiniLM's 30,522 tokens), 'train:N' (a WordPiece vocabulary of N tokens "
        "trained on the corpus by the course's trainer; smaller vocabularies train faster on a "
        "CPU), 'tokenizers:N' (the same by the tokenizers library), or a vocab.txt path",
    )
    parser.add_argument(
        "--no-nsp", action="store_true", help="masked LM only (BertForMaskedLM, packed text)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--mlm-probability", type=float, default=0.15)
    parser.add_argument("--whole-word-mask", action="store_true")
    parser.add_argument("--eval-every", type=int, default=None, help="steps (default steps/10)")
    parser.add_argument("--save-every", type=int, default=None, help="steps (default eval-every)")
    parser.add_argument("--log-every", type=int, default=None, help="steps (default steps/50)")
    parser.add_argument("--eval-examples", type=int, default=512, help="validation examples used")
    parser.add_argument("--keep-checkpoints", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument(
        "--overwrite", action="store_true", help="start over in an --out that holds a run"
    )
    parser.add_argument("--mixed-precision", default="no", choices=MIXED_PRECISIONS)
    return parser


def load_pretraining_tokenizer(spec: str, train_texts: Callable[[], list[str]], out: Path) -> Any:
    """The tokenizer --vocab names; a trained vocabulary is trained once and kept in out/vocab.txt.

    'minilm': MiniLM's 30,522 tokens. 'train:N': N tokens learnt from the
    corpus by the course's WordPiece trainer (`train_wordpiece`).
    'tokenizers:N': the same size from the `tokenizers` library's trainer
    (`train_reference_wordpiece`), for comparison. Else a vocab.txt or a
    checkpoint directory.
    """
    from .tokenization import (
        BertTokenizer,
        save_vocab,
        train_reference_wordpiece,
        train_wordpiece,
    )

    if spec.lower() == "minilm":
        return BertTokenizer.from_pretrained("minilm")
    trainers = {"train": train_wordpiece, "tokenizers": train_reference_wordpiece}
    name, _, size = spec.partition(":")
    if name in trainers and size:
        if not size.isdigit():
            raise ValueError(f"--vocab {spec!r}: write {name}:N with a number, e.g. {name}:8000.")
        vocab_file = out / "vocab.txt"
        if not vocab_file.is_file():
            started = time.perf_counter()
            vocab = trainers[name](train_texts(), int(size))
            save_vocab(vocab, vocab_file)
            print(
                f"Trained a WordPiece vocabulary of {len(vocab):,} tokens "
                f"({trainers[name].__name__}) in {time.perf_counter() - started:.1f} s -> {vocab_file}"
            )
        return BertTokenizer(vocab_file)
    path = Path(spec).expanduser()
    if path.is_dir():
        return BertTokenizer.from_pretrained(path)
    if path.is_file():
        return BertTokenizer(path)
    raise FileNotFoundError(
        f"--vocab {spec!r} is neither 'minilm', 'train:N', 'tokenizers:N' nor an existing "
        "vocab.txt or checkpoint directory."
    )


def _corpus_splits(name: str) -> tuple[Any, Any]:
    """(train, validation) corpora; a local file is split by the package's document-id rule."""
    from .data import Corpus, is_validation_document, load_corpus

    path = Path(name).expanduser()
    if name == "offline" or not path.exists():
        return load_corpus(name, "train"), load_corpus(name, "validation")
    whole = load_corpus(path, "all")
    parts = [
        Corpus(f"{whole.name}/{split}", docs, whole.provenance, whole.license)
        for split, docs in (
            ("train", [d for d in whole.documents if not is_validation_document(d.id)]),
            ("validation", [d for d in whole.documents if is_validation_document(d.id)]),
        )
    ]
    if not parts[1].documents:  # a small file: hold out its last document
        parts = [
            Corpus(f"{whole.name}/train", whole.documents[:-1], whole.provenance, whole.license),
            Corpus(
                f"{whole.name}/validation", whole.documents[-1:], whole.provenance, whole.license
            ),
        ]
    return parts[0], parts[1]


def prepare_pretraining_dir(
    out: Path, setup: dict[str, Any], resume: bool, overwrite: bool
) -> None:
    """Check --out before the slow work; record the options that define the run.

    --resume with other data or model options would not continue the same
    run: refused. A new run where one exists needs --resume or --overwrite
    (the engine checks again). The trained vocabulary (out/vocab.txt) is
    reused only for the same corpus and --vocab.
    """
    path = out / "pretrain_setup.json"
    saved = json.loads(path.read_text()) if path.is_file() else None
    if resume and saved is not None:
        changed = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in setup.items() if saved.get(k) != v]
        if changed:
            raise ValueError(
                f"--resume with options that change the model or data ({'; '.join(changed)}). "
                "Use the original options, or a new --out."
            )
    has_run = latest_checkpoint(out) is not None or (out / LOG_JSONL).exists()
    if has_run and not (resume or overwrite):
        raise FileExistsError(
            f"{out} already holds a run: add --resume to continue it, --overwrite to start over "
            "there, or choose another --out."
        )
    if saved is not None and any(saved.get(k) != setup[k] for k in ("corpus", "vocab")):
        (out / "vocab.txt").unlink(missing_ok=True)  # trained for other text or another size
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(setup, indent=2) + "\n")


def export_for_transformers(model: nn.Module, tokenizer: Any, directory: str | os.PathLike) -> Path:
    """A transformers directory: config.json + model.safetensors + vocab.txt + tokenizer_config.json.

    `transformers.pipeline("fill-mask", model=directory)` loads it: the
    pretraining model's `cls.predictions.*` tensors are exactly those of
    BertForMaskedLM (the NSP head and pooler are ignored by that class).
    """
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_vocabulary(directory)
    return directory


def pretrain_main(argv: Sequence[str] | None = None) -> int:
    """`python -m bertcourse pretrain ...`: corpus -> vocabulary -> examples -> train -> export."""
    parser = build_pretrain_parser()
    options = parser.parse_args(argv)
    if options.steps < 1:
        parser.error("--steps must be at least 1")

    from . import data
    from .config import BertConfig
    from .model import BertForMaskedLM, BertForPreTraining

    out = Path(options.out)
    setup = {
        key: getattr(options, key)
        for key in ("size", "corpus", "vocab", "no_nsp", "seq_len", "mlm_probability",
                    "whole_word_mask", "seed", "eval_examples")
    }  # fmt: skip
    prepare_pretraining_dir(out, setup, options.resume, options.overwrite)

    started = time.perf_counter()
    train_corpus, validation_corpus = _corpus_splits(options.corpus)
    print(f"Corpus: {train_corpus.summary()}; validation: {validation_corpus.summary()}")
    tokenizer = load_pretraining_tokenizer(options.vocab, train_corpus.texts, out)

    documents = [d.sentences for d in train_corpus.documents]
    validation_documents = [d.sentences for d in validation_corpus.documents]
    if options.no_nsp:
        make_examples = partial(data.create_mlm_examples, max_seq_length=options.seq_len)
    else:
        make_examples = partial(data.create_nsp_examples, max_seq_length=options.seq_len)
    train_examples = make_examples(documents, tokenizer, seed=options.seed)
    eval_examples = make_examples(validation_documents, tokenizer, seed=options.seed + 1)
    eval_examples = eval_examples[: options.eval_examples]
    collator = data.PretrainingCollator(
        tokenizer, mlm_probability=options.mlm_probability, whole_word_mask=options.whole_word_mask
    )
    print(
        f"Examples: {len(train_examples):,} for training, {len(eval_examples):,} for evaluation "
        f"(sequences of at most {options.seq_len} tokens; built in "
        f"{time.perf_counter() - started:.1f} s)"
    )

    config = BertConfig.from_name(
        options.size,
        vocab_size=len(tokenizer),
        max_position_embeddings=max(512, options.seq_len),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(options.seed)
    model = (BertForMaskedLM if options.no_nsp else BertForPreTraining)(config)
    print(
        f"Model: {type(model).__name__} ({options.size}), {model.num_parameters() / 1e6:.1f}M "
        f"parameters, vocabulary {len(tokenizer):,}"
    )
    eval_every = options.eval_every or max(1, options.steps // 10)
    args = TrainingArguments(
        output_dir=out,
        max_steps=options.steps,
        per_device_batch_size=options.batch_size,
        learning_rate=options.lr,
        warmup_ratio=options.warmup_ratio,
        weight_decay=options.weight_decay,
        gradient_accumulation_steps=options.grad_accum,
        mixed_precision=options.mixed_precision,
        eval_every=eval_every,
        save_every=options.save_every or eval_every,
        log_every=options.log_every or max(1, options.steps // 50),
        keep_checkpoints=options.keep_checkpoints,
        seed=options.seed,
        resume=options.resume,
        overwrite_output_dir=options.overwrite,
        num_workers=options.num_workers,
    )
    # Sparse prediction (masked_only): the V-wide MLM head runs on the masked tokens only.
    result = train(
        model,
        train_examples,
        collator,
        args,
        eval_dataset=eval_examples or None,
        evaluate_fn=evaluate_pretraining,
        forward_kwargs={"masked_only": True},
    )
    is_main = int(os.environ.get("RANK", "0")) == 0
    if result.interrupted:
        return 130
    if is_main:
        _finish_pretraining(result, tokenizer, out)
    return 0


def _finish_pretraining(result: TrainResult, tokenizer: Any, out: Path) -> None:
    from .viz import plot_training_curves

    final = export_for_transformers(result.model, tokenizer, out / "final")
    figure = plot_training_curves(out / LOG_CSV)
    figure.savefig(out / "training_curves.png", dpi=120, bbox_inches="tight")
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in result.eval_metrics.items())
    print(
        f"Done: {result.global_step} steps, {result.elapsed_s:.0f} s, "
        f"{result.tokens_per_s:,.0f} tokens/s{'; ' + metrics if metrics else ''}\n"
        f"  checkpoints: {out}/{CHECKPOINT_PREFIX}<step>/ (resume with --resume)\n"
        f"  logs:        {out / LOG_CSV}, {out / LOG_JSONL}\n"
        f"  plot:        {out / 'training_curves.png'}\n"
        f"  model:       {final} (transformers.pipeline('fill-mask', model='{final}'))"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return pretrain_main(sys.argv[1:] if argv is None else argv)
