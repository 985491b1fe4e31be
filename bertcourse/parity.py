"""Where do two models first disagree? A forward hook on every module of the same name.

Our BERT and `transformers`' use the same module names
(`embeddings.word_embeddings`, `encoder.layer.0.attention.self`, ...), so the
output of each module in one model has a twin in the other. `compare_modules`
runs both models on the same inputs, records every module's output with a
forward hook, and lists, in the order our model ran them, how far each pair
of outputs is apart: over the whole output, and separately at the real tokens
and at the padding when the inputs have an attention mask.

    report = compare_modules(ours, reference, input_ids, attention_mask, token_type_ids)
    print(report)                        # the table
    report.first_divergence()            # the first module beyond tolerance, or None
    first_divergence(ours, reference, input_ids, attention_mask)   # the same, in one call

A hook fires when a module's forward returns, so a block fires after the
modules inside it, and the first module that disagrees is the innermost one
where the difference starts. Outputs are compared as follows: a tensor as it
is; a tuple by its first tensor (an attention block returns its output and,
maybe, its probabilities); a dataclass or `ModelOutput` by its tensor fields,
so the whole model's `loss` and `logits` (or `last_hidden_state` and
`pooler_output`) get rows of their own at the end of the table.

Both models run in eval mode (dropout off) and without gradients; their
modes are restored afterwards. Compare models that keep the padded
(B, T, ...) layout: a classifier that skips padding (`skip_padding`) packs
the real tokens, and its modules' outputs then differ in shape.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "ModuleDifference",
    "ParityReport",
    "compare_modules",
    "first_divergence",
]

# The course's parity standard: float32 outputs agree to 1e-5 (see bertcourse.model). The
# relative part lets a large output (logits, a loss) carry proportionally larger rounding.
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-5


@dataclass(frozen=True)
class ModuleDifference:
    """How far apart one module's outputs are in the two models.

    name: the module's name ("encoder.layer.0.attention.self"), or, for the
    whole model's output, the field ("loss", "logits"). shape: our output's
    shape. max_abs: the largest |ours - reference| over the output (inf when
    the shapes differ or only one side is NaN). real / padded: the same over
    the real tokens / the padding positions, for outputs laid out
    (batch, length, ...) like the attention mask; None otherwise, or when
    there is no such position. scale: the largest |reference| value, what a
    relative tolerance scales. note: why a row could not be compared.
    """

    name: str
    shape: tuple[int, ...]
    max_abs: float
    real: float | None = None
    padded: float | None = None
    scale: float = 0.0
    note: str = ""

    def differs(self, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> bool:
        """True if max_abs > atol + rtol * scale (always for inf or NaN)."""
        return not self.max_abs <= atol + rtol * self.scale


@dataclass
class ParityReport:
    """The rows of `compare_modules`, in our model's execution order, and what did not pair up.

    only_ours / only_reference: modules that ran in one model but have no
    twin that ran in the other (a function in one is a module in the other,
    say; or a planted change skipped a module). reordered: None, or the
    first pair (ours, reference) of names at which the two models ran their
    common modules in a different order.
    """

    rows: list[ModuleDifference]
    only_ours: list[str] = field(default_factory=list)
    only_reference: list[str] = field(default_factory=list)
    reordered: tuple[str, str] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, name: str) -> ModuleDifference:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(
            f"no row named {name!r}; names look like {', '.join(r.name for r in self.rows[:3])}"
        )

    @property
    def names(self) -> list[str]:
        return [row.name for row in self.rows]

    def first_divergence(
        self, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL
    ) -> ModuleDifference | None:
        """The first row, in execution order, whose difference exceeds the tolerance."""
        return next((row for row in self.rows if row.differs(atol, rtol)), None)

    def table(
        self,
        pattern: str | None = None,
        atol: float = DEFAULT_ATOL,
        rtol: float = DEFAULT_RTOL,
    ) -> str:
        """The report as text; `pattern` (a regular expression) keeps the rows whose name matches.

        Rows beyond the tolerance are marked ✗, the first of them "← first".
        """
        first = self.first_divergence(atol, rtol)
        rows = [r for r in self.rows if pattern is None or re.search(pattern, r.name)]
        width = max([len("module"), *(len(r.name) for r in rows)])
        lines = [f"{'module':{width}s}  {'max |diff|':>10s}  {'real':>8s}  {'padding':>8s}"]
        for row in rows:
            mark = ""
            if row.differs(atol, rtol):
                mark = "  ✗ ← first" if row is first else "  ✗"
            lines.append(
                f"{row.name:{width}s}  {_number(row.max_abs):>10s}  {_number(row.real):>8s}  "
                f"{_number(row.padded):>8s}{mark}{'  ' + row.note if row.note else ''}"
            )
        return "\n".join([*lines, *self.notes(atol, rtol)])

    def notes(self, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> list[str]:
        """One line each: the verdict, a change of execution order, unpaired modules."""
        first = self.first_divergence(atol, rtol)
        verdict = (
            f"all {len(self.rows)} outputs agree (tolerance {atol:g} + {rtol:g} x scale)"
            if first is None
            else f"first difference beyond tolerance: {first.name} ({_number(first.max_abs)})"
        )
        lines = [verdict]
        if self.reordered is not None:
            ours, reference = self.reordered
            lines.append(
                f"execution order differs: ours ran {ours} where the reference ran {reference}"
            )
        if self.only_ours:
            lines.append(f"ran only in ours: {_listing(self.only_ours)}")
        if self.only_reference:
            lines.append(f"ran only in the reference: {_listing(self.only_reference)}")
        return lines

    def __str__(self) -> str:
        return self.table()


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if math.isinf(value) or math.isnan(value):
        return str(value)
    return f"{value:.1e}"


def _listing(names: list[str], limit: int = 2) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


# ----------------------------------------------------------------------------
# Recording every module's output
# ----------------------------------------------------------------------------


def _output_tensors(output: Any) -> dict[str, torch.Tensor]:
    """The tensors of one module's output to compare: {"": tensor} or {field: tensor}."""
    if isinstance(output, torch.Tensor):
        return {"": output}
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        items = [(f.name, getattr(output, f.name)) for f in dataclasses.fields(output)]
    elif isinstance(output, Mapping):  # transformers' ModelOutput is an ordered dict
        items = list(output.items())
    elif isinstance(output, (tuple, list)):
        first = next((item for item in output if isinstance(item, torch.Tensor)), None)
        return {} if first is None else {"": first}
    else:
        return {}
    return {name: value for name, value in items if isinstance(value, torch.Tensor)}


@dataclass
class _Recording:
    outputs: dict[str, list[dict[str, torch.Tensor]]]  # module name -> one entry per call
    order: list[str]  # module names in the order of their first call


def _record(model: nn.Module, args: tuple, kwargs: dict[str, Any]) -> _Recording:
    recording = _Recording({}, [])

    def hook(name: str):
        def save(module: nn.Module, inputs: Any, output: Any) -> None:
            if name not in recording.outputs:
                recording.outputs[name] = []
                recording.order.append(name)
            tensors = _output_tensors(output).items()
            recording.outputs[name].append({k: v.detach().clone() for k, v in tensors})

        return save

    modules = model.named_modules()
    handles = [module.register_forward_hook(hook(name)) for name, module in modules]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return recording


def _attention_mask(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The (B, T) mask of the call: the attention_mask keyword or the second positional argument."""
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        return mask.bool()
    return None


# ----------------------------------------------------------------------------
# Comparing the recordings
# ----------------------------------------------------------------------------


def _max(values: torch.Tensor) -> float | None:
    return values.max().item() if values.numel() else None


def _difference(
    name: str, ours: torch.Tensor, reference: torch.Tensor, real_tokens: torch.Tensor | None
) -> ModuleDifference:
    shape = tuple(ours.shape)
    if ours.shape != reference.shape:
        if ours.numel() != reference.numel() or _squeezed(ours) != _squeezed(reference):
            note = f"shapes differ: {shape} vs {tuple(reference.shape)}"
            return ModuleDifference(name, shape, math.inf, note=note)
        reference = reference.reshape(ours.shape)  # (T, H) vs (1, T, H): the same numbers
    if not (ours.is_floating_point() and reference.is_floating_point()):
        ours, reference = ours.double(), reference.double()
    if ours.numel() == 0:
        return ModuleDifference(name, shape, 0.0)
    difference = (ours - reference).abs()
    largest = difference.max().item()
    if not math.isfinite(largest):  # equal infs, or NaN on both sides, count as equal
        same = (ours == reference) | (ours.isnan() & reference.isnan())
        difference = difference.masked_fill(same, 0.0).nan_to_num(nan=math.inf, posinf=math.inf)
        largest = difference.max().item()
    scale = reference.abs().nan_to_num(nan=0.0, posinf=math.inf).max().item()
    real = padded = None
    if real_tokens is not None and tuple(difference.shape[:2]) == tuple(real_tokens.shape):
        real, padded = _max(difference[real_tokens]), _max(difference[~real_tokens])
    return ModuleDifference(name, shape, largest, real, padded, scale)


def _squeezed(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(size for size in tensor.shape if size != 1)


def _pairs(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]):
    """(field, ours, reference) to compare: the same fields, or the first tensor of each."""
    if "" not in ours and "" not in reference:
        return [(name, ours[name], reference[name]) for name in ours if name in reference]
    if ours and reference:
        return [("", next(iter(ours.values())), next(iter(reference.values())))]
    return []


def _row_name(module: str, field_name: str, pairs: int) -> str:
    if not module:
        return field_name or "(output)"
    return f"{module}.{field_name}" if field_name and pairs > 1 else module


def _reordered(ours: _Recording, reference: _Recording) -> tuple[str, str] | None:
    ours_order = [name for name in ours.order if name in reference.outputs]
    reference_order = [name for name in reference.order if name in ours.outputs]
    return next(((a, b) for a, b in zip(ours_order, reference_order, strict=True) if a != b), None)


def compare_modules(
    ours: nn.Module, reference: nn.Module, *args: Any, **kwargs: Any
) -> ParityReport:
    """Run both models on the same inputs and compare every pair of same-named modules' outputs.

    args and kwargs go to both models unchanged, e.g. (input_ids,
    attention_mask, token_type_ids, labels=labels), or **batch for a
    tokenizer's output. The attention mask (the attention_mask keyword, or
    the second positional argument) splits each (batch, length, ...) output
    into real tokens and padding. Rows follow the order in which `ours` ran
    its modules; the whole model's output comes last. A module called
    several times gets a row per call ("name (call 2)").
    """
    ours_recording = _record(ours, args, kwargs)
    reference_recording = _record(reference, args, kwargs)
    real_tokens = _attention_mask(args, kwargs)
    rows = []
    root_rows = []
    for name in ours_recording.order:
        if name not in reference_recording.outputs:
            continue
        calls = zip(ours_recording.outputs[name], reference_recording.outputs[name], strict=False)
        for call, (ours_tensors, reference_tensors) in enumerate(calls, 1):
            pairs = _pairs(ours_tensors, reference_tensors)
            for field_name, ours_tensor, reference_tensor in pairs:
                row_name = _row_name(name, field_name, len(pairs))
                if call > 1:
                    row_name += f" (call {call})"
                row = _difference(row_name, ours_tensor, reference_tensor, real_tokens)
                (rows if name else root_rows).append(row)
    ran_in_ours, ran_in_reference = ours_recording.outputs, reference_recording.outputs
    return ParityReport(
        rows + root_rows,
        only_ours=[name for name in ours_recording.order if name not in ran_in_reference],
        only_reference=[name for name in reference_recording.order if name not in ran_in_ours],
        reordered=_reordered(ours_recording, reference_recording),
    )


def first_divergence(
    ours: nn.Module,
    reference: nn.Module,
    *args: Any,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    **kwargs: Any,
) -> ModuleDifference | None:
    """The first module, in our model's execution order, whose output differs beyond
    atol + rtol * (its largest reference value); None if every output agrees.

    Same arguments as `compare_modules`.
    """
    return compare_modules(ours, reference, *args, **kwargs).first_divergence(atol, rtol)
