"""bertcourse.speed: the profile of a step by module type, FLOP counts, padding, intensity.

FLOPs are checked three ways (torch's counter, the benchmark's formula, the matmul shapes)
and against transformers' model; the padding fraction against padded batches built by the
fine-tuning collator; the profile against the step's own clock and the operators it must
attribute to each type.
"""

from __future__ import annotations

import collections
import time

import pytest
import torch
import torch.nn.functional as F
import transformers

from bertcourse import BertConfig, speed
from bertcourse.attention import scaled_dot_product_attention
from bertcourse.bench import pretraining_batch, pretraining_flops_per_token
from bertcourse.finetune import PaddingCollator
from bertcourse.model import BertForMaskedLM, BertForPreTraining
from bertcourse.training.sampling import LengthGroupedEpochSampler

CONFIG = BertConfig.from_name("tiny", vocab_size=500, max_position_embeddings=64)
BATCH, LENGTH = 3, 24
CPU = torch.device("cpu")


def mlm_inputs(padding: float = 0.25) -> dict[str, torch.Tensor]:
    """A padded batch with MLM labels on ~15% of the real tokens, no NSP label."""
    inputs = pretraining_batch(CONFIG, BATCH, LENGTH, padding, CPU)
    inputs.pop("next_sentence_label")
    return inputs


def training_step(model, inputs, **options):
    return lambda: model(**inputs, **options).loss.backward()


# ----------------------------------------------------------------------------
# FLOPs: counted, by formula, by shapes
# ----------------------------------------------------------------------------


def test_counted_flops_of_a_dense_step_equal_the_benchmark_formula():
    """The formula counts the matrix products, as torch's counter does, so a dense MLM step
    (every position predicted, padding included) matches it exactly; what both leave out
    (LayerNorm, GELU, softmax, dropout, embeddings, biases, the optimizer) is elementwise."""
    torch.manual_seed(0)
    model = BertForMaskedLM(CONFIG)
    counted = speed.count_flops(training_step(model, mlm_inputs()))
    assert counted == pretraining_flops_per_token(CONFIG, LENGTH) * BATCH * LENGTH


def test_the_formula_leaves_out_the_pooler_and_nsp_head():
    """With NSP the counter also sees the pooler and the 2-way classifier, once per
    sequence: 6 FLOPs per weight, B sequences. That is the whole gap, a share that falls as
    1 / sequence length (0.14% at 24 tokens)."""
    torch.manual_seed(0)
    model = BertForPreTraining(CONFIG)
    inputs = pretraining_batch(CONFIG, BATCH, LENGTH, 0.25, CPU)
    counted = speed.count_flops(training_step(model, inputs))
    formula = pretraining_flops_per_token(CONFIG, LENGTH) * BATCH * LENGTH
    hidden = CONFIG.hidden_size
    assert counted - formula == 6 * BATCH * (hidden * hidden + 2 * hidden)
    assert 0 < (counted - formula) / formula < 0.002


def test_matmul_shapes_give_the_counted_flops_dense_and_sparse():
    """Training = 3x the forward products; with masked_only (and no padding to skip) the
    MLM head runs on the masked tokens only."""
    torch.manual_seed(0)
    model = BertForMaskedLM(CONFIG)
    inputs = mlm_inputs(padding=0.0)
    shapes = speed.matmul_shapes(CONFIG, BATCH, LENGTH)
    assert speed.count_flops(training_step(model, inputs)) == 3 * sum(m.flops for m in shapes)
    masked = int((inputs["labels"] != -100).sum())
    sparse = speed.matmul_shapes(CONFIG, BATCH, LENGTH, predicted_tokens=masked)
    counted = speed.count_flops(training_step(model, inputs, masked_only=True))
    assert counted == 3 * sum(m.flops for m in sparse)
    assert {m.module_type for m in shapes} <= set(speed.MODULE_TYPES)


def test_our_dense_step_counts_the_flops_of_transformers_step():
    """Same config, same padded batch: transformers' BertForMaskedLM runs the same products."""
    torch.manual_seed(0)
    reference = transformers.BertForMaskedLM._from_config(
        CONFIG.to_hf(), attn_implementation="eager"
    )
    ours = BertForMaskedLM.from_hf(reference)
    inputs = mlm_inputs()
    assert speed.count_flops(training_step(ours, inputs)) == speed.count_flops(
        training_step(reference, inputs)
    )


def test_matmul_shapes_rejects_more_predicted_tokens_than_the_batch_holds():
    with pytest.raises(ValueError, match="predicted_tokens"):
        speed.matmul_shapes(CONFIG, 2, 8, predicted_tokens=17)


# ----------------------------------------------------------------------------
# Arithmetic intensity and the two measured rates
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "bytes_per_element", "expected"),
    [
        ((2, 3, 4), 4, 48 / 104),  # 2*24 FLOPs; (6 + 12 + 8) elements of 4 bytes
        ((1, 1, 1), 2, 2 / 6),
        ((4096, 256, 256), 2, 2 * 4096 * 256 * 256 / (2 * (2 * 4096 * 256 + 256 * 256))),
    ],
)
def test_arithmetic_intensity_by_hand(shape, bytes_per_element, expected):
    assert speed.arithmetic_intensity(*shape, bytes_per_element) == pytest.approx(expected)


def test_square_intensity_grows_with_size_and_halves_with_wider_elements():
    """n x n x n: 2n^3 FLOPs over 3n^2 elements, so 2n / (3 bytes)."""
    for n in (8, 64, 1024):
        assert speed.arithmetic_intensity(n, n, n, 4) == pytest.approx(2 * n / 12)
        assert speed.arithmetic_intensity(n, n, n, 2) == pytest.approx(
            2 * speed.arithmetic_intensity(n, n, n, 4)
        )


def test_arithmetic_intensity_rejects_empty_shapes():
    with pytest.raises(ValueError, match=">= 1"):
        speed.arithmetic_intensity(0, 4, 4)


class FakeClock:
    """time.perf_counter that advances one second per call: a timed call lasts 1 s."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_measured_rates_count_the_work_of_one_call(monkeypatch):
    monkeypatch.setattr(speed.time, "perf_counter", FakeClock())
    assert speed.matmul_flops_per_second(size=32, repeats=2) == 2 * 32**3
    assert speed.copy_bytes_per_second(megabytes=1, repeats=2) == 2 * 2**20


def test_measured_rates_are_positive_and_finite():
    assert 0 < speed.matmul_flops_per_second(size=64, repeats=1) < float("inf")
    assert 0 < speed.copy_bytes_per_second(megabytes=1, repeats=1) < float("inf")


# ----------------------------------------------------------------------------
# Padding
# ----------------------------------------------------------------------------


def sentence_lengths(count: int = 300, seed: int = 0) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randint(3, 60, (count,), generator=generator) ** 1.2).long().tolist()


@pytest.mark.parametrize("grouped", [False, True])
def test_padding_fraction_matches_the_padded_batches(grouped):
    """Count the zeros of the attention masks the fine-tuning collator builds."""
    lengths = sentence_lengths()
    examples = [{"input_ids": [1] * n, "attention_mask": [1] * n} for n in lengths]
    collate = PaddingCollator(pad_token_id=0)
    padding = positions = 0
    for batch in speed.length_batches(lengths, 16, grouped, seed=3):
        mask = collate([examples[i] for i in batch])["attention_mask"]
        padding += int((mask == 0).sum())
        positions += mask.numel()
    fraction = speed.padding_fraction(lengths, 16, grouped, seed=3)
    assert fraction == pytest.approx(padding / positions)


def test_grouping_by_length_cuts_padding():
    lengths = sentence_lengths()
    assert speed.padding_fraction(lengths, 16, grouped=True) < 0.5 * speed.padding_fraction(
        lengths, 16, grouped=False
    )


def test_static_padding_is_one_minus_the_mean_over_the_padded_length():
    lengths = sentence_lengths()
    expected = 1 - sum(lengths) / (len(lengths) * 160)
    for grouped in (False, True):
        got = speed.padding_fraction(lengths, 16, grouped, pad_to=160)
        assert got == pytest.approx(expected)
    with pytest.raises(ValueError, match="truncate"):
        speed.padding_fraction(lengths, 16, pad_to=max(lengths) - 1)


def test_length_batches_cover_every_example_once_in_the_samplers_order():
    lengths = sentence_lengths(101)
    for grouped in (False, True):
        batches = speed.length_batches(lengths, 16, grouped, seed=5)
        assert sorted(i for batch in batches for i in batch) == list(range(101))
        assert [len(b) for b in batches] == [16] * 6 + [5]
    grouped_order = [i for i, _, _ in LengthGroupedEpochSampler(lengths, 16, seed=5)]
    assert [i for b in speed.length_batches(lengths, 16, True, 5) for i in b] == grouped_order


# ----------------------------------------------------------------------------
# Saved activations
# ----------------------------------------------------------------------------


def test_saved_tensor_bytes_counts_each_storage_once():
    x = torch.randn(100, 10, requires_grad=True)
    assert speed.saved_tensor_bytes(lambda: x.exp()) == 4000  # exp saves its output
    y = torch.randn(100, 10, requires_grad=True)
    assert speed.saved_tensor_bytes(lambda: x * y) == 8000  # a product saves both inputs
    assert speed.saved_tensor_bytes(lambda: x[:50] * x[50:]) == 4000  # two views of x


def test_fused_attention_saves_no_attention_matrix():
    """Eager attention keeps the (B, nh, T, T) probabilities for the backward pass; the
    fused kernel keeps only its inputs, its output and a statistic per row: less, at 128
    tokens of 16 dimensions per head, than the probabilities alone."""
    generator = torch.Generator().manual_seed(0)
    batch, heads, length, width = 2, 3, 128, 16
    q, k, v = (
        torch.randn(batch, heads, length, width, generator=generator).requires_grad_()
        for _ in range(3)
    )
    keep = torch.arange(length)[None, :] < torch.tensor([length, 90])[:, None]
    mask = keep[:, None, None, :]  # (B, 1, 1, T), padding masked
    eager = speed.saved_tensor_bytes(lambda: scaled_dot_product_attention(q, k, v, mask)[0])
    fused = speed.saved_tensor_bytes(
        lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    )
    probabilities = batch * heads * length * length * 4  # float32
    assert eager >= probabilities > fused


# ----------------------------------------------------------------------------
# The profile by module type
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def profiled_step():
    """Two profiled pretraining steps (MLM + NSP, dropout, AdamW) and their wall times."""
    torch.manual_seed(0)
    model = BertForPreTraining(CONFIG)
    inputs = pretraining_batch(CONFIG, BATCH, LENGTH, 0.25, CPU)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    walls = []

    def step():
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        model(**inputs).loss.backward()
        optimizer.step()
        walls.append(time.perf_counter() - started)

    operators = speed.profile_step(model, step, steps=2, warmup=1)
    return operators, sum(walls[1:]), model


def test_the_profile_adds_up_to_the_steps_own_clock(profiled_step):
    operators, wall, _ = profiled_step
    by_type = speed.time_by_module_type(operators, steps=2)
    assert list(by_type) == list(speed.MODULE_TYPES)
    assert sum(by_type.values()) == pytest.approx(sum(op.seconds for op in operators) / 2)
    assert sum(op.seconds for op in operators) == pytest.approx(wall, rel=0.05, abs=1e-3)


def test_every_module_type_gets_time(profiled_step):
    by_type = speed.time_by_module_type(profiled_step[0])
    assert all(seconds > 0 for seconds in by_type.values()), by_type


def test_operators_go_to_their_module_type_forward_and_backward(profiled_step):
    """The backward of each operator goes where its forward went (one sequence number)."""
    types = collections.defaultdict(set)
    for operator in profiled_step[0]:
        types[(operator.name, operator.phase)].add(operator.module_type)
    assert types[("aten::embedding", "forward")] == {"embeddings"}
    assert types[("aten::embedding_dense_backward", "backward")] == {"embeddings"}
    assert types[("aten::_log_softmax", "forward")] == {"loss"}
    assert types[("aten::_log_softmax_backward_data", "backward")] == {"loss"}
    assert types[("aten::gelu_backward", "backward")] == {"feed-forward", "MLM head"}
    assert types[("aten::tanh_backward", "backward")] == {"pooler + NSP head"}
    assert types[("aten::_softmax_backward_data", "backward")] == {
        "attention: scores, softmax, values"
    }
    layer_norm = types[("aten::native_layer_norm_backward", "backward")]
    assert layer_norm == {"LayerNorm + dropout", "MLM head"}  # the head's own LayerNorm
    assert types[("Optimizer.step#AdamW.step", "optimizer")] == {"optimizer"}
    # In the backward pass only the gradients written into .grad belong to no module.
    untyped = {
        name for (name, phase), kinds in types.items() if phase == "backward" and "other" in kinds
    }
    assert untyped and all("AccumulateGrad" in name or "detach" in name for name in untyped)


def test_module_type_of_the_course_bert(profiled_step):
    model = profiled_step[2]
    modules = dict(model.named_modules())
    expected = {
        "": "loss",
        "bert": "other",
        "bert.embeddings": "embeddings",
        "bert.encoder.layer.0.attention.self": "attention: scores, softmax, values",
        "bert.encoder.layer.0.attention.self.key": "Q, K, V projections",
        "bert.encoder.layer.1.attention.output": "attention output",
        "bert.encoder.layer.1.attention.output.dense": None,  # its block's type
        "bert.encoder.layer.1.attention.output.LayerNorm": "LayerNorm + dropout",
        "bert.encoder.layer.1.intermediate": "feed-forward",
        "bert.encoder.layer.1.output": "feed-forward",
        "bert.encoder.layer.1": None,
        "bert.pooler": "pooler + NSP head",
        "cls.seq_relationship": "pooler + NSP head",
        "cls.predictions": "MLM head",
    }
    for name, kind in expected.items():
        assert speed.module_type(name, modules[name]) == kind, name


def test_profile_step_leaves_no_hooks_behind(profiled_step):
    model = profiled_step[2]
    assert all(
        not module._forward_hooks and not module._forward_pre_hooks for module in model.modules()
    )
