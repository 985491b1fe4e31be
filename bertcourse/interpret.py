"""Looking inside BERT: hidden states, attention patterns, attributions and probes.

Five ways to ask a trained encoder what it does, each a few small functions:

Hidden states (`hidden_states_per_layer`).
    The embedding output and every layer's output, (B, T, H) each, by running
    the embeddings and the layers one at a time: what `transformers` returns
    with `output_hidden_states=True`.

Attention patterns (`attention_statistics`, `AttentionStatistics`), after Clark et al. 2019,
"What Does BERT Look At?".
    For every head, the average attention a query gives to [CLS], to [SEP], to
    the previous and the next token, and to the other pieces of its own word,
    and the entropy of its attention; `patterns()` names each head after what
    dominates. `attention_rollout` (Abnar & Zuidema 2020) follows attention
    through the layers, the residual connection counted as half of it.

Gradient attributions (`input_x_gradient`, `integrated_gradients`, `token_attributions`).
    How much each input dimension moved the output: the gradient times the
    input, or the gradient integrated along the straight line from a baseline
    (Sundararajan et al. 2017), with captum's quadrature rules. For BERT the
    input is the word embeddings (`embedding_forward`); a token's score sums
    its embedding's attributions.

Is attention an explanation? (`permuted_attention`), after Jain & Wallace 2019.
    Inside the context manager every chosen layer shuffles each query's
    attention weights among its real keys before they mix the values: if the
    prediction barely moves, the weights were not what it rested on.
    `rank_correlation` (Spearman's rho) compares two rankings of the tokens.

Probes (`word_features`, `control_labels`, `train_probe`, `probe_layers`), after
Hewitt & Liang 2019, "Designing and Interpreting Probes with Control Tasks".
    A linear classifier reads a label (a tag) from each layer's word vectors;
    the same probe on a control task, a random label per word type, measures
    what it can memorise. Selectivity, the gap between the two, is the part
    of the accuracy that the representation, not the probe, deserves.

Everything here is written from scratch; the tests compare it with
`transformers` (hidden states), `captum` (attributions) and `scipy` (ranks).
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .embeddings import _batches_by_length
from .model import BertForSequenceClassification, BertModel, encoder_of

__all__ = [
    "hidden_states_per_layer",
    "PATTERNS",
    "AttentionStatistics",
    "attention_statistics_from_maps",
    "attention_statistics",
    "attention_rollout",
    "IG_METHODS",
    "integration_points",
    "input_x_gradient",
    "integrated_gradients",
    "embedding_forward",
    "TokenAttribution",
    "token_attributions",
    "permuted_attention",
    "rank_correlation",
    "word_features",
    "control_labels",
    "train_probe",
    "probe_layers",
]

Target = int | Sequence[int] | torch.Tensor | None


def _require_eval(model: torch.nn.Module, what: str) -> None:
    if model.training:
        raise ValueError(
            f"{what} needs the model in evaluation mode: in training mode dropout makes every "
            "run different. Call model.eval() first."
        )


# ----------------------------------------------------------------------------
# Hidden states
# ----------------------------------------------------------------------------


def hidden_states_per_layer(
    model: BertModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """The embedding output, then the output of each of the L layers: L + 1 tensors (B, T, H).

    input_ids, attention_mask, token_type_ids: (B, T), as for the model. Runs
    `model.embeddings` and each `model.encoder.layer[i]` on the whole padded
    batch (no padding skipped), so the result equals `transformers`'
    `output_hidden_states=True`; padding positions hold values no one reads.
    A task model (with a `bert` encoder) is accepted too. Gradients are
    tracked as usual: wrap the call in `torch.no_grad()` to save memory.
    """
    bert = encoder_of(model)
    if input_ids.dim() != 2:
        raise ValueError(
            f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}; "
            "for one sentence use input_ids.unsqueeze(0)."
        )
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    hidden_states = bert.embeddings(input_ids, token_type_ids)  # (B, T, H)
    mask = bert.extended_attention_mask(attention_mask, hidden_states.dtype)  # (B, 1, 1, T)
    states = [hidden_states]
    for layer in bert.encoder.layer:
        hidden_states, _ = layer(hidden_states, mask)  # (B, T, H)
        states.append(hidden_states)
    return tuple(states)


# ----------------------------------------------------------------------------
# Attention statistics (Clark et al. 2019)
# ----------------------------------------------------------------------------

# The patterns a head can be named after, in the order `patterns()` checks them.
PATTERNS = ("[CLS]", "[SEP]", "previous", "next", "same word")
_ALL_PATTERNS = (*PATTERNS, "broad", "mixed")


@dataclass
class AttentionStatistics:
    """What each head looks at, averaged over every real query token of a corpus.

    Each statistic is an (L, h) tensor (layers x heads), float64:
    to_cls, to_sep: the attention weight a query puts on [CLS], on [SEP] (all of them);
    to_previous, to_next: its weight on the key just before (i - 1), just after (i + 1)
        (0 for the first and the last token, which have none);
    to_same_word: its total weight on the *other* pieces of its own word, averaged over
        the `num_word_queries` queries whose word has more than one piece (NaN if none);
    entropy: the entropy (nats) of its distribution over the keys.
    num_queries: the real tokens averaged over; mean_log_keys: the mean over queries of
    log(number of real keys), the entropy of a head that attends uniformly.
    """

    to_cls: torch.Tensor
    to_sep: torch.Tensor
    to_previous: torch.Tensor
    to_next: torch.Tensor
    to_same_word: torch.Tensor
    entropy: torch.Tensor
    num_queries: int
    num_word_queries: int
    mean_log_keys: float

    @property
    def num_layers(self) -> int:
        return self.to_cls.shape[0]

    @property
    def num_heads(self) -> int:
        return self.to_cls.shape[1]

    def patterns(self, threshold: float = 0.5, broad_fraction: float = 0.7) -> list[list[str]]:
        """A name per head, (L, h) nested lists.

        The largest of the mean weights on "[CLS]", "[SEP]", "previous",
        "next" and "same word" names the head if it is at least `threshold`;
        otherwise the head is "broad" when its mean entropy is at least
        `broad_fraction` of `mean_log_keys` (uniform attention has all of it),
        and "mixed" when it is not.
        """
        weights = torch.stack(
            [self.to_cls, self.to_sep, self.to_previous, self.to_next, self.to_same_word], dim=-1
        ).nan_to_num(nan=-math.inf)  # (L, h, 5)
        best_weight, best = weights.max(dim=-1)  # (L, h)
        names = []
        for layer in range(self.num_layers):
            row = []
            for head in range(self.num_heads):
                if best_weight[layer, head] >= threshold:
                    row.append(PATTERNS[int(best[layer, head])])
                elif self.entropy[layer, head] >= broad_fraction * self.mean_log_keys:
                    row.append("broad")
                else:
                    row.append("mixed")
            names.append(row)
        return names

    def summary(self, threshold: float = 0.5, broad_fraction: float = 0.7) -> dict[str, int]:
        """How many heads `patterns()` gives each name (every name, zeros included)."""
        counts = dict.fromkeys(_ALL_PATTERNS, 0)
        for row in self.patterns(threshold, broad_fraction):
            for name in row:
                counts[name] += 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (NaN as None), ready for json.dump."""

        def plain(values: torch.Tensor) -> list[list[float | None]]:
            return [[None if math.isnan(v) else float(v) for v in row] for row in values.tolist()]

        return {
            "to_cls": plain(self.to_cls),
            "to_sep": plain(self.to_sep),
            "to_previous": plain(self.to_previous),
            "to_next": plain(self.to_next),
            "to_same_word": plain(self.to_same_word),
            "entropy": plain(self.entropy),
            "num_queries": self.num_queries,
            "num_word_queries": self.num_word_queries,
            "mean_log_keys": self.mean_log_keys,
        }


_SUMMED = ("to_cls", "to_sep", "to_previous", "to_next", "to_same_word", "entropy")


def _attention_sums(
    attentions: Sequence[torch.Tensor],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    word_ids: torch.Tensor,
    cls_id: int,
    sep_id: int,
) -> dict[str, torch.Tensor]:
    """The statistics of one batch as sums over its queries, so batches add up."""
    if len(attentions) == 0:
        raise ValueError("attentions is empty: give one (B, h, T, T) map per layer.")
    batch, length = input_ids.shape
    if word_ids.shape != input_ids.shape:
        raise ValueError(
            f"word_ids must be (batch, length) like input_ids {tuple(input_ids.shape)}, got "
            f"{tuple(word_ids.shape)}."
        )
    real = (
        torch.ones_like(input_ids, dtype=torch.bool)
        if attention_mask is None
        else (attention_mask.bool())
    )  # (B, T)
    queries = real[:, None, :].to(torch.float64)  # (B, 1, T): broadcast over heads
    is_cls = (input_ids == cls_id)[:, None, None, :]  # (B, 1, 1, T) keys
    is_sep = (input_ids == sep_id)[:, None, None, :]
    eye = torch.eye(length, dtype=torch.bool, device=input_ids.device)
    same_word = (word_ids[:, :, None] == word_ids[:, None, :]) & (word_ids >= 0)[:, :, None]
    same_word = same_word & ~eye & real[:, None, :] & real[:, :, None]  # (B, T, T)
    word_queries = (same_word.any(-1) & real)[:, None, :].to(torch.float64)  # (B, 1, T)

    def over_queries(per_query: torch.Tensor, weights: torch.Tensor = queries) -> torch.Tensor:
        return (per_query.to(torch.float64) * weights).sum(dim=(0, 2))  # (h,)

    sums: dict[str, list[torch.Tensor]] = {name: [] for name in _SUMMED}
    for layer, probs in enumerate(attentions):
        if probs.dim() != 4 or probs.shape[0] != batch or probs.shape[2:] != (length, length):
            raise ValueError(
                f"attentions[{layer}] has shape {tuple(probs.shape)}; expected (batch, heads, "
                f"length, length) = ({batch}, h, {length}, {length}) to match input_ids."
            )
        probs = probs.detach()
        previous = probs.diagonal(offset=-1, dim1=-2, dim2=-1)  # (B, h, T-1): query i+1, key i
        following = probs.diagonal(offset=1, dim1=-2, dim2=-1)  # (B, h, T-1): query i, key i+1
        sums["to_cls"].append(over_queries((probs * is_cls).sum(-1)))
        sums["to_sep"].append(over_queries((probs * is_sep).sum(-1)))
        sums["to_previous"].append(over_queries(previous, queries[..., 1:]))
        sums["to_next"].append(over_queries(following, queries[..., :-1]))
        sums["to_same_word"].append(
            over_queries((probs * same_word[:, None]).sum(-1), word_queries)
        )
        sums["entropy"].append(over_queries(torch.special.entr(probs).sum(-1)))
    keys_per_row = real.sum(-1).to(torch.float64)  # (B,): every query of a row has as many keys
    result = {name: torch.stack(values) for name, values in sums.items()}  # (L, h) each
    result["num_queries"] = keys_per_row.sum()
    result["num_word_queries"] = word_queries.sum()
    result["sum_log_keys"] = (keys_per_row * keys_per_row.clamp_min(1).log()).sum()
    return result


def _statistics_from_sums(sums: dict[str, torch.Tensor]) -> AttentionStatistics:
    queries = float(sums["num_queries"])
    word_queries = float(sums["num_word_queries"])
    if queries == 0:
        raise ValueError("No real query tokens: every position of the batch is padding.")
    means = {name: sums[name] / queries for name in _SUMMED if name != "to_same_word"}
    same_word = (
        sums["to_same_word"] / word_queries if word_queries else sums["to_same_word"] * (math.nan)
    )
    return AttentionStatistics(
        to_same_word=same_word,
        num_queries=int(queries),
        num_word_queries=int(word_queries),
        mean_log_keys=float(sums["sum_log_keys"]) / queries,
        **means,
    )


def attention_statistics_from_maps(
    attentions: Sequence[torch.Tensor],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    word_ids: torch.Tensor,
    cls_id: int,
    sep_id: int,
) -> AttentionStatistics:
    """The statistics of `AttentionStatistics` for given attention maps.

    attentions: one (B, h, T, T) map per layer (query rows, key columns), as
    `model(..., output_attentions=True).attentions`; input_ids, attention_mask
    (1 real, 0 padding; None: no padding) and word_ids: (B, T). word_ids gives
    each token the index of its word (unique within a row) and -1 at special
    tokens and padding. Only real tokens count as queries; cls_id and sep_id
    pick the [CLS] and [SEP] keys.
    """
    return _statistics_from_sums(
        _attention_sums(attentions, input_ids, attention_mask, word_ids, cls_id, sep_id)
    )


def _word_ids_tensor(encoding: Any, rows: int) -> torch.Tensor:
    """(B, T) word index per token, -1 where the tokenizer gives None (specials, padding)."""
    return torch.tensor(
        [[-1 if w is None else w for w in encoding.word_ids(row)] for row in range(rows)]
    )


def attention_statistics(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    max_length: int = 128,
) -> AttentionStatistics:
    """Run the model on `texts` (one sentence each) and gather `AttentionStatistics`.

    model: a BertModel or a task model in eval mode; tokenizer: the course's
    BertTokenizer (or a `transformers` fast tokenizer), whose word ids
    (`return_offsets_mapping=True`) tell which pieces form a word. Texts are
    truncated to max_length tokens and run in batches of batch_size.
    """
    _require_eval(model, "attention_statistics")
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings; for one text use [text].")
    total: dict[str, torch.Tensor] | None = None
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        encoding = tokenizer(
            chunk,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
            return_offsets_mapping=True,
        )
        input_ids, mask = encoding["input_ids"], encoding["attention_mask"]
        device = next(model.parameters()).device
        with torch.no_grad():
            out = model(
                input_ids.to(device),
                mask.to(device),
                encoding["token_type_ids"].to(device),
                output_attentions=True,
            )
        sums = _attention_sums(
            [a.cpu() for a in out.attentions],
            input_ids,
            mask,
            _word_ids_tensor(encoding, len(chunk)),
            tokenizer.cls_token_id,
            tokenizer.sep_token_id,
        )
        total = sums if total is None else {k: total[k] + v for k, v in sums.items()}
    if total is None:
        raise ValueError("texts is empty: give at least one text.")
    return _statistics_from_sums(total)


# ----------------------------------------------------------------------------
# Attention rollout (Abnar & Zuidema 2020)
# ----------------------------------------------------------------------------


def attention_rollout(
    attentions: Sequence[torch.Tensor],
    attention_mask: torch.Tensor | None = None,
    *,
    residual: bool = True,
) -> torch.Tensor:
    """How much each input token flows into each position at the top: (B, T, T).

    attentions: one (B, h, T, T) map per layer, first layer first;
    attention_mask (B, T): 1 at real tokens, 0 at padding (None: no padding).
    Per layer: A, the mean over heads; padding keys set to 0; with `residual`,
    A = 0.5 A + 0.5 I (the skip connection carries half of each token); padded
    query rows set to 0; every other row renormalised to sum to 1. The rollout
    is the product from the first layer up, R = A_L @ ... @ A_1: row i of R
    says how much of each input token reaches position i. Real rows sum to 1;
    padded rows and columns are 0.
    """
    if len(attentions) == 0:
        raise ValueError("attentions is empty: give one (B, h, T, T) map per layer.")
    rollout = None
    for layer, probs in enumerate(attentions):
        if probs.dim() != 4 or probs.shape[-1] != probs.shape[-2]:
            raise ValueError(
                f"attentions[{layer}] has shape {tuple(probs.shape)}, expected (batch, heads, "
                "length, length)."
            )
        mixed = probs.mean(dim=1)  # (B, T, T)
        if attention_mask is not None:
            real = attention_mask.to(mixed.dtype)  # (B, T)
            mixed = mixed * real[:, None, :]  # padding keys
        if residual:
            identity = torch.eye(mixed.shape[-1], dtype=mixed.dtype, device=mixed.device)
            mixed = 0.5 * mixed + 0.5 * identity
        if attention_mask is not None:
            mixed = mixed * real[:, :, None]  # padded query rows
        row_sums = mixed.sum(dim=-1, keepdim=True)  # (B, T, 1)
        mixed = mixed / torch.where(row_sums > 0, row_sums, torch.ones_like(row_sums))
        rollout = mixed if rollout is None else mixed @ rollout  # (B, T, T)
    return rollout


# ----------------------------------------------------------------------------
# Gradient attributions
# ----------------------------------------------------------------------------

IG_METHODS = (
    "gausslegendre",
    "riemann_trapezoid",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
)


def integration_points(
    n_steps: int, method: str = "gausslegendre"
) -> tuple[list[float], list[float]]:
    """(alphas, weights): where on the path [0, 1] the gradient is taken, and its weight.

    The integral of g over [0, 1] is approximated by sum_k weights[k] g(alphas[k]).
    The rules and their points are captum's:
    gausslegendre: Gauss-Legendre nodes and weights (exact for polynomials of
        degree 2 n - 1), scaled from [-1, 1] to [0, 1];
    riemann_left / right / middle: alphas k/n, (k+1)/n, (k+1/2)/n for k = 0..n-1,
        weights 1/n;
    riemann_trapezoid: alphas k/(n-1) for k = 0..n-1 (both ends), weights 1/n
        with the two ends halved. (captum's choice: they sum to (n-1)/n, so this
        rule is a factor (n-1)/n below the textbook trapezoid rule.)
    The Riemann rules need n_steps >= 2.
    """
    if method not in IG_METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(IG_METHODS)}.")
    if method == "gausslegendre":
        if n_steps < 1:
            raise ValueError(f"n_steps must be at least 1, got {n_steps}.")
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return (0.5 * (nodes + 1)).tolist(), (0.5 * weights).tolist()
    if n_steps < 2:
        raise ValueError(f"The Riemann rules need n_steps >= 2, got {n_steps}.")
    n = n_steps
    weights = [1.0 / n] * n
    if method == "riemann_trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
        return [k / (n - 1) for k in range(n)], weights
    shift = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[method]
    return [(k + shift) / n for k in range(n)], weights


def _select_target(output: torch.Tensor, target: Target, repeats: int = 1) -> torch.Tensor:
    """output (N, C) -> (N,), the entry of each row's target; N = repeats x batch."""
    if target is None:
        if output.dim() == 1 or (output.dim() == 2 and output.shape[1] == 1):
            return output.reshape(-1)
        raise ValueError(
            f"The forward function returns shape {tuple(output.shape)}: give target= the class "
            "to explain (an int, or one per example)."
        )
    if output.dim() != 2:
        raise ValueError(
            f"With a target the forward function must return (batch, classes), got shape "
            f"{tuple(output.shape)}."
        )
    if isinstance(target, int):
        return output[:, target]
    targets = torch.as_tensor(target, dtype=torch.long, device=output.device).reshape(-1)
    targets = targets.repeat(repeats)
    if targets.shape[0] != output.shape[0]:
        raise ValueError(
            f"{targets.shape[0] // repeats} targets for {output.shape[0] // repeats} examples: "
            "give one target per example, or a single int."
        )
    return output.gather(1, targets[:, None])[:, 0]


def input_x_gradient(
    forward_fn: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    target: Target = None,
) -> torch.Tensor:
    """inputs * d forward_fn(inputs)[target] / d inputs, shaped like inputs.

    forward_fn: (B, ...) -> (B, C) (or (B,) / (B, 1) with target None);
    target: an int for every example, or one per example ((B,) long).
    """
    points = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        selected = _select_target(forward_fn(points), target)  # (B,)
        (gradients,) = torch.autograd.grad(selected.sum(), points)
    return inputs.detach() * gradients


def integrated_gradients(
    forward_fn: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    baselines: torch.Tensor | None = None,
    target: Target = None,
    *,
    n_steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: int | None = None,
    return_convergence_delta: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Integrated gradients (Sundararajan et al. 2017), shaped like inputs.

    attribution = (x - x') * integral over a in [0, 1] of dF/dx at x' + a (x - x'),
    the integral by `integration_points(n_steps, method)`. F = forward_fn(.)[target].

    forward_fn: (N, ...) -> (N, C); it is called on several points of the path
    at once, step-major: rows [k B, (k + 1) B) hold step k for the B examples.
    inputs (B, ...); baselines x', like inputs (None: zeros); target as for
    `input_x_gradient`. internal_batch_size: at most this many rows per call
    (whole steps, at least one). With return_convergence_delta also the (B,)
    completeness error sum(attribution) - (F(x) - F(x')), which shrinks as
    n_steps grows.
    """
    alphas, weights = integration_points(n_steps, method)
    inputs = inputs.detach()
    baselines = torch.zeros_like(inputs) if baselines is None else baselines.detach()
    if baselines.shape != inputs.shape:
        baselines = baselines.expand_as(inputs)
    difference = inputs - baselines
    batch = inputs.shape[0]
    steps_per_call = (
        n_steps if internal_batch_size is None else max(1, internal_batch_size // batch)
    )
    total = torch.zeros_like(inputs)
    for start in range(0, n_steps, steps_per_call):
        chunk = alphas[start : start + steps_per_call]
        points = torch.cat([baselines + alpha * difference for alpha in chunk])  # (k B, ...)
        points.requires_grad_(True)
        with torch.enable_grad():
            selected = _select_target(forward_fn(points), target, repeats=len(chunk))  # (k B,)
            (gradients,) = torch.autograd.grad(selected.sum(), points)
        step_weights = torch.tensor(
            weights[start : start + len(chunk)], dtype=inputs.dtype, device=inputs.device
        ).view(-1, *([1] * inputs.dim()))  # (k, 1, ...)
        total = total + (gradients.view(len(chunk), *inputs.shape) * step_weights).sum(0)
    attributions = total * difference
    if not return_convergence_delta:
        return attributions
    with torch.no_grad():
        change = _select_target(forward_fn(inputs), target) - _select_target(
            forward_fn(baselines), target
        )  # (B,)
    delta = attributions.reshape(batch, -1).sum(dim=1) - change
    return attributions, delta


def embedding_forward(
    model: BertForSequenceClassification,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None = None,
    *,
    probabilities: bool = True,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The classifier as a function of its word embeddings: (N, T, H) -> (N, C).

    attention_mask, token_type_ids: (B, T) for the B examples. The function
    accepts any multiple of B rows, as integrated gradients sends them (step
    after step), and repeats the mask and segments to match. It returns the
    softmax probabilities, or the logits with probabilities=False. The model
    must be in eval mode (no dropout).
    """
    _require_eval(model, "embedding_forward")
    batch = attention_mask.shape[0]

    def forward(word_embeddings: torch.Tensor) -> torch.Tensor:
        repeats, rest = divmod(word_embeddings.shape[0], batch)
        if rest or word_embeddings.dim() != 3:
            raise ValueError(
                f"Expected word embeddings (k x {batch}, T, H) for the {batch} examples of the "
                f"mask, got shape {tuple(word_embeddings.shape)}."
            )
        mask = attention_mask.repeat(repeats, 1)  # (k B, T)
        segments = None if token_type_ids is None else token_type_ids.repeat(repeats, 1)
        logits = model(None, mask, segments, inputs_embeds=word_embeddings).logits  # (k B, C)
        return logits.softmax(dim=-1) if probabilities else logits

    return forward


@dataclass
class TokenAttribution:
    """One text's attribution: a score per token (the attribution summed over H)."""

    tokens: list[str]
    scores: torch.Tensor  # (T,)
    target: int
    probability: float  # the model's probability of `target` for the text
    delta: float | None = None  # integrated gradients' completeness error, in probability

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The k tokens with the largest scores, largest first."""
        order = self.scores.argsort(descending=True)[:k]
        return [(self.tokens[i], float(self.scores[i])) for i in order.tolist()]


def token_attributions(
    model: BertForSequenceClassification,
    tokenizer: Any,
    text: str,
    *,
    target: int | None = None,
    method: str = "integrated_gradients",
    baseline: str = "pad",
    n_steps: int = 50,
    max_length: int = 512,
) -> TokenAttribution:
    """Which tokens of `text` moved the classifier's probability of `target`.

    method: "integrated_gradients" (Gauss-Legendre, n_steps points) or
    "input_x_gradient". The input is the word embeddings of [CLS] text [SEP];
    baseline "pad" replaces every token but [CLS] and [SEP] by [PAD] (a
    sentence of nothing), "zeros" is all zeros. target None: the predicted class.
    A token's score is its attribution summed over the hidden dimension.
    """
    if method not in ("integrated_gradients", "input_x_gradient"):
        raise ValueError(
            f"Unknown method {method!r}; use 'integrated_gradients' or 'input_x_gradient'."
        )
    if baseline not in ("pad", "zeros"):
        raise ValueError(f"Unknown baseline {baseline!r}; use 'pad' or 'zeros'.")
    _require_eval(model, "token_attributions")
    encoding = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
    device = next(model.parameters()).device
    input_ids = encoding["input_ids"].to(device)  # (1, T)
    mask = encoding["attention_mask"].to(device)
    segments = encoding["token_type_ids"].to(device)
    word_embeddings = encoder_of(model).embeddings.word_embeddings
    with torch.no_grad():
        inputs = word_embeddings(input_ids)  # (1, T, H)
        if baseline == "pad":
            special = (input_ids == tokenizer.cls_token_id) | (input_ids == tokenizer.sep_token_id)
            pads = torch.where(
                special, input_ids, torch.full_like(input_ids, tokenizer.pad_token_id)
            )
            baselines = word_embeddings(pads)
        else:
            baselines = torch.zeros_like(inputs)
    forward = embedding_forward(model, mask, segments, probabilities=True)
    with torch.no_grad():
        probs = forward(inputs)[0]  # (C,)
    target = int(probs.argmax()) if target is None else int(target)
    delta = None
    if method == "integrated_gradients":
        attributions, deltas = integrated_gradients(
            forward, inputs, baselines, target, n_steps=n_steps, return_convergence_delta=True
        )
        delta = float(deltas[0])
    else:
        attributions = input_x_gradient(forward, inputs, target)
    tokens = tokenizer.convert_ids_to_tokens(input_ids[0].tolist())
    scores = attributions[0].sum(dim=-1).detach().cpu()  # (T,)
    return TokenAttribution(tokens, scores, target, float(probs[target]), delta)


# ----------------------------------------------------------------------------
# Permuted attention (Jain & Wallace 2019)
# ----------------------------------------------------------------------------


def _real_keys(attention_mask: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor:
    """Bool, broadcastable to scores (B, h, T, T): True where a query may attend to a key."""
    if attention_mask is None:
        return torch.ones((1, 1, 1, scores.shape[-1]), dtype=torch.bool, device=scores.device)
    if attention_mask.dtype == torch.bool:
        return attention_mask
    return attention_mask > torch.finfo(attention_mask.dtype).min / 2  # additive: 0 allowed


def _permute_among_real_keys(
    attention_probs: torch.Tensor, real: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Shuffle each query's weights among its real keys; padding keys end with weight 0.

    attention_probs (B, h, T, T); real: bool, broadcastable to it.
    """
    real = real.expand_as(attention_probs)
    length = attention_probs.shape[-1]
    noise_device = generator.device if generator is not None else attention_probs.device
    noise = torch.rand(attention_probs.shape, generator=generator, device=noise_device)
    noise = noise.to(attention_probs.device) + 2.0 * (~real)  # real keys first, random order
    sources = noise.argsort(dim=-1)  # (B, h, T, T): the real keys shuffled, then the padding
    places = torch.arange(length, device=real.device) + 2 * length * (~real)
    slots = places.argsort(dim=-1)  # the real keys in order, then the padding
    permuted = torch.zeros_like(attention_probs).scatter(
        -1, slots, attention_probs.gather(-1, sources)
    )
    return permuted.masked_fill(~real, 0.0)


def _permuting(generator: torch.Generator | None) -> Callable[..., torch.Tensor]:
    """A `MultiHeadSelfAttention.probs_transform` that shuffles the weights among real keys."""

    def transform(attention_probs: torch.Tensor, attention_mask: torch.Tensor | None):
        real = _real_keys(attention_mask, attention_probs)
        return _permute_among_real_keys(attention_probs, real, generator)

    return transform


@contextlib.contextmanager
def permuted_attention(
    model: torch.nn.Module,
    *,
    layers: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[None]:
    """Inside the `with` block, the chosen layers shuffle their attention weights.

    Every query's attention weights are permuted at random among its real
    keys (padding keys keep weight 0) before they multiply the values, in
    every head of each layer in `layers` (None: all). The scores, values and
    everything else stay as they were. Works with every forward path of the
    model (padding skipped or not, with or without output_attentions, whose
    maps are then the permuted ones). A seeded `generator` makes the
    permutations, and so the outputs, reproducible. The original attention is
    back on exit, also after an exception.
    """
    bert = encoder_of(model)
    count = len(bert.encoder.layer)
    chosen = list(range(count)) if layers is None else [int(i) for i in layers]
    bad = [i for i in chosen if not 0 <= i < count]
    if bad:
        raise ValueError(f"layers {bad} do not exist: the model has layers 0 to {count - 1}.")
    modules = [bert.encoder.layer[i].attention.self for i in chosen]
    saved = [module.probs_transform for module in modules]
    try:
        for module in modules:
            module.probs_transform = _permuting(generator)
        yield
    finally:
        for module, previous in zip(modules, saved, strict=True):
            module.probs_transform = previous


def rank_correlation(a: Sequence[float] | torch.Tensor, b: Sequence[float] | torch.Tensor) -> float:
    """Spearman's rho: the Pearson correlation of the ranks, ties given their average rank.

    NaN when either input is constant (its ranks have no spread), as in scipy.
    """
    x = torch.as_tensor(a, dtype=torch.float64).reshape(-1)
    y = torch.as_tensor(b, dtype=torch.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"a and b must have the same length, got {x.numel()} and {y.numel()}.")
    if x.numel() < 2:
        raise ValueError("rank_correlation needs at least 2 pairs of values.")
    if bool(x.isnan().any() or y.isnan().any()):
        raise ValueError("a or b contains NaN: drop those pairs first.")
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    spread = (rx.square().sum() * ry.square().sum()).sqrt()
    if spread == 0:
        return math.nan
    return float((rx * ry).sum() / spread)


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of a 1-D tensor; tied values share the mean of the ranks they span."""
    order = values.argsort(stable=True)
    _, group, counts = torch.unique_consecutive(
        values[order], return_inverse=True, return_counts=True
    )
    ends = counts.cumsum(0).to(torch.float64)  # last rank of each group of ties
    mean_rank = ends - (counts.to(torch.float64) - 1) / 2
    ranks = torch.empty_like(values)
    ranks[order] = mean_rank[group]
    return ranks


# ----------------------------------------------------------------------------
# Probes (Hewitt & Liang 2019)
# ----------------------------------------------------------------------------


def _sentence_pieces(tokenizer: Any, words: Sequence[str]) -> tuple[list[int], list[int]]:
    """[CLS] pieces [SEP] ids for a sentence given as words, and each word's first piece."""
    ids, firsts = [tokenizer.cls_token_id], []
    for word in words:
        pieces = tokenizer.tokenize(word) or [tokenizer.unk_token]  # e.g. a control character
        firsts.append(len(ids))
        ids.extend(tokenizer.convert_tokens_to_ids(pieces))
    ids.append(tokenizer.sep_token_id)
    return ids, firsts


def word_features(
    model: BertModel,
    tokenizer: Any,
    sentences: Sequence[Sequence[str]],
    *,
    max_length: int = 128,
    batch_size: int = 32,
) -> list[torch.Tensor]:
    """Each word's vector at every layer: L + 1 tensors (N_words, H), embeddings first.

    sentences: lists of words (as `bertcourse.data.offline_ner` gives them).
    Each word is tokenized on its own (a word the tokenizer reduces to nothing
    becomes [UNK]), the sentence becomes [CLS] pieces [SEP], and a word is
    represented by its FIRST piece. Rows follow the words in order, sentence
    after sentence. Nothing is truncated, so that the rows stay aligned with
    the labels: a sentence longer than max_length tokens raises ValueError.
    Sentences run in batches of similar length; the model must be in eval mode.
    """
    _require_eval(model, "word_features")
    encoded = []
    for index, words in enumerate(sentences):
        if isinstance(words, str):
            raise TypeError(
                f"sentences[{index}] is a string: give each sentence as a list of words."
            )
        ids, firsts = _sentence_pieces(tokenizer, words)
        if len(ids) > max_length:
            raise ValueError(
                f"Sentence {index} has {len(words)} words, {len(ids)} tokens with [CLS] and "
                f"[SEP]: more than max_length={max_length}. Raise max_length (up to the model's "
                "max_position_embeddings) or leave out the long sentences with their labels."
            )
        encoded.append((ids, firsts))
    device = next(model.parameters()).device
    per_sentence: list[list[torch.Tensor] | None] = [None] * len(encoded)
    batches = _batches_by_length(
        [ids for ids, _ in encoded], batch_size, tokenizer.pad_token_id, device
    )
    for rows, input_ids, mask in batches:
        with torch.no_grad():
            states = hidden_states_per_layer(model, input_ids, mask)
        for row, i in enumerate(rows):
            firsts = torch.tensor(encoded[i][1], dtype=torch.long, device=device)
            per_sentence[i] = [layer[row].index_select(0, firsts).cpu() for layer in states]
    bert = encoder_of(model)
    empty = torch.zeros(0, bert.config.hidden_size, dtype=next(model.parameters()).dtype)
    return [
        torch.cat([empty] + [s[layer] for s in per_sentence if s is not None])
        for layer in range(len(bert.encoder.layer) + 1)
    ]


def control_labels(words: Sequence[str], labels: Sequence[int], seed: int = 0) -> list[int]:
    """Hewitt & Liang's control task: one random label per word type.

    Each word type (the lower-cased word) gets one label drawn from the
    empirical distribution of `labels` (a token's label, so frequent labels
    are drawn more often), and every occurrence of the type gets that label.
    Types are drawn in order of first appearance with `random.Random(seed)`:
    the same seed gives the same labels. Drop unknown labels (-100) first.
    """
    words, labels = list(words), [int(label) for label in labels]
    if len(words) != len(labels):
        raise ValueError(f"{len(words)} words but {len(labels)} labels: give one label per word.")
    if -100 in labels:
        raise ValueError("labels contain -100 (unknown): drop those words and labels first.")
    rng = random.Random(seed)
    chosen: dict[str, int] = {}
    result = []
    for word in words:
        word_type = word.lower()
        if word_type not in chosen:
            chosen[word_type] = rng.choice(labels)
        result.append(chosen[word_type])
    return result


def train_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor | Sequence[int],
    test_x: torch.Tensor,
    test_y: torch.Tensor | Sequence[int],
    *,
    num_labels: int | None = None,
    epochs: int = 100,
    lr: float = 1.0,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> float:
    """Test accuracy of a linear probe (softmax regression) trained on (train_x, train_y).

    train_x (N, D), test_x (M, D); labels (N,), (M,) in 0..num_labels-1
    (default: the largest label + 1). Features are standardised with the
    training set's mean and standard deviation; the probe minimises the mean
    cross-entropy + weight_decay / 2 * |W|^2 over the full batch with L-BFGS
    (at most `epochs` iterations, strong Wolfe line search, step `lr`), in
    float64, from small random weights drawn with `seed`: deterministic.
    """
    train_x = torch.as_tensor(train_x).detach().to(torch.float64).cpu()
    test_x = torch.as_tensor(test_x).detach().to(torch.float64).cpu()
    train_y = torch.as_tensor(train_y, dtype=torch.long).reshape(-1).cpu()
    test_y = torch.as_tensor(test_y, dtype=torch.long).reshape(-1).cpu()
    if train_x.dim() != 2 or test_x.dim() != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"Features must be (N, D) and (M, D), got {tuple(train_x.shape)} and "
            f"{tuple(test_x.shape)}."
        )
    if train_x.shape[0] != train_y.shape[0] or test_x.shape[0] != test_y.shape[0]:
        raise ValueError("Give one label per feature row, for the training and the test set.")
    if train_x.shape[0] == 0 or test_x.shape[0] == 0:
        raise ValueError("The training and the test set need at least one example each.")
    if num_labels is None:
        num_labels = int(max(train_y.max(), test_y.max())) + 1
    if int(min(train_y.min(), test_y.min())) < 0 or int(max(train_y.max(), test_y.max())) >= (
        num_labels
    ):
        raise ValueError(f"Labels must lie in 0..{num_labels - 1}; drop unknown labels (-100).")
    mean, std = train_x.mean(0), train_x.std(0, unbiased=False).clamp_min(1e-6)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    generator = torch.Generator().manual_seed(seed)
    weight = (0.01 * torch.randn(train_x.shape[1], num_labels, generator=generator)).double()
    weight.requires_grad_(True)
    bias = torch.zeros(num_labels, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=lr,
        max_iter=epochs,
        history_size=20,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(train_x @ weight + bias, train_y)
        loss = loss + 0.5 * weight_decay * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        predictions = (test_x @ weight + bias).argmax(dim=1)
    return float((predictions == test_y).to(torch.float64).mean())


def probe_layers(
    features_per_layer: Sequence[torch.Tensor],
    labels: Sequence[int] | torch.Tensor,
    words: Sequence[str],
    *,
    train_fraction: float = 0.8,
    seed: int = 0,
    **probe_kwargs: Any,
) -> list[dict[str, float]]:
    """Probe every layer for `labels` and for the control task: one row per layer.

    features_per_layer: (N, D) per layer (e.g. `word_features`); labels (N,)
    with -100 for unknown (those words are dropped); words (N,), for the
    control task (`control_labels`, seeded with `seed`). The split is by
    position: the first train_fraction of the (kept) words train, the rest
    test; words come sentence by sentence, so at most one sentence is cut in
    two. Each row: layer, accuracy, control_accuracy, selectivity (accuracy -
    control_accuracy). probe_kwargs go to `train_probe`.
    """
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    words = list(words)
    if len(words) != labels.shape[0]:
        raise ValueError(f"{len(words)} words but {labels.shape[0]} labels: one label per word.")
    for layer, features in enumerate(features_per_layer):
        if features.shape[0] != labels.shape[0]:
            raise ValueError(
                f"Layer {layer} has {features.shape[0]} feature rows for {labels.shape[0]} "
                "labels: give one row per word."
            )
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must lie strictly between 0 and 1, got {train_fraction}.")
    keep = labels != -100
    kept_labels = labels[keep]
    kept_words = [w for w, k in zip(words, keep.tolist(), strict=True) if k]
    count = kept_labels.shape[0]
    n_train = round(train_fraction * count)
    if n_train == 0 or n_train == count:
        raise ValueError(
            f"{count} labelled words are too few to split with train_fraction={train_fraction}."
        )
    control = torch.tensor(control_labels(kept_words, kept_labels.tolist(), seed))
    num_labels = int(kept_labels.max()) + 1
    probe_kwargs.setdefault("num_labels", num_labels)
    probe_kwargs.setdefault("seed", seed)
    rows = []
    for layer, features in enumerate(features_per_layer):
        x = features[keep]
        accuracies = [
            train_probe(x[:n_train], y[:n_train], x[n_train:], y[n_train:], **probe_kwargs)
            for y in (kept_labels, control)
        ]
        rows.append(
            {
                "layer": layer,
                "accuracy": accuracies[0],
                "control_accuracy": accuracies[1],
                "selectivity": accuracies[0] - accuracies[1],
            }
        )
    return rows
