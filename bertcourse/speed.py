"""Where the time of a BERT training step goes, and what bounds its speed (chapter 17).

The package's speed-ups live where they act (`speedups.py`, `attention.py`, the
`masked_only` heads, the length-grouped sampler); this module holds the tools that
*measure* a step and the arithmetic that explains the measurements:

- `profile_step` and `time_by_module_type`: the time of a training step (forward,
  backward and optimizer) split by the kind of layer that caused it (embeddings,
  Q/K/V projections, attention, feed-forward, LayerNorm and dropout, the heads, the
  loss, the optimizer), read from torch's profiler;
- `count_flops`: the floating-point operations a step really runs (torch's
  `FlopCounterMode`); `matmul_shapes`: the (m, k, n) of every matrix product of
  BERT's forward pass, from which the FLOPs by layer type follow;
- `arithmetic_intensity`: FLOPs per byte moved of a matrix product, the number the
  roofline model compares with a machine's balance; `matmul_flops_per_second` and
  `copy_bytes_per_second` measure the two sides of that balance on this machine;
- `length_batches` and `padding_fraction`: how much of a batch is padding when
  sentences are batched at random or grouped by length;
- `saved_tensor_bytes`: the memory autograd keeps for the backward pass, where the
  fused attention kernel saves its biggest amount.

Imports point down: this module uses the model, the attention module and the
training package's samplers; nothing in the library imports it.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from .attention import MultiHeadSelfAttention
from .config import BertConfig
from .model import (
    BertEmbeddings,
    BertIntermediate,
    BertLMPredictionHead,
    BertModel,
    BertOutput,
    BertPooler,
    BertSelfOutput,
)
from .training.sampling import EpochSampler, LengthGroupedEpochSampler

__all__ = [
    "MODULE_TYPES",
    "module_type",
    "OperatorTime",
    "profile_step",
    "time_by_module_type",
    "count_flops",
    "Matmul",
    "matmul_shapes",
    "arithmetic_intensity",
    "matmul_flops_per_second",
    "copy_bytes_per_second",
    "length_batches",
    "padding_fraction",
    "saved_tensor_bytes",
]

# The kinds of work in a BERT training step, in the order of a forward pass.
MODULE_TYPES = (
    "embeddings",
    "Q, K, V projections",
    "attention: scores, softmax, values",
    "attention output",
    "feed-forward",
    "LayerNorm + dropout",
    "MLM head",
    "pooler + NSP head",
    "loss",
    "optimizer",
    "other",
)

# Types whose module counts as a whole: the ops of their submodules are theirs.
_WHOLE_TYPES = ("MLM head", "pooler + NSP head")
_SCOPE = "module type: "  # prefix of the profiler scopes opened around each module
_STEP = "bertcourse.speed: training step"
_BACKWARD = "autograd::engine::evaluate_function: "
_OPTIMIZER = "Optimizer."  # torch's optimizers name their step and zero_grad scopes so


def module_type(name: str, module: nn.Module) -> str | None:
    """The type (one of `MODULE_TYPES`) of the work done in `module`'s own forward, or None.

    name: the module's qualified name in the model ("" for the model itself). Rules for the
    course's BERT: the MLM head (`cls.predictions`, transform and V-wide decoder) and the
    pooler / NSP classifier each count as a whole; a LayerNorm or dropout anywhere else is
    "LayerNorm + dropout"; the `query`/`key`/`value` layers are the Q, K, V projections; the
    attention module's own ops (scores, softmax, attention dropout, mixing the values) are
    attention; `BertSelfOutput` is the attention output projection and its residual;
    `BertIntermediate` and `BertOutput` the feed-forward block and its residual.
    The top-level model (name "") of a task head is "loss": what its forward computes
    outside its submodules is the loss (and, with `masked_only`, picking the masked
    positions). `BertModel`'s own ops (building the mask, packing the real tokens) are
    "other". None: the module's ops belong to the nearest enclosing module with a type.
    """
    last = name.rsplit(".", 1)[-1]
    if isinstance(module, BertLMPredictionHead):
        return "MLM head"
    if isinstance(module, BertPooler) or last == "seq_relationship":
        return "pooler + NSP head"
    if isinstance(module, BertEmbeddings):
        return "embeddings"
    if isinstance(module, MultiHeadSelfAttention):
        return "attention: scores, softmax, values"
    if isinstance(module, nn.Linear) and last in ("query", "key", "value"):
        return "Q, K, V projections"
    if isinstance(module, BertSelfOutput):
        return "attention output"
    if isinstance(module, (BertIntermediate, BertOutput)):
        return "feed-forward"
    if isinstance(module, (nn.LayerNorm, nn.Dropout)):
        return "LayerNorm + dropout"
    if isinstance(module, BertModel):
        return "other"
    if name == "":
        return "loss"
    return None


class _Scope:
    """Opens a profiler scope named after a module type around each call of a module."""

    def __init__(self, kind: str):
        self.name = _SCOPE + kind
        self.open: list[record_function] = []  # a stack: a module may run inside itself

    def enter(self, module: nn.Module, args: Any) -> None:
        scope = record_function(self.name)
        scope.__enter__()
        self.open.append(scope)

    def exit(self, module: nn.Module, args: Any, output: Any) -> None:
        self.open.pop().__exit__(None, None, None)


def _install_scopes(model: nn.Module) -> list[Any]:
    """Forward hooks that open a typed profiler scope around every typed module."""
    handles, whole = [], []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in whole):
            continue  # inside a head that counts as a whole
        kind = module_type(name, module)
        if kind is None:
            continue
        if kind in _WHOLE_TYPES:
            whole.append(name)
        scope = _Scope(kind)
        handles.append(module.register_forward_pre_hook(scope.enter))
        handles.append(module.register_forward_hook(scope.exit, always_call=True))
    return handles


@contextlib.contextmanager
def _quiet_kineto() -> Iterator[None]:
    """Silence the profiler backend's start/stop lines on stderr (Kineto reads its log level
    from the environment at each start), unless the user set KINETO_LOG_LEVEL."""
    if "KINETO_LOG_LEVEL" in os.environ:
        yield
        return
    os.environ["KINETO_LOG_LEVEL"] = "6"
    try:
        yield
    finally:
        del os.environ["KINETO_LOG_LEVEL"]


def _ancestors(event: Any):
    while event is not None:
        yield event
        event = event.cpu_parent


@dataclass(frozen=True)
class OperatorTime:
    """One profiled operator call: its own CPU time (without the operators it called)."""

    name: str  # the operator ("aten::addmm") or scope
    module_type: str  # one of MODULE_TYPES
    phase: str  # "forward", "backward", "optimizer" or "other"
    seconds: float


def profile_step(
    model: nn.Module, step: Callable[[], Any], steps: int = 2, warmup: int = 1
) -> list[OperatorTime]:
    """Every operator of `steps` training steps of `model`, each with its module type.

    step: runs one training step of `model` on the CPU (zero the gradients, forward,
    backward, optimizer step). It runs `warmup` times unprofiled, then `steps` times under
    torch's profiler. Each operator's own time (its time minus that of the operators it
    calls) goes to one type:

    - a forward operator to the type of the innermost module around it (`module_type`,
      applied through forward hooks that open a named profiler scope);
    - a backward operator to the type of the forward operator that recorded its autograd
      node: the profiler gives both the same sequence number;
    - the optimizer's `step` and `zero_grad` to "optimizer";
    - the rest (Python between modules, gradients accumulated into `.grad`, work outside
      the model) to "other".

    The own times of all the operators add up to the profiled time of the steps. The
    profiler adds a few microseconds to every operator, so read shares, not absolute times.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}.")
    for _ in range(warmup):
        step()
    handles = _install_scopes(model)
    try:
        with _quiet_kineto(), profile(activities=[ProfilerActivity.CPU]) as profiler:
            for _ in range(steps):
                with record_function(_STEP):
                    step()
    finally:
        for handle in handles:
            handle.remove()
    events = sorted(profiler.events(), key=lambda event: event.time_range.start)
    roots = [event for event in events if event.name == _STEP]
    if len(roots) != steps:
        raise RuntimeError(
            f"the profiler recorded {len(roots)} of {steps} steps: profile_step measures "
            "CPU steps run on the calling thread."
        )
    in_step = [event for event in events if any(p.name == _STEP for p in _ancestors(event))]
    # The op that recorded autograd node n is the last forward op with sequence number n.
    node_types: dict[tuple[int, int], str | None] = {}
    for event in in_step:
        if event.sequence_nr >= 0 and _phase(event) in ("forward", "other"):
            node_types[(event.thread, event.sequence_nr)] = _event_type(event, node_types)
    return [
        OperatorTime(
            event.name,
            _event_type(event, node_types) or "other",
            _phase(event),
            event.self_cpu_time_total * 1e-6,
        )
        for event in in_step
    ]


def time_by_module_type(operators: Sequence[OperatorTime], steps: int = 1) -> dict[str, float]:
    """Seconds per step in each module type (all of `MODULE_TYPES`, 0.0 where none ran),
    from the operators of `profile_step`; divide by the profiled `steps`."""
    seconds = dict.fromkeys(MODULE_TYPES, 0.0)
    for operator in operators:
        seconds[operator.module_type] += operator.seconds / steps
    return seconds


def _phase(event: Any) -> str:
    """forward, backward (inside the autograd engine), optimizer, or other (the step's own)."""
    for parent in _ancestors(event):
        if parent.name.startswith(_BACKWARD):
            return "backward"
        if parent.name.startswith(_OPTIMIZER):
            return "optimizer"
        if parent.name.startswith(_SCOPE):
            return "forward"
    return "other"


def _event_type(event: Any, node_types: dict[tuple[int, int], str | None]) -> str | None:
    """The type an operator's own time goes to (see `profile_step`)."""
    for parent in _ancestors(event):
        if parent.name.startswith(_SCOPE):
            return parent.name[len(_SCOPE) :]
        if parent.name.startswith(_BACKWARD):
            return node_types.get((parent.fwd_thread, parent.sequence_nr))
        if parent.name.startswith(_OPTIMIZER):
            return "optimizer"
    return None


def count_flops(step: Callable[[], Any]) -> int:
    """The floating-point operations `step()` runs, forward and backward, as torch counts them.

    `torch.utils.flop_counter.FlopCounterMode` counts the matrix products (mm, addmm, bmm,
    the fused attention kernels, convolutions), 2 FLOPs per multiply-add; elementwise
    operations (GELU, softmax, LayerNorm, dropout, the optimizer) and table lookups count 0.
    """
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


@dataclass(frozen=True)
class Matmul:
    """One kind of matrix product of a forward pass: (m, k) @ (k, n), done `count` times."""

    name: str
    module_type: str  # one of MODULE_TYPES
    m: int
    k: int
    n: int
    count: int  # over the whole forward pass: layers x (batch x heads for attention)

    @property
    def flops(self) -> int:
        """Forward FLOPs of all `count` products: 2 m k n each (a multiply and an add)."""
        return 2 * self.m * self.k * self.n * self.count


def matmul_shapes(
    config: BertConfig, batch_size: int, seq_len: int, predicted_tokens: int | None = None
) -> list[Matmul]:
    """Every matrix product of a BERT MLM forward pass on a (batch_size, seq_len) batch.

    tokens = batch_size * seq_len rows go through the projections and the feed-forward
    block, (tokens, H) @ (H, n); attention multiplies, for each sequence and head, the
    (T, d) queries by the (d, T) keys and the (T, T) probabilities by the (T, d) values;
    the MLM head's transform and its V-wide decoder run on `predicted_tokens` rows (all
    tokens by default: dense prediction; the masked ones with `masked_only`). Padding is
    computed like any token: these are the shapes of a dense step.
    The backward pass runs two products of the same size for each (the gradients of both
    inputs), so a training step costs 3x the forward FLOPs.
    """
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}.")
    tokens = batch_size * seq_len
    predicted = tokens if predicted_tokens is None else predicted_tokens
    if not 0 <= predicted <= tokens:
        raise ValueError(
            f"predicted_tokens must be in [0, {tokens}] (batch_size * seq_len), got {predicted}."
        )
    hidden, layers = config.hidden_size, config.num_hidden_layers
    heads, head_size = config.num_attention_heads, config.head_size
    width = config.intermediate_size
    per_head = layers * batch_size * heads
    return [
        Matmul("Q, K, V projections", "Q, K, V projections", tokens, hidden, hidden, 3 * layers),
        Matmul(
            "scores Q K^T", "attention: scores, softmax, values", seq_len, head_size, seq_len,
            per_head,
        ),
        Matmul(
            "probabilities @ V", "attention: scores, softmax, values", seq_len, seq_len,
            head_size, per_head,
        ),
        Matmul("attention output", "attention output", tokens, hidden, hidden, layers),
        Matmul("feed-forward in", "feed-forward", tokens, hidden, width, layers),
        Matmul("feed-forward out", "feed-forward", tokens, width, hidden, layers),
        Matmul("MLM transform", "MLM head", predicted, hidden, hidden, 1),
        Matmul("MLM decoder", "MLM head", predicted, hidden, config.vocab_size, 1),
    ]  # fmt: skip


def arithmetic_intensity(m: int, k: int, n: int, bytes_per_element: int = 4) -> float:
    """FLOPs per byte moved by an (m, k) @ (k, n) product: 2mkn / (bytes * (mk + kn + mn)).

    The bytes are the least a product must move: read both inputs and write the output
    once each. Above a machine's balance (peak FLOP/s over memory bytes/s) a product can
    be compute-bound; below it, memory bandwidth bounds it (the roofline model).
    """
    if min(m, k, n) < 1 or bytes_per_element < 1:
        raise ValueError(
            f"m, k, n and bytes_per_element must be >= 1, got {m}, {k}, {n}, {bytes_per_element}."
        )
    return 2 * m * k * n / (bytes_per_element * (m * k + k * n + m * n))


def matmul_flops_per_second(
    size: int = 2048, dtype: torch.dtype = torch.float32, repeats: int = 3
) -> float:
    """FLOP/s of a (size, size) @ (size, size) product on the CPU, the best of `repeats`."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up: thread pool, kernel choice
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def copy_bytes_per_second(megabytes: int = 256, repeats: int = 3) -> float:
    """Memory bandwidth of a large copy on the CPU: bytes read + written per second, best
    of `repeats`. A copy does no arithmetic: its speed is the memory's."""
    source = torch.ones(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    target.copy_(source)  # warm-up: touch every page
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - started)
    return 2 * source.nbytes / best


def length_batches(
    lengths: Sequence[int], batch_size: int, grouped: bool = False, seed: int = 0
) -> list[list[int]]:
    """The examples' indices, cut into the batches of one training epoch.

    grouped=False: a seeded random order (`EpochSampler`); grouped=True: batches of similar
    length in a random order (`LengthGroupedEpochSampler`), as `train(...,
    group_by_length=True)` draws them. The last batch may be smaller.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if grouped:
        sampler = LengthGroupedEpochSampler(list(lengths), batch_size, seed)
    else:
        sampler = EpochSampler(len(lengths), seed)
    order = [index for index, _, _ in sampler]
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def padding_fraction(
    lengths: Sequence[int],
    batch_size: int,
    grouped: bool = False,
    seed: int = 0,
    pad_to: int | None = None,
) -> float:
    """The fraction of padding tokens in one epoch of batches of `length_batches`.

    Each batch is padded to its own longest example (dynamic padding), or every batch
    to `pad_to` tokens (static padding, as `padding="max_length"` does); the fraction is
    padding tokens over all the positions of the padded batches.
    """
    if not lengths:
        raise ValueError("lengths is empty: give the token count of each example.")
    if pad_to is not None and pad_to < max(lengths):
        raise ValueError(
            f"pad_to={pad_to} is shorter than the longest example ({max(lengths)} tokens): "
            "truncate the examples first, or pad to at least their longest."
        )
    real = padded = 0
    for batch in length_batches(lengths, batch_size, grouped, seed):
        batch_lengths = [lengths[index] for index in batch]
        real += sum(batch_lengths)
        padded += len(batch) * (pad_to or max(batch_lengths))
    return 1.0 - real / padded


def saved_tensor_bytes(fn: Callable[[], Any], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the tensors autograd saves for the backward pass while `fn()` runs.

    Each storage counts once (several saved views of one tensor are one allocation), and
    inputs or weights saved for the backward count too, except the storages of the tensors
    in `exclude` (a model's parameters, say, which exist whether a step runs or not). This is
    the memory a training step holds between its forward and its backward pass, the part
    that grows with the batch.
    """
    storages: dict[int, int] = {}
    excluded = {tensor.untyped_storage().data_ptr() for tensor in exclude}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(storages.values())
