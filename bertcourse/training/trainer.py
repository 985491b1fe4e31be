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

The pieces live in the modules beside this one (arguments, optim, sampling,
checkpoints, evaluation); `python -m bertcourse pretrain` (`bertcourse.commands.pretrain`)
puts them together for BERT's pretraining.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import GradientAccumulationPlugin, gather_object, set_seed
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .arguments import TrainingArguments, resolve_mixed_precision
from .checkpoints import (
    BEST_DIR,
    CHECKPOINT_PREFIX,
    STATE_FORMAT_VERSION,
    MetricsLog,
    StopSignals,
    capture_rng_states,
    deferred_keyboard_interrupt,
    load_model_weights,
    load_training_state,
    prepare_output_dir,
    preserved_rng_states,
    read_best,
    restore_rng_states,
    write_best,
    write_checkpoint,
)
from .evaluation import evaluate_loss
from .optim import create_optimizer_and_schedule
from .sampling import make_dataloader

# ----------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------


__all__ = [
    "TrainingDivergedError",
    "TrainState",
    "TrainResult",
    "Position",
    "batch_stream",
    "count_tokens",
    "train",
    "Trainer",
]


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite: the run stops, saving and exporting nothing."""


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
    interrupted: bool  # stopped by Ctrl-C (SIGINT) or SIGTERM, after saving a checkpoint
    mixed_precision: str
    output_dir: Path
    # With metric_for_best: {"metric", "value", "step", "metrics"} of the best evaluation,
    # whose weights are in output_dir/best/.
    best: dict[str, Any] | None = None
    stop_signal: int | None = None  # the signal that interrupted it (signal.SIGINT, SIGTERM)


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
    model: nn.Module, train_dataset: Any, collate_fn: Callable, args: TrainingArguments, **options
) -> TrainResult:
    """Train `model` for args.max_steps optimizer steps; returns a TrainResult.

    `Trainer(model, train_dataset, collate_fn, args, **options).train()`: the
    options are Trainer's (eval_dataset, evaluate_fn, forward_kwargs, callbacks).
    """
    return Trainer(model, train_dataset, collate_fn, args, **options).train()


class Trainer:
    """One training run: set up (or resume) when made, then `train()` loops over steps.

    model(**batch, **forward_kwargs) must return an object with `.loss`
    (every head of this package does); forward_kwargs={"masked_only": True}
    turns on sparse MLM prediction for the pretraining heads. collate_fn
    turns a list of dataset items into that batch (a dict of tensors with
    input_ids); if it takes a `generator` argument, its randomness (masking)
    is seeded per batch, so a run resumes exactly. evaluate_fn(model,
    eval_dataloader, accelerator) -> metrics (default `evaluate_loss`) runs
    every args.eval_every steps and after the last one, on batches made by
    eval_collate_fn (default collate_fn; pretraining evaluates at BERT's 15%
    masking whatever rate it trains at). Each callback gets a
    TrainState after every step. A KeyboardInterrupt, from Ctrl-C or a
    callback, saves a checkpoint and ends the run with `interrupted=True`.
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataset: Any,
        collate_fn: Callable,
        args: TrainingArguments,
        *,
        eval_dataset: Any | None = None,
        evaluate_fn: Callable[[nn.Module, DataLoader, Any], dict[str, float]] | None = None,
        eval_collate_fn: Callable | None = None,
        forward_kwargs: Mapping[str, Any] | None = None,
        callbacks: Sequence[Callable[[TrainState], None]] = (),
    ):
        self.args = args
        self.num_examples = len(train_dataset)
        self.evaluate_fn = evaluate_fn or (evaluate_loss if eval_dataset is not None else None)
        self.forward_kwargs = dict(forward_kwargs or {})
        self.callbacks = list(callbacks)
        self.accelerator = accelerator = _make_accelerator(args)
        self.is_main = accelerator.is_main_process

        resume_from, state = self._resume_point()
        self.position, self.elapsed_before = Position(), 0.0
        if state is not None:
            self.position = Position(state["step"], state["epoch"], state["batches_in_epoch"])
            self.elapsed_before = state["elapsed_s"]
            load_model_weights(model, resume_from)
        if self.position.step > args.max_steps:
            raise ValueError(
                f"{resume_from} is at step {self.position.step}, beyond max_steps="
                f"{args.max_steps}: resume with at least {self.position.step} steps."
            )

        train_loader, eval_loader = _make_loaders(
            args, train_dataset, collate_fn, eval_dataset, eval_collate_fn or collate_fn
        )
        model.train()
        optimizer, self.scheduler = create_optimizer_and_schedule(model, args)
        self.model, self.optimizer, self.train_loader = accelerator.prepare(
            model, optimizer, train_loader
        )
        self.eval_loader = accelerator.prepare(eval_loader) if eval_loader is not None else None
        if state is not None:
            self._restore(state)

        # What the loop updates as it goes.
        self.rng_after_step = capture_rng_states()
        self.grad_norm: torch.Tensor | None = None
        self.eval_metrics: dict[str, float] = {}
        self.evaluated_at = -1
        # The first step whose loss was NaN or infinite (-1: none), kept on the device and read
        # only when the run logs, evaluates or saves, so that training does not wait for it.
        self.first_non_finite = torch.full((), -1, dtype=torch.long, device=accelerator.device)
        self.stop_signal: int | None = None
        self.last_checkpoint: Path | None = resume_from
        self.saved_at = self.position.step if resume_from is not None else -1
        self.totals = {"tokens": 0.0, "examples": 0.0, "seconds": 0.0}
        self.started = time.perf_counter()  # reset when train() starts
        self.log = MetricsLog(args.output_dir, enabled=self.is_main)
        self.best: dict[str, Any] | None = None
        if resume_from is not None:
            self.log.load(up_to_step=self.position.step)
            best = read_best(args.output_dir)
            if best is not None and best["step"] <= self.position.step:
                self.best = best
            if self.position.step == args.max_steps:  # stopped after its last checkpoint
                self.eval_metrics = self._logged_evaluation(self.position.step)
        if self.is_main:
            self._print_plan(resume_from)

    # -- the run -----------------------------------------------------------------------
    def train(self) -> TrainResult:
        args, accelerator = self.args, self.accelerator
        self.started = time.perf_counter()
        meter = _Meter(accelerator.device)
        stream = batch_stream(self.train_loader, accelerator, self.position)
        progress = _progress_bar(args, self.position.step, enabled=self.is_main)
        interrupted = False
        try:
            with StopSignals() as stops:
                self._loop(stream, meter, progress, stops)
            if self.eval_loader is not None and not self.eval_metrics:  # resumed when complete
                self._evaluate(progress)
        except KeyboardInterrupt as stop:
            interrupted = True
            self.stop_signal = getattr(stop, "signum", signal.SIGINT)
            self._save_after_interrupt(progress)
        finally:
            progress.close()
            stream.close()
        return self._result(interrupted)

    def _loop(self, stream: Iterator, meter: _Meter, progress: Any, stops: StopSignals) -> None:
        args = self.args
        while self.position.step < args.max_steps:
            stops.check()  # a safe point: the last step is complete, logged and saved if due
            step_loss = self._optimizer_step(stream, meter)
            step = self.position.step
            progress.update(1)
            logs = self._due(args.log_every, step)
            evaluates = self.eval_loader is not None and self._due(args.eval_every, step)
            saves = self._due(args.save_every, step)
            if logs or evaluates or saves:
                self._check_finite()  # before anything is logged, evaluated or saved
            if logs:
                record = self._log_training(meter)
                progress.set_postfix(
                    loss=f"{record['loss']:.3f}",
                    lr=f"{record['lr']:.2e}",
                    tok_s=f"{record['tokens_per_s']:,.0f}",
                )
            paused = time.perf_counter()
            if evaluates:
                self._evaluate(progress)
            if saves:
                self.save_checkpoint(progress)
            meter.started += time.perf_counter() - paused  # throughput counts training only
            self._run_callbacks(step_loss)

    def _check_finite(self, collective: bool = True) -> None:
        """Stop a run whose loss became NaN or infinite, before it logs, evaluates or saves it."""
        first = self.first_non_finite.reshape(1)
        if collective and self.accelerator.num_processes > 1:
            first = self.accelerator.gather(first)
        bad = [int(step) for step in first.tolist() if step >= 0]
        if not bad:
            return
        kept = (
            f"the last checkpoint, {self.last_checkpoint}, is from before it and unharmed"
            if self.last_checkpoint is not None
            else "no checkpoint had been saved yet"
        )
        raise TrainingDivergedError(
            f"the training loss became NaN or infinite at step {min(bad)} (learning rate "
            f"{self.args.learning_rate:g} at its peak): the run diverged and stops, saving and "
            f"exporting nothing; {kept}. Lower the learning rate (--lr) or lengthen the warm-up "
            "(--warmup-ratio), and start again (--overwrite)."
        )

    def _logged_evaluation(self, step: int) -> dict[str, float]:
        """The evaluation the log holds for `step` (a run resumed after its last step)."""
        rows = [r for r in self.log.records if r.get("step") == step]
        return {k: v for r in rows for k, v in r.items() if k.startswith("eval_")}

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
                    self._note_non_finite(step_loss)
                    with deferred_keyboard_interrupt():
                        self._update()
                        self.position = Position(self.position.step + 1, epoch, batches_in_epoch)
                        self.rng_after_step = capture_rng_states()
        meter.add_step(step_loss)
        return step_loss

    def _note_non_finite(self, step_loss: torch.Tensor) -> None:
        """Remember the first step with a NaN or infinite loss, on the device (no wait)."""
        first = self.first_non_finite
        newly_bad = ~torch.isfinite(step_loss) & (first < 0)
        self.first_non_finite = torch.where(newly_bad, self.position.step + 1, first)

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
    def _resume_point(self) -> tuple[Path | None, dict[str, Any] | None]:
        """The checkpoint to continue from and its training state, or (None, None).

        Also seeds every generator (a resumed run replaces them with the
        checkpoint's in `_restore`).
        """
        args, accelerator = self.args, self.accelerator
        if self.is_main:
            args.output_dir.mkdir(parents=True, exist_ok=True)
        resume_from = prepare_output_dir(args, self.is_main)
        accelerator.wait_for_everyone()
        set_seed(args.seed)  # python, numpy, torch and CUDA
        if resume_from is None:
            return None, None
        state = load_training_state(resume_from)
        _warn_if_setup_changed(state, args, self.num_examples, accelerator.num_processes)
        return resume_from, state

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
            f"{self.num_examples:,} examples, {args.max_steps:,} steps of {global_batch} "
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
            "num_examples": self.num_examples,
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
            self._check_finite(collective=False)  # a diverged run saves nothing
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
            stop_signal=self.stop_signal,
            mixed_precision=self.accelerator.mixed_precision,
            output_dir=self.args.output_dir,
            best=self.best,
        )


def _make_loaders(
    args: TrainingArguments,
    train_dataset: Any,
    collate_fn: Callable,
    eval_dataset: Any | None,
    eval_collate_fn: Callable,
) -> tuple[DataLoader, DataLoader | None]:
    """The training loader (shuffled, full batches only) and the evaluation loader (if any)."""
    train_loader = make_dataloader(
        train_dataset,
        collate_fn,
        args.per_device_batch_size,
        args.seed,
        shuffle=True,
        drop_last=True,  # every step sees the same number of examples
        num_workers=args.num_workers,
        group_by_length=args.group_by_length,
    )
    if len(train_loader) == 0:
        raise ValueError(
            f"The training set has {len(train_dataset)} examples, fewer than one batch "
            f"of {args.per_device_batch_size}: lower per_device_batch_size or add data."
        )
    if eval_dataset is None:
        return train_loader, None
    eval_loader = make_dataloader(
        eval_dataset,
        eval_collate_fn,
        args.per_device_batch_size,
        args.seed + 1,  # a fixed masking seed: every evaluation masks the same tokens
        shuffle=False,
        drop_last=False,
        num_workers=args.num_workers,
    )
    return train_loader, eval_loader


def _make_accelerator(args: TrainingArguments) -> Any:
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
