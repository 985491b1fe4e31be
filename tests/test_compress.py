"""bertcourse.compress: distillation against hand-worked numbers and torch's functions,
int8 quantization against a float reference of the same arithmetic, the float layer's error
bound and torch's own dynamic quantization, head pruning against gating and transformers'
own pruning utility, ONNX against PyTorch on padded batches of other shapes."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import random_batch
from torch import nn

from bertcourse import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizer,
    compress,
)
from bertcourse.compress import (
    INT8_MAX,
    Int8Linear,
    accuracy_as_heads_are_removed,
    classifier_accuracy,
    distill,
    distillation_loss,
    export_onnx,
    head_importance,
    latency_ms,
    least_important_heads,
    linear_schedule,
    linear_weight_bytes,
    make_student,
    onnx_session,
    prune_heads,
    quantize_linear_layers,
    quantize_symmetric,
    run_onnx,
    size_on_disk,
    student_layers,
)

# 3 layers of 4 heads of 12; initializer_range 0.2 so that a random model's logits depend on
# its inputs enough for differences to show.
CONFIG = BertConfig(
    vocab_size=97,
    hidden_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=70,
    max_position_embeddings=32,
    initializer_range=0.2,
)
SENTENCES = [
    "Return True if the server is accepting connections.",
    "A short one.",
    "The quick brown fox jumps over the lazy dog, again and again, until the dog wakes up.",
    "Parse the configuration file and return a dictionary of options.",
]


def tiny_classifier(seed: int = 0, **changes) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(CONFIG.replace(**changes), num_labels=3).eval()


def labelled_batches(count: int = 3, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Padded batches of different sizes and lengths, with labels."""
    batches = []
    for i in range(count):
        ids, mask, segments = random_batch(97, batch=4 + i, length=9 + 3 * i, seed=seed + i)
        labels = torch.randint(0, 3, (4 + i,), generator=torch.Generator().manual_seed(seed + i))
        batches.append(
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": segments, "labels": labels}
        )
    return batches


@pytest.fixture(scope="module")
def minilm_classifier():
    torch.manual_seed(0)  # the fresh classification head
    return BertForSequenceClassification.from_hf("minilm", num_labels=5).eval()


@pytest.fixture(scope="module")
def minilm_batch():
    tokenizer = BertTokenizer.from_pretrained("minilm")
    return tokenizer(SENTENCES, padding=True, truncation=True, max_length=32, return_tensors="pt")


# ----------------------------------------------------------------------------
# Distillation
# ----------------------------------------------------------------------------


def _softmax(values: list[float], temperature: float) -> list[float]:
    exps = [math.exp(v / temperature) for v in values]
    return [e / sum(exps) for e in exps]


def test_distillation_loss_by_hand():
    """Two examples, three classes, T = 2, alpha = 0.3, worked out with math.exp / math.log."""
    student = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    teacher = [[2.0, 1.0, 0.0], [0.5, 0.5, 2.0]]
    labels = [0, 2]
    temperature, alpha = 2.0, 0.3
    kl = 0.0
    for s, t in zip(student, teacher, strict=True):
        p, q = _softmax(t, temperature), _softmax(s, temperature)
        kl += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))
    kl /= 2  # batchmean: the mean over the examples of the sum over the classes
    ce = -sum(math.log(_softmax(s, 1.0)[y]) for s, y in zip(student, labels, strict=True)) / 2
    expected = alpha * temperature**2 * kl + (1 - alpha) * ce
    got = distillation_loss(
        torch.tensor(student, dtype=torch.float64),
        torch.tensor(teacher, dtype=torch.float64),
        torch.tensor(labels),
        temperature,
        alpha,
    )
    assert got.dim() == 0
    assert got.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("temperature", "alpha"), [(1.0, 0.5), (2.0, 0.1), (4.0, 0.9), (7.5, 1.0)])
def test_distillation_loss_equals_torch_kl_div_and_cross_entropy(temperature, alpha):
    generator = torch.Generator().manual_seed(int(temperature * 10))
    student = torch.randn(7, 5, generator=generator) * 3
    teacher = torch.randn(7, 5, generator=generator) * 3
    labels = torch.randint(0, 5, (7,), generator=generator)
    kl = F.kl_div(
        F.log_softmax(student / temperature, dim=-1),
        F.log_softmax(teacher / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    expected = alpha * temperature**2 * kl + (1 - alpha) * F.cross_entropy(student, labels)
    got = distillation_loss(student, teacher, labels, temperature, alpha)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    if alpha == 1.0:  # the soft term alone needs no labels
        torch.testing.assert_close(distillation_loss(student, teacher, None, temperature, 1.0), got)


def test_the_t_squared_factor_keeps_the_soft_gradient_at_one_scale():
    """d(T^2 KL / B) / d student_logit = T (q - p) / B exactly; for large T it tends to
    (z - v) / (B C) for zero-mean logits z, v: independent of T, which is what T^2 is for."""
    generator = torch.Generator().manual_seed(3)
    batch, classes = 4, 6
    student = torch.randn(batch, classes, generator=generator, dtype=torch.float64)
    teacher = torch.randn(batch, classes, generator=generator, dtype=torch.float64)
    student, teacher = (
        student - student.mean(-1, keepdim=True),
        teacher - teacher.mean(-1, keepdim=True),
    )
    limit = (student - teacher) / (batch * classes)
    for temperature in (3.0, 50.0, 200.0):
        logits = student.clone().requires_grad_(True)
        distillation_loss(logits, teacher, None, temperature, 1.0).backward()
        q, p = (student / temperature).softmax(-1), (teacher / temperature).softmax(-1)
        torch.testing.assert_close(logits.grad, temperature * (q - p) / batch)
        if temperature > 10:  # the next term of the expansion is O(1 / T) smaller
            assert (logits.grad - limit).abs().max() < 5 / temperature * limit.abs().max()


def test_distillation_loss_rejects_bad_arguments():
    logits = torch.zeros(2, 3)
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="same number of labels"):
        distillation_loss(logits, torch.zeros(2, 4), labels)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(logits, logits, labels, temperature=0.0)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(logits, logits, labels, alpha=1.5)
    with pytest.raises(ValueError, match="labels are None"):
        distillation_loss(logits, logits, None, alpha=0.5)
    with pytest.raises(ValueError, match="2 classes"):
        distillation_loss(torch.zeros(2, 1), torch.zeros(2, 1), labels)


def test_student_layers_are_evenly_spaced_from_layer_0():
    assert student_layers(6, 3) == [0, 2, 4]
    assert student_layers(12, 6) == [0, 2, 4, 6, 8, 10]
    assert student_layers(6, 2) == [0, 3]
    assert student_layers(6, 6) == list(range(6))
    with pytest.raises(ValueError, match="between 1 and 6"):
        student_layers(6, 7)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_make_student_copies_embeddings_every_other_layer_pooler_and_classifier(
    minilm_classifier, minilm_batch
):
    teacher = minilm_classifier
    before = copy.deepcopy(teacher.state_dict())
    student = make_student(teacher, 3)
    assert student.config.num_hidden_layers == 3 and len(student.bert.encoder.layer) == 3
    assert student.config.replace(num_hidden_layers=6) == teacher.config
    assert _same_weights(student.bert.embeddings, teacher.bert.embeddings)
    for i, source in enumerate([0, 2, 4]):
        assert _same_weights(student.bert.encoder.layer[i], teacher.bert.encoder.layer[source])
    assert not _same_weights(student.bert.encoder.layer[1], teacher.bert.encoder.layer[1])
    assert _same_weights(student.bert.pooler, teacher.bert.pooler)
    assert _same_weights(student.classifier, teacher.classifier)
    assert student.num_parameters() < 0.85 * teacher.num_parameters()
    with torch.no_grad():
        logits = student(**minilm_batch).logits
    assert logits.shape == (len(SENTENCES), 5) and not student.training
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    chosen = make_student(teacher, 2, layers=[1, 5])
    assert _same_weights(chosen.bert.encoder.layer[1], teacher.bert.encoder.layer[5])


def test_a_student_with_all_the_layers_is_the_teacher(minilm_classifier, minilm_batch):
    student = make_student(minilm_classifier, 6)
    with torch.no_grad():
        assert torch.equal(student(**minilm_batch).logits, minilm_classifier(**minilm_batch).logits)


def test_make_student_rejects_bad_layers(minilm_classifier):
    with pytest.raises(ValueError, match="layers 0 to 5"):
        make_student(minilm_classifier, 2, layers=[0, 6])
    with pytest.raises(ValueError, match="2 teacher layers for 3"):
        make_student(minilm_classifier, 3, layers=[0, 1])
    with pytest.raises(TypeError, match="BertForSequenceClassification"):
        make_student(minilm_classifier.bert, 2)


def test_linear_schedule_warms_up_then_decays_to_zero():
    factors = [linear_schedule(step, 4, 20) for step in range(21)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and factors[12] == pytest.approx(0.5) and factors[20] == 0.0
    assert all(a >= b for a, b in zip(factors[3:], factors[4:], strict=False))
    assert linear_schedule(0, 0, 10) == 1.0


def _mean_kl(student: nn.Module, teacher: nn.Module, batches) -> float:
    with torch.no_grad():
        return sum(
            distillation_loss(
                student(b["input_ids"], b["attention_mask"], b["token_type_ids"]).logits,
                teacher(b["input_ids"], b["attention_mask"], b["token_type_ids"]).logits,
                None,
                1.0,
                1.0,
            ).item()
            for b in batches
        ) / len(batches)


def test_distill_moves_the_student_towards_the_teacher():
    teacher = tiny_classifier(seed=1)
    torch.manual_seed(5)
    student = BertForSequenceClassification(CONFIG.replace(num_hidden_layers=1), num_labels=3)
    train, held_out = labelled_batches(4, seed=0), labelled_batches(2, seed=50)
    teacher_before = copy.deepcopy(teacher.state_dict())
    gap_before = _mean_kl(student, teacher, held_out)
    losses = distill(
        teacher, student, train, steps=40, temperature=2.0, alpha=1.0, lr=2e-3, show_progress=False
    )
    assert len(losses) == 40 and all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-8:]) < 0.5 * sum(losses[:8])
    assert _mean_kl(student, teacher, held_out) < 0.5 * gap_before
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())
    assert not teacher.training and not student.training
    assert all(p.grad is None for p in teacher.parameters())


def test_distill_needs_labels_unless_alpha_is_one():
    teacher = tiny_classifier()
    student = make_student(teacher, 1)
    batches = [{k: v for k, v in labelled_batches(1)[0].items() if k != "labels"}]
    with pytest.raises(KeyError, match="labels"):
        distill(teacher, student, batches, steps=1, alpha=0.5, show_progress=False)
    with pytest.raises(ValueError, match="empty"):
        distill(teacher, student, [], steps=1, show_progress=False)
    with pytest.raises(ValueError, match="ran out after one pass"):
        distill(teacher, student, iter(labelled_batches(1)), steps=2, show_progress=False)


# ----------------------------------------------------------------------------
# Int8 quantization
# ----------------------------------------------------------------------------


def test_quantize_symmetric_by_hand_and_by_its_definition():
    q, scale = quantize_symmetric(torch.tensor([[-2.0, 0.9, 0.3], [0.0, 0.0, 0.0]]))
    assert q.dtype == torch.int8 and scale.dtype == torch.float32
    assert q.tolist() == [[-127, 57, 19], [0, 0, 0]]  # 0.9 * 63.5 = 57.15, 0.3 * 63.5 = 19.05
    assert scale.tolist() == pytest.approx([2.0 / 127, 1.0])
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(50, 33, generator=generator) * torch.logspace(-3, 2, 50)[:, None]
    q, scale = quantize_symmetric(x)
    assert scale.shape == (50,)
    assert torch.equal(q.abs().amax(dim=1), torch.full((50,), INT8_MAX, dtype=torch.int8))
    torch.testing.assert_close(scale, x.abs().amax(dim=1) / 127)
    error = (q.float() * scale[:, None] - x).abs()
    assert bool((error <= scale[:, None] / 2 * (1 + 1e-5)).all())  # rounding to nearest
    q_rows, _ = quantize_symmetric(x[:5] * 1000)  # rows are quantized independently
    assert torch.equal(q_rows, q[:5])


def test_int8_matmul_is_exact_and_has_an_exact_fallback(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (13, 1536), generator=generator, dtype=torch.int8)
    b = torch.randint(-127, 128, (1536, 40), generator=generator, dtype=torch.int8)
    exact = a.long() @ b.long()
    assert torch.equal(compress._int8_matmul(a, b).long(), exact)

    def refuse(*args):
        raise RuntimeError("_int_mm refused for this shape")

    monkeypatch.setattr(torch, "_int_mm", refuse)
    fallback = compress._int8_matmul(a, b)
    assert fallback.dtype == torch.int32 and torch.equal(fallback.long(), exact)


def _linear_and_input(seed: int = 0):
    """A linear layer and a (3, 7, 64) input whose tokens differ in magnitude by 10^4."""
    torch.manual_seed(seed)
    linear = nn.Linear(64, 96)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 7, 64, generator=generator) * torch.logspace(-2, 2, 7)[None, :, None]
    return linear, x


def test_int8_linear_computes_dequantized_activations_times_dequantized_weights():
    linear, x = _linear_and_input()
    layer = Int8Linear.from_linear(linear)
    q_x, s_x = quantize_symmetric(x.reshape(-1, 64))
    reference = (q_x.double() * s_x.double()[:, None]) @ layer.dequantized_weight().double().t()
    reference = reference + linear.bias.double()
    with torch.no_grad():
        got = layer(x)
    assert got.shape == (3, 7, 96) and got.dtype == torch.float32
    scale = reference.abs().amax(dim=1, keepdim=True)  # per token: outputs span 10^4
    assert ((got.reshape(-1, 96).double() - reference).abs() / scale).max() < 1e-6


def test_int8_linear_is_within_the_quantization_error_bound_of_the_float_layer():
    """|x_hat . w_hat - x . w| <= sum |dx| |w| + |x| |dw| + |dx| |dw|, with |dx| <= s_x / 2
    per token and |dw| <= s_w / 2 per output channel: per-token scales keep the small tokens
    accurate (one scale for the whole input would not)."""
    linear, x = _linear_and_input(1)
    layer = Int8Linear.from_linear(linear)
    rows = x.reshape(-1, 64)
    _, s_x = quantize_symmetric(rows)
    dx = (s_x / 2)[:, None].expand_as(rows).double()
    dw = (layer.weight_scale / 2)[:, None].expand_as(linear.weight).double()
    w = linear.weight.detach().double().abs()
    bound = dx @ w.t() + rows.double().abs() @ dw.t() + dx @ dw.t()  # (tokens, out)
    with torch.no_grad():
        error = (layer(x) - linear(x)).reshape(-1, 96).double().abs()
    assert bool((error <= bound + 1e-5 * bound.amax(dim=1, keepdim=True)).all())
    assert error.max() > 0  # it is an approximation


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_quantized_minilm_is_closer_to_float_than_torchs_dynamic_quantization(
    minilm_classifier, minilm_batch
):
    """A whole padded batch through MiniLM, against torch's own dynamic int8 quantization
    (`torch.ao.quantization.quantize_dynamic` with per-channel weights: deprecated in torch
    2.13, which is why the package does not use it, but still the reference for what
    dynamic int8 costs in accuracy). Torch quantizes each batch of activations with one
    scale (per tensor, 7 bits on x86), ours each token with its own: our hidden states and
    logits must be no further from the float model's than torch's are, and both must be
    approximations (nonzero error)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    ours = quantize_linear_layers(minilm_classifier, skip=())
    reference = quantize_dynamic(
        copy.deepcopy(minilm_classifier), {nn.Linear: per_channel_dynamic_qconfig}
    )
    assert any(type(m).__name__ == "Linear" and m.__module__.startswith("torch.ao") for m in
               reference.modules())  # fmt: skip
    real = minilm_batch["attention_mask"].bool()
    with torch.no_grad():
        outputs = [m(**minilm_batch).logits for m in (minilm_classifier, ours, reference)]
        hidden = [
            m.bert(**minilm_batch).last_hidden_state[real]
            for m in (minilm_classifier, ours, reference)
        ]
    our_error = (hidden[1] - hidden[0]).abs().mean()
    reference_error = (hidden[2] - hidden[0]).abs().mean()
    assert 0 < our_error <= reference_error
    our_logit_error = (outputs[1] - outputs[0]).abs().max()
    reference_logit_error = (outputs[2] - outputs[0]).abs().max()
    assert 0 < our_logit_error <= reference_logit_error


def test_quantize_linear_layers_replaces_a_copy_and_skips_the_head():
    model = tiny_classifier()
    quantized = quantize_linear_layers(model)
    assert all(
        type(m) is nn.Linear for m in model.modules() if isinstance(m, (nn.Linear, Int8Linear))
    )
    assert isinstance(quantized.classifier, nn.Linear)
    replaced = [name for name, m in quantized.named_modules() if isinstance(m, Int8Linear)]
    assert len(replaced) == 3 * 6 + 1  # q, k, v, attention output, intermediate, output; pooler
    assert "bert.pooler.dense" in replaced
    everything = quantize_linear_layers(model, skip=())
    assert isinstance(everything.classifier, Int8Linear)
    keep_ffn = quantize_linear_layers(model, skip=("intermediate.dense", "output.dense"))
    assert isinstance(keep_ffn.bert.encoder.layer[0].intermediate.dense, nn.Linear)
    assert isinstance(keep_ffn.bert.encoder.layer[0].attention.output.dense, nn.Linear)
    assert isinstance(keep_ffn.bert.encoder.layer[0].attention.self.query, Int8Linear)


def test_a_quantized_state_dict_saves_and_loads(tmp_path):
    model = tiny_classifier()
    quantized = quantize_linear_layers(model)
    path = tmp_path / "int8.pt"
    torch.save(quantized.state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert state["bert.encoder.layer.0.attention.self.query.weight_int8"].dtype == torch.int8
    other = quantize_linear_layers(tiny_classifier(seed=9))  # other weights, same structure
    other.load_state_dict(state, strict=True)
    ids, mask, segments = random_batch(97, batch=3, length=10, seed=4)
    with torch.no_grad():
        assert torch.equal(other(ids, mask, segments).logits, quantized(ids, mask, segments).logits)


def test_linear_weight_bytes_and_size_on_disk():
    model = tiny_classifier()
    h, i, layers = CONFIG.hidden_size, CONFIG.intermediate_size, CONFIG.num_hidden_layers
    per_layer = 4 * h * h + 2 * h * i  # q, k, v, attention output; the two feed-forward layers
    float_bytes = 4 * (layers * per_layer + h * h + h * 3)  # + pooler + classifier
    assert linear_weight_bytes(model) == float_bytes
    quantized = quantize_linear_layers(model)
    scales = layers * (4 * h + i + h) + h  # one float32 per output channel
    assert linear_weight_bytes(quantized) == layers * per_layer + h * h + 4 * scales + 4 * h * 3
    assert size_on_disk(quantized) < size_on_disk(model)
    assert size_on_disk(model) > 4 * sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------
# Head importance and pruning
# ----------------------------------------------------------------------------


def _gated(model: nn.Module, gates: list[torch.Tensor]):
    """Set probs_transform on every layer: head h's probabilities times gates[layer][h]."""
    for layer, gate in zip(model.bert.encoder.layer, gates, strict=True):
        layer.attention.self.probs_transform = compress._gating(gate)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_pruning_heads_equals_gating_them_to_zero(implementation):
    model = tiny_classifier(attn_implementation=implementation)
    heads = {0: [1, 3], 2: [0, 1, 2, 3]}  # layer 2 loses every head
    pruned = prune_heads(model, heads)
    ids, mask, segments = random_batch(97, batch=4, length=13, seed=2)
    gates = [torch.ones(4) for _ in range(3)]
    gates[0][[1, 3]] = 0.0
    gates[2][:] = 0.0
    with torch.no_grad():
        got = pruned(ids, mask, segments).logits
        hidden = pruned.bert(ids, mask, segments).last_hidden_state
        _gated(model, gates)
        expected = model(ids, mask, segments).logits
        expected_hidden = model.bert(ids, mask, segments).last_hidden_state
        _gated(model, [None] * 3)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(hidden, expected_hidden, rtol=0, atol=1e-5)
    first = pruned.bert.encoder.layer[0]
    assert first.attention.self.query.weight.shape == (24, 48)
    assert first.attention.self.value.bias.shape == (24,)
    assert first.attention.output.dense.weight.shape == (48, 24)
    assert first.attention.self.num_attention_heads == 2 and first.attention.self.kept_heads == [
        0,
        2,
    ]
    assert pruned.bert.encoder.layer[2].attention.self.all_head_size == 0
    assert model.bert.encoder.layer[0].attention.self.query.weight.shape == (48, 48)  # unchanged
    assert pruned.num_parameters() < model.num_parameters()


def test_pruned_model_equals_transformers_pruned_with_its_own_utility():
    """transformers 5 has no prune_heads any more, but its prune_linear_layer and a forward
    that reads the head count from the projections' shapes: prune its twin that way."""
    from transformers.pytorch_utils import prune_linear_layer

    model = tiny_classifier(attn_implementation="eager")
    heads = {0: [2], 1: [0, 1, 3]}
    twin = model.to_hf().eval()
    for layer, removed in heads.items():
        attention = twin.bert.encoder.layer[layer].attention
        size = CONFIG.head_size
        kept = [h for h in range(4) if h not in removed]
        index = torch.tensor([h * size + d for h in kept for d in range(size)])
        attention.self.query = prune_linear_layer(attention.self.query, index)
        attention.self.key = prune_linear_layer(attention.self.key, index)
        attention.self.value = prune_linear_layer(attention.self.value, index)
        attention.output.dense = prune_linear_layer(attention.output.dense, index, dim=1)
    pruned = prune_heads(model, heads)
    ids, mask, segments = random_batch(97, batch=4, length=13, seed=7)
    with torch.no_grad():
        expected = twin(input_ids=ids, attention_mask=mask, token_type_ids=segments).logits
        got = pruned(ids, mask, segments).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_pruning_again_numbers_heads_as_in_the_original():
    model = tiny_classifier()
    once = prune_heads(model, {1: [0, 2, 3]})
    twice = prune_heads(prune_heads(model, {1: [2]}), {1: [0, 2, 3]})  # 2 already gone
    assert twice.bert.encoder.layer[1].attention.self.kept_heads == [1]
    ids, mask, segments = random_batch(97, seed=3)
    with torch.no_grad():
        assert torch.equal(once(ids, mask, segments).logits, twice(ids, mask, segments).logits)
    with pytest.raises(ValueError, match="heads 0 to 3"):
        prune_heads(model, {0: [4]})
    with pytest.raises(ValueError, match="layers 0 to 2"):
        prune_heads(model, {3: [0]})


def test_head_importance_equals_gradients_of_gates_on_the_values():
    """An independent route to the same derivative: gate each head by scaling its value
    vectors (a forward hook on `value`), as the head's output is linear in them too."""
    model = tiny_classifier()
    batches = labelled_batches(3)
    importance = head_importance(model, batches, normalize=False)
    assert importance.shape == (3, 4)
    gates = [torch.ones(4, requires_grad=True) for _ in range(3)]
    hooks = [
        layer.attention.self.value.register_forward_hook(
            lambda module, inputs, output, gate=gate: output * gate.repeat_interleave(12)
        )
        for layer, gate in zip(model.bert.encoder.layer, gates, strict=True)
    ]
    expected = torch.zeros(3, 4)
    try:
        for batch in batches:
            loss = model(**batch).loss
            expected += torch.stack(torch.autograd.grad(loss, gates)).abs()
    finally:
        for hook in hooks:
            hook.remove()
    torch.testing.assert_close(importance, expected, rtol=1e-4, atol=1e-7)
    assert bool((importance > 0).all())
    normalized = head_importance(model, batches)
    torch.testing.assert_close(
        normalized, expected / expected.norm(dim=1, keepdim=True), rtol=1e-4, atol=1e-7
    )
    torch.testing.assert_close(normalized.norm(dim=1), torch.ones(3))


def test_head_importance_leaves_the_model_as_it_was():
    model = tiny_classifier().train()
    sentinel = compress._gating(torch.ones(4))
    model.bert.encoder.layer[1].attention.self.probs_transform = sentinel
    head_importance(model, labelled_batches(1))
    assert model.training
    assert model.bert.encoder.layer[1].attention.self.probs_transform is sentinel
    assert model.bert.encoder.layer[0].attention.self.probs_transform is None
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(KeyError, match="labels"):
        head_importance(model, [{"input_ids": torch.ones(1, 3, dtype=torch.long)}])
    with pytest.raises(ValueError, match="before pruning"):
        head_importance(prune_heads(model, {0: [1], 1: [1], 2: [1]}), labelled_batches(1))


def test_least_important_heads_ranks_across_layers():
    importance = torch.tensor([[0.5, 0.1, 0.9], [0.2, 0.05, 0.7]])
    assert least_important_heads(importance, 0) == {}
    assert least_important_heads(importance, 3) == {0: [1], 1: [0, 1]}
    assert least_important_heads(importance, 6) == {0: [0, 1, 2], 1: [0, 1, 2]}
    assert least_important_heads(torch.ones(2, 2), 3) == {0: [0, 1], 1: [0]}  # ties: in order
    with pytest.raises(ValueError, match="between 0 and 6"):
        least_important_heads(importance, 7)


def test_classifier_accuracy_and_accuracy_as_heads_are_removed():
    model = tiny_classifier()
    batches = labelled_batches(3)
    with torch.no_grad():
        hits = [
            (
                model(b["input_ids"], b["attention_mask"], b["token_type_ids"]).logits.argmax(-1)
                == b["labels"]
            )
            for b in batches
        ]
    expected = torch.cat(hits).float().mean().item()
    assert classifier_accuracy(model, batches) == pytest.approx(expected)
    importance = head_importance(model, batches)
    remaining = []

    def evaluate(pruned):
        remaining.append(
            sum(layer.attention.self.num_attention_heads for layer in pruned.bert.encoder.layer)
        )
        return classifier_accuracy(pruned, batches)

    rows = accuracy_as_heads_are_removed(model, importance, evaluate, (0.0, 0.25, 0.5, 1.0))
    assert [row["heads_removed"] for row in rows] == [0, 3, 6, 12]
    assert remaining == [12, 9, 6, 0]
    assert rows[0]["accuracy"] == pytest.approx(expected)
    least = least_important_heads(importance, 3)
    assert rows[1]["accuracy"] == pytest.approx(
        classifier_accuracy(prune_heads(model, least), batches)
    )
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        accuracy_as_heads_are_removed(model, importance, evaluate, (1.5,))


# ----------------------------------------------------------------------------
# ONNX
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny classifier exported from a one-row padded example, and the warnings."""
    model = tiny_classifier(seed=3).train()  # export must not care, nor change it
    ids, mask, segments = random_batch(97, batch=2, length=9, seed=1)
    ids, mask, segments = ids[1:], mask[1:], segments[1:]  # (1, 9), padded
    assert not mask.all()
    path = tmp_path_factory.mktemp("onnx") / "classifier.onnx"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(
            model, path, {"input_ids": ids, "attention_mask": mask, "token_type_ids": segments}
        )
    return model, path, caught


def test_export_onnx_writes_one_checked_file_without_warnings(exported):
    import onnx

    model, path, caught = exported
    assert [str(w.message) for w in caught] == []
    assert model.training  # the mode is restored
    assert sorted(p.name for p in path.parent.iterdir()) == ["classifier.onnx"]  # weights inside
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    for tensor in graph.graph.input:
        dims = tensor.type.tensor_type.shape.dim
        assert all(d.dim_param and not d.dim_value for d in dims)  # dynamic batch and length


@pytest.mark.parametrize(
    ("batch", "length", "padded"), [(5, 17, True), (3, 6, False), (1, 31, False), (7, 4, True)]
)
def test_onnx_logits_match_pytorch_on_other_shapes_with_and_without_padding(
    exported, batch, length, padded
):
    model, path, _ = exported
    session = onnx_session(path, num_threads=1)
    ids, mask, segments = random_batch(97, batch=batch, length=length, seed=batch + length)
    if not padded:
        mask = torch.ones_like(mask)
    assert bool((mask == 0).any()) == padded
    model.eval()
    with torch.no_grad():
        expected = model(ids, mask, segments).logits.numpy()
    got = run_onnx(session, ids, mask, segments)
    assert got.shape == (batch, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    if not padded:  # the defaults: no padding, segment 0
        with torch.no_grad():
            plain = model(ids).logits.numpy()
        np.testing.assert_allclose(run_onnx(session, ids.tolist()), plain, rtol=0, atol=1e-4)


def test_export_onnx_rejects_other_models_and_layers_without_heads(tmp_path):
    model = BertModel(CONFIG)
    example = {"input_ids": torch.ones(2, 3, dtype=torch.long)}
    with pytest.raises(TypeError, match="BertForSequenceClassification"):
        export_onnx(model, tmp_path / "m.onnx", example)
    headless = prune_heads(tiny_classifier(), {1: [0, 1, 2, 3]})
    with pytest.raises(ValueError, match=r"layers \[1\] have no attention heads left"):
        export_onnx(headless, tmp_path / "m.onnx", example)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------
# Latency
# ----------------------------------------------------------------------------


def test_latency_ms_calls_warmup_plus_repeats_times():
    calls = []
    result = latency_ms(lambda: calls.append(1), repeats=7, warmup=2)
    assert len(calls) == 9
    assert isinstance(result, float) and result >= 0.0
    with pytest.raises(ValueError, match="repeats"):
        latency_ms(lambda: None, repeats=0)
