"""Chapter 15, looking inside BERT: attention rollout, integrated gradients, the control task of
a probe.

The exercises, as the chapter states them:

**Exercise 1 (coding, ★★☆): attention rollout.** Write `attention_rollout(attentions,
attention_mask)`: `attentions` is a list of L attention maps (B, h, T, T), the first layer first
(query rows, key columns), and `attention_mask` (B, T) holds 1 at real tokens and 0 at padding.
For every layer, take A, the mean over the heads; set the columns of the padding keys to 0; add
the residual connection, A = 0.5 A + 0.5 I; set the rows of the padded queries to 0; divide every
other row by its sum. The rollout is the product from the first layer up,
R = A_L @ ... @ A_2 @ A_1, of shape (B, T, T), as `bertcourse.interpret.attention_rollout`.

**Exercise 2 (coding, ★★☆): integrated gradients.** Write `integrated_gradients(forward_fn,
inputs, baseline, target, n_steps)`: `forward_fn` maps a batch (N, ...) to scores (N, C), each
row from its own input; `inputs` and `baseline` have the same shape (B, ...); `target` is the
class to explain (an int). Use the right Riemann sum: alphas k / n for k = 1, ..., n
(n = n_steps); at each point baseline + alpha (inputs - baseline) take the gradient of
forward_fn(...)[:, target] with respect to the point; the attribution is (inputs - baseline)
times the mean of the n gradients, shaped like inputs (captum's `method="riemann_right"`).
The checker runs your function with gradients enabled.

**Exercise 3 (coding, ★☆☆): the control task.** Write `control_labels(words, labels, seed)`:
`words` are the N words of a corpus in order and `labels` their N labels (ints). Give every word
*type*, the lower-cased word, one label drawn at random from the empirical distribution of
`labels` (each token's label counts once, so a frequent label is drawn more often), and every
occurrence of the type that label. Return the N control labels as a list of ints. The same seed
must give the same labels (use your own generator, e.g. `random.Random(seed)`); a different seed
other labels. Your draws need not match the package's: the checker tests the properties.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..interpret import attention_rollout, integrated_gradients
from ._grading import (
    Case,
    Problem,
    _fmt_shape,
    _random,
    _real_tokens,
    _require_callable,
    _run_cases,
    _tensor_comparison,
    _variant,
)

__all__ = [
    "check_attention_rollout",
    "check_integrated_gradients",
    "check_control_labels",
]


# ----------------------------------------------------------------------------
# Exercise 1: attention rollout
# ----------------------------------------------------------------------------


def _rollout(
    attentions: Sequence[torch.Tensor],
    attention_mask: torch.Tensor,
    *,
    heads: str = "mean",
    identity: bool = True,
    padding: str = "keys and queries",
    renormalise: bool = True,
    order: str = "first layer first",
    layers: str = "all",
) -> torch.Tensor:
    """The rollout written out (default switches), or a classic mistake in it."""
    if layers == "last":
        attentions = attentions[-1:]
    real = attention_mask.to(attentions[0].dtype)  # (B, T)
    rollout = None
    for probs in attentions:
        mixed = probs.mean(1) if heads == "mean" else probs.max(1).values  # (B, T, T)
        if padding != "ignored":
            mixed = mixed * real[:, None, :]
        if identity:
            mixed = 0.5 * mixed + 0.5 * torch.eye(mixed.shape[-1], dtype=mixed.dtype)
        if padding == "keys and queries":
            mixed = mixed * real[:, :, None]
        if renormalise:
            sums = mixed.sum(-1, keepdim=True)
            mixed = mixed / torch.where(sums > 0, sums, torch.ones_like(sums))
        if rollout is None:
            rollout = mixed
        else:
            rollout = mixed @ rollout if order == "first layer first" else rollout @ mixed
    return rollout


def _softmax_maps(
    g: torch.Generator,
    layers: int,
    batch: int,
    heads: int,
    real: torch.Tensor,
    *,
    sharpness: float = 2.0,
    dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """Attention maps as a model makes them: softmax over the real keys of random scores."""
    length = real.shape[-1]
    blocked = ~real[:, None, None, :]  # (B, 1, 1, T)
    maps = []
    for _ in range(layers):
        scores = sharpness * _random(g, batch, heads, length, length, dtype=dtype)
        maps.append(scores.masked_fill(blocked, torch.finfo(dtype).min).softmax(-1))
    return maps


def _rollout_case(
    description: str, attentions: list[torch.Tensor], attention_mask: torch.Tensor
) -> Case:
    return Case(
        description, (attentions, attention_mask), attention_rollout(attentions, attention_mask)
    )


def _rollout_cases() -> list[Case]:
    """One to six layers, right and left padding, maps with weight on padding, float64."""
    g = torch.Generator().manual_seed(15)
    full = _real_tokens([3], 3)
    cases = [
        _rollout_case(
            "1 layer, 1 head, batch 1, length 3, no padding",
            _softmax_maps(g, 1, 1, 1, full),
            full.long(),
        )
    ]
    real = _real_tokens([4, 4], 4)
    cases.append(
        _rollout_case(
            "2 layers, 2 heads, batch 2, length 4, no padding",
            _softmax_maps(g, 2, 2, 2, real),
            real.long(),
        )
    )
    real = _real_tokens([6, 4], 6)
    cases.append(
        _rollout_case(
            "3 layers, 4 heads, batch 2, length 6, right padding (lengths 6 and 4): padded "
            "queries have rows like any other, as in a real model",
            _softmax_maps(g, 3, 2, 4, real),
            real.long(),
        )
    )
    real = _real_tokens([5, 3], 5)
    everywhere = _softmax_maps(g, 2, 2, 3, torch.ones_like(real))
    cases.append(
        _rollout_case(
            "2 layers, 3 heads, batch 2, length 5, lengths 5 and 3, maps with weight on the "
            "padding keys (a model run without its mask): zero those, then renormalise",
            everywhere,
            real.long(),
        )
    )
    real = _real_tokens([5, 5], 5)
    cases.append(
        _rollout_case(
            "6 layers, 12 heads (MiniLM's shape), batch 2, length 5, no padding",
            _softmax_maps(g, 6, 2, 12, real),
            real.long(),
        )
    )
    real = _real_tokens([7, 5, 2], 7).flip(-1)
    cases.append(
        _rollout_case(
            "4 layers, 2 heads, batch 3, length 7, padding on the LEFT (lengths 7, 5, 2)",
            _softmax_maps(g, 4, 3, 2, real),
            real.long(),
        )
    )
    real = _real_tokens([5, 3], 5)
    cases.append(
        _rollout_case(
            "float64, 3 layers, 2 heads, batch 2, length 5, lengths 5 and 3",
            _softmax_maps(g, 3, 2, 2, real, dtype=torch.float64),
            real.long(),
        )
    )
    return cases


_ROLLOUT_MISTAKES = [
    _variant(
        "add the residual connection: A = 0.5 * A + 0.5 * I, with I = torch.eye(T), so that "
        "each token keeps half of itself at every layer.",
        _rollout,
        identity=False,
    ),
    _variant(
        "renormalise after zeroing the padding keys and adding I: divide each row by its sum "
        "(A / A.sum(-1, keepdim=True)), keeping all-zero rows at 0.",
        _rollout,
        renormalise=False,
    ),
    _variant(
        "the multiplication order is reversed: the first layer acts first, so "
        "R = A_L @ ... @ A_2 @ A_1 (rollout = A @ rollout), not rollout @ A.",
        _rollout,
        order="last layer first",
    ),
    _variant(
        "average the heads, probs.mean(dim=1), not their maximum.",
        _rollout,
        heads="max",
    ),
    _variant(
        "padding is ignored: zero the columns of the padding keys (A * mask[:, None, :]) and "
        "the rows of the padded queries (A * mask[:, :, None]).",
        _rollout,
        padding="ignored",
    ),
    _variant(
        "zero the rows of the padded queries too, after adding I: A * mask[:, :, None].",
        _rollout,
        padding="keys",
    ),
    _variant(
        "multiply the maps of every layer, not only the last one: rollout follows attention "
        "through all L layers.",
        _rollout,
        layers="last",
    ),
]


def _rollout_shape_hint(expected: torch.Size, got: torch.Size) -> str:
    return (
        f"the rollout has shape (B, T, T) = {_fmt_shape(expected)}: average over the heads "
        "(dim=1) of each (B, h, T, T) map, then multiply the (B, T, T) matrices."
    )


def check_attention_rollout(fn: Callable) -> bool:
    """Grade `fn(attentions, attention_mask)` -> the attention rollout (B, T, T).

    attentions: L maps (B, h, T, T), first layer first; attention_mask (B, T).
    Per layer: mean over heads, padding keys zeroed, 0.5 A + 0.5 I, padded
    query rows zeroed, rows renormalised; R = A_L @ ... @ A_1 (as
    `bertcourse.interpret.attention_rollout`).
    """
    return _run_cases(
        "check_attention_rollout",
        fn,
        _rollout_cases(),
        _tensor_comparison("rollout", _rollout_shape_hint),
        _ROLLOUT_MISTAKES,
        "work out case 1 by hand: one layer, so R is 0.5 A + 0.5 I with its rows summing to 1.",
    )


# ----------------------------------------------------------------------------
# Exercise 2: integrated gradients (right Riemann sum)
# ----------------------------------------------------------------------------


def _with_gradients(fn: Callable) -> Callable:
    """fn, run with gradients on (the checker's machinery calls it under torch.no_grad)."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with torch.enable_grad():
            return fn(*args, **kwargs)

    return call


def _ig(
    forward_fn: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    baseline: torch.Tensor,
    target: int,
    n_steps: int,
    *,
    multiplier: str = "difference",
    use_baseline: bool = True,
    average: bool = True,
    alphas: str = "right",
    scored: str = "target",
) -> torch.Tensor:
    """Integrated gradients written out (default switches), or a classic mistake in it."""
    start = baseline if use_baseline else torch.zeros_like(inputs)
    n = n_steps
    points = {
        "right": [k / n for k in range(1, n + 1)],
        "left": [k / n for k in range(n)],
        "both ends": [k / (n - 1) for k in range(n)],
        "input only": [1.0] * n,
    }[alphas]
    total = torch.zeros_like(inputs)
    with torch.enable_grad():
        if scored == "predicted":
            predicted = forward_fn(inputs).argmax(-1)  # (B,)
        for alpha in points:
            point = (start + alpha * (inputs - start)).requires_grad_(True)
            scores = forward_fn(point)  # (B, C)
            chosen = {
                "target": lambda s: s[:, target],
                "class 0": lambda s: s[:, 0],
                "sum": lambda s: s.sum(-1),
                "predicted": lambda s: s.gather(1, predicted[:, None])[:, 0],
            }[scored](scores)
            (gradient,) = torch.autograd.grad(chosen.sum(), point)
            total = total + gradient
    gradient = total / n if average else total
    factor = {"difference": inputs - start, "inputs": inputs, "none": torch.ones_like(inputs)}
    return gradient * factor[multiplier]


def _linear_forward(weight: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    def linear(x: torch.Tensor) -> torch.Tensor:
        return x @ weight  # (N, D) -> (N, C)

    return linear


def _mlp_forward(g: torch.Generator, features: int, classes: int) -> Callable:
    hidden_weight = _random(g, features, 8)
    output_weight = 2.0 * _random(g, 8, classes)

    def mlp(x: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(x @ hidden_weight) @ output_weight).softmax(-1)  # (N, C)

    return mlp


def _sentence_forward(g: torch.Generator, width: int, classes: int) -> Callable:
    """A toy classifier of (N, T, H) token vectors: mixed tokens, mean-pooled, softmax."""
    token_weight = _random(g, width, width)
    output_weight = 2.0 * _random(g, width, classes)

    def classify(x: torch.Tensor) -> torch.Tensor:
        pooled = torch.tanh(x @ token_weight).mean(dim=1)  # (N, H)
        return (pooled @ output_weight).softmax(-1)  # (N, C)

    return classify


def _ig_case(
    description: str,
    forward_fn: Callable,
    inputs: torch.Tensor,
    baseline: torch.Tensor,
    target: int,
    n_steps: int,
) -> Case:
    args = (forward_fn, inputs, baseline, target, n_steps)
    expected = integrated_gradients(
        forward_fn, inputs, baseline, target, n_steps=n_steps, method="riemann_right"
    )
    return Case(description, args, expected)


def _ig_cases() -> list[Case]:
    """A linear model (exact answer), softmax models, token inputs (B, T, H), 2 to 10 steps."""
    g = torch.Generator().manual_seed(1515)
    linear = _linear_forward(_random(g, 4, 3))
    x = _random(g, 2, 4)
    mlp = _mlp_forward(g, 6, 3)
    sentence = _sentence_forward(g, 4, 2)
    tokens = _random(g, 2, 5, 4)
    padding_vector = 0.3 * _random(g, 4)
    return [
        _ig_case(
            "a linear model F(x) = x @ W, batch 2, 4 features, zero baseline, target 1, 5 "
            "steps: the answer is exactly x * W[:, 1]",
            linear,
            x,
            torch.zeros_like(x),
            1,
            5,
        ),
        _ig_case(
            "the same linear model, a nonzero baseline: exactly (x - baseline) * W[:, 1]",
            linear,
            x,
            _random(g, 2, 4),
            1,
            5,
        ),
        _ig_case(
            "softmax over a small MLP, batch 3, 6 features, zero baseline, target 2, 8 steps",
            mlp,
            2.0 * _random(g, 3, 6),
            torch.zeros(3, 6),
            2,
            8,
        ),
        _ig_case(
            "the same MLP, a random baseline, target 1, 10 steps",
            mlp,
            2.0 * _random(g, 3, 6),
            _random(g, 3, 6),
            1,
            10,
        ),
        _ig_case(
            "token vectors (B, T, H) = (2, 5, 4) into a toy sentence classifier, the baseline "
            "one 'padding' vector at every position, target 1, 6 steps",
            sentence,
            tokens,
            padding_vector.expand(2, 5, 4).clone(),
            1,
            6,
        ),
        _ig_case(
            "2 steps only (alphas 1/2 and 1), the MLP, batch 2, target 0",
            mlp,
            2.0 * _random(g, 2, 6),
            0.5 * _random(g, 2, 6),
            0,
            2,
        ),
    ]


_IG_MISTAKES = [
    _variant(
        "multiply the mean gradient by (inputs - baseline): the gradient alone says how "
        "sensitive F is, not how much each feature moved it.",
        _ig,
        multiplier="none",
    ),
    _variant(
        "multiply by (inputs - baseline), not by inputs: the path starts at the baseline.",
        _ig,
        multiplier="inputs",
    ),
    _variant(
        "the baseline is ignored: the path runs from the baseline, "
        "baseline + alpha * (inputs - baseline), and the answer is (inputs - baseline) times "
        "the mean gradient.",
        _ig,
        use_baseline=False,
    ),
    _variant(
        "take the mean of the n gradients (divide their sum by n_steps), not their sum: the "
        "Riemann sum gives each step the width 1/n.",
        _ig,
        average=False,
    ),
    _variant(
        "off by one: the right Riemann sum takes alphas k/n for k = 1..n (ending at 1, not "
        "starting at 0): torch.arange(1, n + 1) / n.",
        _ig,
        alphas="left",
    ),
    _variant(
        "the right Riemann sum takes alphas k/n for k = 1..n, spaced 1/n: not "
        "torch.linspace(0, 1, n), which spaces them 1/(n - 1) and includes 0.",
        _ig,
        alphas="both ends",
    ),
    _variant(
        "the gradient is taken at the input alone (that is Input x Gradient): integrated "
        "gradients average it along the path, alphas k/n for k = 1..n.",
        _ig,
        alphas="input only",
    ),
    _variant(
        "the gradient of the wrong class: differentiate forward_fn(point)[:, target], not class 0.",
        _ig,
        scored="class 0",
    ),
    _variant(
        "the gradient of the wrong class: use the target given, not the predicted class (argmax).",
        _ig,
        scored="predicted",
    ),
    _variant(
        "the gradient of the sum over classes: select the target's column first, "
        "forward_fn(point)[:, target].sum(); probabilities sum to 1, so their sum has no "
        "gradient at all.",
        _ig,
        scored="sum",
    ),
]


def check_integrated_gradients(fn: Callable) -> bool:
    """Grade `fn(forward_fn, inputs, baseline, target, n_steps)` -> attributions like inputs.

    Right Riemann sum: alphas k/n, k = 1..n; attribution = (inputs - baseline)
    * mean_k grad forward_fn(baseline + alpha_k (inputs - baseline))[:, target]
    (as `bertcourse.interpret.integrated_gradients(..., method="riemann_right")`).
    """
    _require_callable("check_integrated_gradients", fn)
    return _run_cases(
        "check_integrated_gradients",
        _with_gradients(fn),
        _ig_cases(),
        _tensor_comparison("attributions"),
        _IG_MISTAKES,  # each runs with gradients on (see _ig)
        "check case 1 by hand: for a linear model every gradient is W[:, target], so the "
        "answer is (inputs - baseline) * W[:, target] whatever n_steps.",
    )


# ----------------------------------------------------------------------------
# Exercise 3: the control task's labels
# ----------------------------------------------------------------------------


@dataclass
class _ControlCase:
    """The inputs of a case and what its answer may be checked for."""

    words: list[str]
    labels: list[int]
    seed: int
    many_types: bool  # enough types that two seeds, or a uniform draw, show


def _control_runs(fn: Callable) -> Callable:
    """fn three times: twice with the seed, once with the next seed."""

    @functools.wraps(fn)
    def call(words: list[str], labels: list[int], seed: int) -> tuple[Any, Any, Any]:
        first = fn(list(words), list(labels), seed)
        again = fn(list(words), list(labels), seed)
        other = fn(list(words), list(labels), seed + 1)
        return first, again, other

    return call


def _control_case(description: str, words: list[str], labels: list[int], seed: int) -> Case:
    many = len({w.lower() for w in words}) >= 200
    return Case(description, (words, labels, seed), _ControlCase(words, labels, seed, many))


def _control_cases() -> list[Case]:
    """A short sentence, mixed case, a corpus of 20,000 words with skewed labels {0, 4, 9}."""
    rng = random.Random(1515)
    sentence = "The cat sat on the mat because the mat was warm and the cat was cold".split()
    tags = [0, 1, 2, 3, 0, 1, 3, 0, 1, 2, 1, 3, 0, 1, 2, 1]
    mixed = "Paris is in France and paris is PARIS in any case so France is france".split()
    mixed_tags = [1, 0, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0, 1]
    vocabulary = [f"word{i}" for i in range(3000)]
    corpus = [rng.choice(vocabulary) for _ in range(20000)]
    corpus = [w.capitalize() if rng.random() < 0.3 else w for w in corpus]
    corpus_tags = rng.choices([0, 4, 9], weights=[0.7, 0.2, 0.1], k=len(corpus))
    consistent = {w.lower(): rng.choice([0, 4, 9]) for w in corpus}  # a label per type
    corpus_typed = [consistent[w.lower()] for w in corpus]
    return [
        _control_case("a sentence of 16 words and 4 labels, seed 0", sentence, tags, 0),
        _control_case(
            "mixed case: 'Paris', 'paris' and 'PARIS' are one type, seed 3", mixed, mixed_tags, 3
        ),
        _control_case(
            "a corpus of 20,000 words, 3,000 types, labels 0, 4 and 9 (70%, 20%, 10% of the "
            "tokens), seed 7",
            corpus,
            corpus_tags,
            7,
        ),
        _control_case(
            "the same corpus with real labels that are one per type already, seed 11",
            corpus,
            corpus_typed,
            11,
        ),
    ]


def _as_labels(answer: Any) -> list[int] | None:
    if isinstance(answer, torch.Tensor):
        answer = answer.tolist()
    if not isinstance(answer, (list, tuple)):
        return None
    try:
        return [int(label) for label in answer]
    except (TypeError, ValueError):
        return None


def _first_conflict(words: list[str], labels: list[int], key: Callable[[str], str]):
    """The first two words with the same key and different labels, or None."""
    seen: dict[str, tuple[str, int]] = {}
    for word, label in zip(words, labels, strict=True):
        first = seen.setdefault(key(word), (word, label))
        if first[1] != label:
            return first, (word, label)
    return None


def _control_problem(case: _ControlCase, got: Any) -> Problem | None:
    answers = [_as_labels(answer) for answer in got]
    first = answers[0]
    if first is None or len(first) != len(case.words):
        return Problem(
            [
                f"expected a list of {len(case.words)} ints, one per word, got {type(got[0]).__name__}"
            ],
            "return one control label per word, in the order of the words, as a list of ints.",
        )
    allowed = set(case.labels)
    outside = sorted({label for label in first if label not in allowed})
    if outside:
        return Problem(
            [f"labels {outside[:3]} are outside the label set {sorted(allowed)}"],
            "draw each type's label from the labels given (random.choice(labels)), not from a "
            "range of ints: the label set may have gaps.",
        )
    if first == case.labels:
        return Problem(
            ["your control labels are the real labels"],
            "the control task copies nothing: each type gets a RANDOM label, drawn from the "
            "distribution of the real labels.",
        )
    same_word = _first_conflict(case.words, first, lambda w: w)
    if same_word is not None:
        (word, a), (_, b) = same_word
        return Problem(
            [f"the word {word!r} gets label {a} once and {b} later"],
            "one label per word type, not per token: draw once for each type and reuse it (a "
            "dict from the type to its label).",
        )
    same_type = _first_conflict(case.words, first, str.lower)
    if same_type is not None:
        (word, a), (other, b) = same_type
        return Problem(
            [f"{word!r} gets label {a} but {other!r} gets {b}"],
            "the type is the lower-cased word: key the dict by word.lower(), so that case-"
            "sensitive spellings ('The', 'the') share one label.",
        )
    if answers[1] != first:
        return Problem(
            ["two calls with the same seed gave different labels"],
            "not deterministic: draw with your own generator, random.Random(seed), not the "
            "global random module.",
        )
    if case.many_types and answers[2] == first:
        return Problem(
            [f"seeds {case.seed} and {case.seed + 1} gave the same labels"],
            "the seed is ignored: create the generator from the seed argument, "
            "random.Random(seed).",
        )
    if case.many_types:
        return _distribution_problem(case, first)
    return None


def _distribution_problem(case: _ControlCase, labels: list[int]) -> Problem | None:
    """The share of types given each label against the share of tokens that have it."""
    per_type = {word.lower(): label for word, label in zip(case.words, labels, strict=True)}
    type_counts = Counter(per_type.values())
    token_counts = Counter(case.labels)
    shares = {
        label: (type_counts[label] / len(per_type), token_counts[label] / len(case.labels))
        for label in sorted(token_counts)
    }
    worst = max(shares, key=lambda label: abs(shares[label][0] - shares[label][1]))
    got_share, expected_share = shares[worst]
    if abs(got_share - expected_share) < 0.05:  # 6 standard deviations with 3,000 types
        return None
    uniform = all(abs(share - 1 / len(shares)) < 0.05 for share, _ in shares.values())
    hint = (
        "the labels are uniform over the label set: draw from the empirical distribution, "
        "random.choice(labels) over every token's label, so that frequent labels come more often."
        if uniform
        else "draw each type's label from the empirical distribution of the tokens' labels: "
        "random.choice(labels) over the list of all labels."
    )
    return Problem(
        [
            f"label {worst} went to {got_share:.0%} of the types, but {expected_share:.0%} of "
            "the tokens have it"
        ],
        hint,
    )


def check_control_labels(fn: Callable) -> bool:
    """Grade `fn(words, labels, seed)` -> one control label per word (Hewitt & Liang 2019).

    Checked for properties, not for particular draws: labels from the label
    set, one label per lower-cased type, not the real labels, the same for the
    same seed and different for another, and (on a large corpus) types
    labelled in the proportions of the tokens' labels (as
    `bertcourse.interpret.control_labels`).
    """
    _require_callable("check_control_labels", fn)
    return _run_cases(
        "check_control_labels",
        _control_runs(fn),
        _control_cases(),
        _control_problem,
        (),
        "print your labels next to the words for case 1: every 'the' must share one label.",
    )
