"""bertcourse.interpret against transformers (hidden states), captum (attributions), scipy
(ranks), sklearn (probes), hand-built attention maps and slow loops, on padded batches."""

import json
import math
import random

import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, LayerIntegratedGradients
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression

from bertcourse import BertConfig, BertForSequenceClassification, BertModel, BertTokenizer
from bertcourse.interpret import (
    IG_METHODS,
    attention_rollout,
    attention_statistics,
    attention_statistics_from_maps,
    control_labels,
    embedding_forward,
    hidden_states_per_layer,
    input_x_gradient,
    integrated_gradients,
    integration_points,
    permuted_attention,
    probe_layers,
    rank_correlation,
    token_attributions,
    train_probe,
    word_features,
)

# initializer_range 0.2 (BERT's is 0.02) so that a random model's outputs depend on its inputs
# enough for attributions to be far from zero.
CONFIG = BertConfig(
    vocab_size=97,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=40,
    initializer_range=0.2,
)
# The same shape with MiniLM's vocabulary, for the tests that tokenize real text.
TEXT_CONFIG = CONFIG.replace(vocab_size=30522, max_position_embeddings=64)
CLS, SEP, PAD = 101, 102, 0


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer.from_pretrained("minilm")


def _padded_batch(seed: int = 0):
    """3 sentences of lengths 11, 7, 4 (right padding), [CLS] ... [SEP], two segments in row 0."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 97, (3, 11), generator=generator)
    lengths = torch.tensor([11, 7, 4])
    mask = (torch.arange(11)[None, :] < lengths[:, None]).long()
    ids[:, 0] = 2  # stands for [CLS]
    ids[torch.arange(3), lengths - 1] = 3  # [SEP]
    ids = ids.masked_fill(mask == 0, 0)
    segments = torch.zeros_like(ids)
    segments[0, 6:] = 1
    return ids, mask, segments


def _classifier(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(CONFIG, num_labels=3).eval()


# ----------------------------------------------------------------------------
# Hidden states
# ----------------------------------------------------------------------------


def test_hidden_states_equal_transformers_output_hidden_states():
    torch.manual_seed(0)
    model = BertModel(CONFIG).eval()
    reference = model.to_hf().eval()
    ids, mask, segments = _padded_batch()
    with torch.no_grad():
        ours = hidden_states_per_layer(model, ids, mask, segments)
        theirs = reference(
            ids, attention_mask=mask, token_type_ids=segments, output_hidden_states=True
        ).hidden_states
        last = model(ids, mask, segments).last_hidden_state
    assert len(ours) == len(theirs) == CONFIG.num_hidden_layers + 1
    real = mask.bool()
    for layer, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a.shape == (3, 11, CONFIG.hidden_size)
        assert (a - b)[real].abs().max().item() < 1e-5, layer
    assert (ours[-1] - last)[real].abs().max().item() < 1e-5
    assert not torch.allclose(ours[0], ours[1])  # the layers do something


# ----------------------------------------------------------------------------
# Attention statistics on hand-built maps
# ----------------------------------------------------------------------------

# Row 0: [CLS] a b c d [SEP], where a and b are two pieces of one word; row 1: [CLS] a b [SEP]
# and two padding positions.
HAND_IDS = torch.tensor([[CLS, 5, 6, 7, 8, SEP], [CLS, 5, 6, SEP, PAD, PAD]])
HAND_MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
HAND_WORDS = torch.tensor([[-1, 0, 0, 1, 2, -1], [-1, 0, 1, -1, -1, -1]])
HAND_HEADS = ("previous", "[SEP]", "uniform", "[CLS]", "same word", "next", "self")


def _hand_maps(garbage_in_padding: bool = False) -> torch.Tensor:
    """(B, 7 heads, T, T) maps whose statistics are known by construction."""
    batch, length = HAND_IDS.shape
    maps = torch.zeros(batch, len(HAND_HEADS), length, length)
    for b in range(batch):
        n = int(HAND_MASK[b].sum())
        sep = int((HAND_IDS[b] == SEP).nonzero())
        for i in range(n):
            maps[b, 0, i, max(i - 1, 0)] = 1.0  # previous (query 0: itself)
            maps[b, 1, i, sep] = 1.0
            maps[b, 2, i, :n] = 1.0 / n
            maps[b, 3, i, 0] = 1.0
            word = int(HAND_WORDS[b, i])
            others = [j for j in range(n) if j != i and word >= 0 and HAND_WORDS[b, j] == word]
            maps[b, 4, i, others[0] if others else i] = 1.0
            maps[b, 5, i, min(i + 1, n - 1)] = 1.0  # next (the last query: itself)
            maps[b, 6, i, i] = 1.0
        if garbage_in_padding:  # padded query rows: anything, all of it on [CLS] and [SEP]
            maps[b, :, n:, 0] = 0.5
            maps[b, :, n:, sep] = 0.5
    return maps


def test_attention_statistics_of_hand_built_heads():
    maps = _hand_maps()
    stats = attention_statistics_from_maps(
        [maps, maps.flip(1)], HAND_IDS, HAND_MASK, HAND_WORDS, CLS, SEP
    )
    assert stats.num_queries == 10 and stats.num_word_queries == 2
    assert stats.to_cls.shape == (2, 7)
    mean_log_keys = (6 * math.log(6) + 4 * math.log(4)) / 10
    assert stats.mean_log_keys == pytest.approx(mean_log_keys)
    head = {name: index for index, name in enumerate(HAND_HEADS)}
    expected = {  # (statistic, head): value, for layer 0
        ("to_previous", "previous"): 0.8,  # 8 of the 10 queries have a previous token
        ("to_next", "next"): 0.8,
        ("to_sep", "[SEP]"): 1.0,
        ("to_cls", "[CLS]"): 1.0,
        ("to_same_word", "same word"): 1.0,
        ("entropy", "uniform"): mean_log_keys,
        ("entropy", "self"): 0.0,
        ("to_cls", "uniform"): (6 * (1 / 6) + 4 * (1 / 4)) / 10,
        ("to_previous", "self"): 0.0,
        ("to_same_word", "self"): 0.0,
        ("to_cls", "previous"): 0.4,  # [CLS] attends to itself, the first word to [CLS]
        ("to_sep", "next"): 0.4,
    }
    for (statistic, name), value in expected.items():
        got = getattr(stats, statistic)
        assert got[0, head[name]].item() == pytest.approx(value), (statistic, name)
        # layer 1 holds the same heads in reverse order
        assert got[1, len(HAND_HEADS) - 1 - head[name]].item() == pytest.approx(value)
    assert stats.patterns()[0] == [
        "previous",
        "[SEP]",
        "broad",
        "[CLS]",
        "same word",
        "next",
        "mixed",
    ]
    assert stats.patterns()[1] == stats.patterns()[0][::-1]
    assert stats.summary() == {
        "[CLS]": 2, "[SEP]": 2, "previous": 2, "next": 2, "same word": 2, "broad": 2, "mixed": 2,
    }  # fmt: skip
    # A threshold above every weight leaves only broad and mixed heads.
    assert set(stats.summary(threshold=1.01)) >= {"broad", "mixed"}
    assert stats.summary(threshold=1.01)["mixed"] + stats.summary(threshold=1.01)["broad"] == 14
    dumped = json.loads(json.dumps(stats.as_dict()))
    assert dumped["to_sep"][0][1] == pytest.approx(1.0) and dumped["num_queries"] == 10


def test_attention_statistics_ignore_padded_queries_and_handle_no_multi_piece_words():
    clean = attention_statistics_from_maps(
        [_hand_maps()], HAND_IDS, HAND_MASK, HAND_WORDS, CLS, SEP
    )
    garbage = attention_statistics_from_maps(
        [_hand_maps(garbage_in_padding=True)], HAND_IDS, HAND_MASK, HAND_WORDS, CLS, SEP
    )
    for name in ("to_cls", "to_sep", "to_previous", "to_next", "to_same_word", "entropy"):
        torch.testing.assert_close(getattr(garbage, name), getattr(clean, name))
    # Every word a single piece: no query counts for to_same_word, which is NaN, never a pattern.
    single = attention_statistics_from_maps(
        [_hand_maps()],
        HAND_IDS,
        HAND_MASK,
        torch.tensor([[-1, 0, 1, 2, 3, -1], [-1, 0, 1, -1, -1, -1]]),
        CLS,
        SEP,
    )
    assert single.num_word_queries == 0 and bool(single.to_same_word.isnan().all())
    assert "same word" not in sum(single.patterns(), [])
    assert json.loads(json.dumps(single.as_dict()))["to_same_word"][0][0] is None
    with pytest.raises(ValueError, match="attentions\\[0\\] has shape"):
        attention_statistics_from_maps(
            [_hand_maps()[:, :, :5]], HAND_IDS, HAND_MASK, HAND_WORDS, CLS, SEP
        )


def _slow_statistics(model, tokenizer, texts):
    """Each sentence alone (no padding), every query by a Python loop."""
    names = ("to_cls", "to_sep", "to_previous", "to_next", "to_same_word", "entropy")
    layers, heads = CONFIG.num_hidden_layers, CONFIG.num_attention_heads
    sums = {name: torch.zeros(layers, heads, dtype=torch.float64) for name in names}
    queries = word_queries = 0
    for text in texts:
        encoding = tokenizer(text, return_offsets_mapping=True)
        ids, words = encoding["input_ids"], encoding.word_ids()
        with torch.no_grad():
            maps = model(torch.tensor([ids]), output_attentions=True).attentions
        n = len(ids)
        queries += n
        for i in range(n):
            pieces = [
                j for j in range(n) if j != i and words[i] is not None and words[j] == words[i]
            ]
            word_queries += bool(pieces)
            for layer in range(layers):
                for head in range(heads):
                    row = maps[layer][0, head, i].double()
                    total = sums  # short name for the lines below
                    total["to_cls"][layer, head] += sum(row[j] for j in range(n) if ids[j] == CLS)
                    total["to_sep"][layer, head] += sum(row[j] for j in range(n) if ids[j] == SEP)
                    total["to_previous"][layer, head] += row[i - 1] if i > 0 else 0.0
                    total["to_next"][layer, head] += row[i + 1] if i < n - 1 else 0.0
                    total["to_same_word"][layer, head] += sum(row[j] for j in pieces)
                    total["entropy"][layer, head] -= sum(
                        p * math.log(p) for p in row.tolist() if p > 0
                    )
    means = {
        name: sums[name] / (word_queries if name == "to_same_word" else queries) for name in names
    }
    return means, queries, word_queries


def test_attention_statistics_of_a_model_equal_a_slow_loop(tokenizer):
    torch.manual_seed(0)
    model = BertModel(TEXT_CONFIG).eval()
    texts = [
        "Tokenization splits unbelievably rare words into pieces.",
        "Hi.",
        "The cat sat on the mat.",
        "WordPiece vocabularies cover misspellings like anticonstitutionnellement.",
        "A short one",
        "Attention heads look at [SEP] when they have nothing better to do.",
    ]
    stats = attention_statistics(model, tokenizer, texts, batch_size=4)
    expected, queries, word_queries = _slow_statistics(model, tokenizer, texts)
    assert stats.num_queries == queries and stats.num_word_queries == word_queries > 0
    for name, value in expected.items():
        torch.testing.assert_close(getattr(stats, name), value, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="model.eval"):
        attention_statistics(model.train(), tokenizer, texts)


# ----------------------------------------------------------------------------
# Attention rollout
# ----------------------------------------------------------------------------


def _slow_rollout(attentions, mask, residual=True):
    batch, _, length, _ = attentions[0].shape
    result = torch.zeros(batch, length, length, dtype=torch.float64)
    for b in range(batch):
        n = int(mask[b].sum())
        rollout = torch.eye(n, dtype=torch.float64)
        for probs in attentions:
            a = probs[b].double().mean(0)[:n, :n]
            if residual:
                a = 0.5 * a + 0.5 * torch.eye(n, dtype=torch.float64)
            a = a / a.sum(-1, keepdim=True)
            rollout = a @ rollout
        result[b, :n, :n] = rollout
    return result


def test_rollout_by_hand_two_tokens_two_layers():
    first = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])  # (1, 1, 2, 2)
    second = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])
    # 0.5 A + 0.5 I: [[1, 0], [.25, .75]] then [[.5, .5], [.5, .5]]; R = A2 @ A1.
    expected = torch.tensor([[[0.625, 0.375], [0.625, 0.375]]])
    torch.testing.assert_close(attention_rollout([first, second]), expected)
    # Without the residual, R = A2 @ A1 of the maps themselves.
    torch.testing.assert_close(
        attention_rollout([first, second], residual=False),
        torch.tensor([[[0.5, 0.5], [1.0, 0.0]]]),
    )


def test_rollout_by_hand_three_tokens_with_padding():
    # Two heads whose mean has weight on the padding key (row 0) and a padded query (row 2).
    head = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.4, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    maps = torch.stack([head, head])[None]  # (1, 2, 3, 3)
    mask = torch.tensor([[1, 1, 0]])
    # Padding key dropped: row 0 (.2, .3) + .5 I = (.6, .15) -> renormalised (.8, .2).
    expected = torch.tensor([[[0.8, 0.2, 0.0], [0.3, 0.7, 0.0], [0.0, 0.0, 0.0]]])
    torch.testing.assert_close(attention_rollout([maps], mask), expected)


@pytest.mark.parametrize("residual", [True, False])
def test_rollout_equals_a_slow_loop_and_rows_sum_to_one(residual):
    model = BertModel(CONFIG).eval()
    ids, mask, segments = _padded_batch(seed=3)
    with torch.no_grad():
        attentions = model(ids, mask, segments, output_attentions=True).attentions
    rollout = attention_rollout(attentions, mask, residual=residual)
    torch.testing.assert_close(rollout.double(), _slow_rollout(attentions, mask, residual))
    real = mask.bool()
    torch.testing.assert_close(rollout.sum(-1)[real], torch.ones(int(real.sum())))
    assert rollout[~real].abs().max() == 0 and rollout.transpose(1, 2)[~real].abs().max() == 0


# ----------------------------------------------------------------------------
# Gradient attributions against captum
# ----------------------------------------------------------------------------


def test_integration_points_are_captums():
    from captum.attr._utils.approximation_methods import approximation_parameters

    for method in IG_METHODS:
        step_sizes, alphas = approximation_parameters(method)
        ours_alphas, ours_weights = integration_points(7, method)
        assert ours_alphas == pytest.approx(alphas(7), abs=1e-7), method
        assert ours_weights == pytest.approx(step_sizes(7), abs=1e-7), method
    with pytest.raises(ValueError, match="Unknown method"):
        integration_points(5, "simpson")
    with pytest.raises(ValueError, match="n_steps >= 2"):
        integration_points(1, "riemann_left")


@pytest.mark.parametrize("method", IG_METHODS)
@pytest.mark.parametrize("probabilities", [True, False])
def test_integrated_gradients_equal_captum(method, probabilities):
    model = _classifier()
    ids, mask, segments = _padded_batch()
    embeddings = model.bert.embeddings.word_embeddings(ids).detach()
    baselines = 0.1 * torch.randn(embeddings.shape, generator=torch.Generator().manual_seed(1))
    forward = embedding_forward(model, mask, segments, probabilities=probabilities)
    target = torch.tensor([0, 2, 1])
    ours, delta = integrated_gradients(
        forward,
        embeddings,
        baselines,
        target,
        n_steps=12,
        method=method,
        return_convergence_delta=True,
    )
    theirs, their_delta = IntegratedGradients(forward).attribute(
        embeddings,
        baselines,
        target=target,
        n_steps=12,
        method=method,
        return_convergence_delta=True,
    )
    scale = theirs.abs().max().item()
    assert scale > 1e-3  # attributions worth comparing
    assert (ours - theirs).abs().max().item() < 1e-4 * max(1.0, scale)
    assert (delta - their_delta).abs().max().item() < 1e-4
    # Chunks of whole steps: the same numbers.
    chunked = integrated_gradients(
        forward, embeddings, baselines, target, n_steps=12, method=method, internal_batch_size=7
    )
    assert (chunked - theirs).abs().max().item() < 1e-4 * max(1.0, scale)


def test_integrated_gradients_int_target_and_zero_baseline_equal_captum():
    model = _classifier(1)
    ids, mask, segments = _padded_batch(2)
    embeddings = model.bert.embeddings.word_embeddings(ids).detach()
    forward = embedding_forward(model, mask, segments, probabilities=False)
    ours = integrated_gradients(forward, embeddings, target=2, n_steps=10)
    theirs = IntegratedGradients(forward).attribute(embeddings, target=2, n_steps=10)
    assert theirs.abs().max().item() > 1e-3
    assert (ours - theirs).abs().max().item() < 1e-4


def test_input_x_gradient_equals_captum():
    model = _classifier()
    ids, mask, segments = _padded_batch()
    embeddings = model.bert.embeddings.word_embeddings(ids).detach()
    forward = embedding_forward(model, mask, segments, probabilities=False)
    for target in (1, torch.tensor([2, 0, 1])):
        ours = input_x_gradient(forward, embeddings, target)
        theirs = InputXGradient(forward).attribute(
            embeddings.clone().requires_grad_(), target=target
        )
        assert theirs.abs().max().item() > 1e-3
        assert (ours - theirs).abs().max().item() < 1e-5


def test_integrated_gradients_on_embeddings_equal_captum_layer_integrated_gradients():
    model = _classifier(2)
    ids, mask, segments = _padded_batch(1)
    baseline_ids = torch.where((ids == 2) | (ids == 3) | (mask == 0), ids, torch.ones_like(ids))

    def forward_ids(input_ids):  # captum expands the ids step after step, like the embeddings
        repeats = input_ids.shape[0] // ids.shape[0]
        return model(
            input_ids, mask.repeat(repeats, 1), segments.repeat(repeats, 1)
        ).logits.softmax(-1)

    word_embeddings = model.bert.embeddings.word_embeddings
    target = torch.tensor([1, 0, 2])
    theirs = LayerIntegratedGradients(forward_ids, word_embeddings).attribute(
        ids, baseline_ids, target=target, n_steps=16
    )
    with torch.no_grad():
        inputs, baselines = word_embeddings(ids), word_embeddings(baseline_ids)
    ours = integrated_gradients(
        embedding_forward(model, mask, segments), inputs, baselines, target, n_steps=16
    )
    assert theirs.abs().max().item() > 1e-3
    assert (ours - theirs).abs().max().item() < 1e-4


def test_integrated_gradients_are_complete_with_enough_steps():
    model = _classifier(3)
    ids, mask, segments = _padded_batch(4)
    embeddings = model.bert.embeddings.word_embeddings(ids).detach()
    forward = embedding_forward(model, mask, segments, probabilities=False)
    attributions, delta = integrated_gradients(
        forward, embeddings, None, 0, n_steps=64, return_convergence_delta=True
    )
    with torch.no_grad():
        change = forward(embeddings)[:, 0] - forward(torch.zeros_like(embeddings))[:, 0]
    assert change.abs().min() > 0.05  # something to explain
    torch.testing.assert_close(attributions.flatten(1).sum(1) - change, delta)
    assert delta.abs().max() < 1e-3 * change.abs().max()
    # Two left-Riemann steps are a poor quadrature: the check above would notice.
    _, rough = integrated_gradients(
        forward,
        embeddings,
        None,
        0,
        n_steps=2,
        method="riemann_left",
        return_convergence_delta=True,
    )
    assert rough.abs().max() > 10 * delta.abs().max()


def test_attribution_arguments_fail_clearly():
    model = _classifier()
    ids, mask, segments = _padded_batch()
    embeddings = model.bert.embeddings.word_embeddings(ids).detach()
    forward = embedding_forward(model, mask, segments)
    with pytest.raises(ValueError, match="give target="):
        integrated_gradients(forward, embeddings, n_steps=4)
    with pytest.raises(ValueError, match="one target per example"):
        input_x_gradient(forward, embeddings, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="k x 3"):
        forward(embeddings[:2])
    with pytest.raises(ValueError, match="model.eval"):
        embedding_forward(model.train(), mask)


def test_token_attributions_on_minilm_equal_captum(tokenizer):
    """The MiniLM-shaped path: real weights, a random 2-label head."""
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_hf("minilm", num_labels=2).eval()
    text = "A wonderfully clear explanation of attention."
    result = token_attributions(model, tokenizer, text, n_steps=16)
    encoding = tokenizer(text, return_tensors="pt")
    ids, mask = encoding["input_ids"], encoding["attention_mask"]
    assert result.tokens == tokenizer.convert_ids_to_tokens(ids[0].tolist())
    assert result.tokens[0] == "[CLS]" and result.tokens[-1] == "[SEP]"
    with torch.no_grad():
        probs = model(ids, mask).logits.softmax(-1)[0]
    assert result.target == int(probs.argmax())
    assert result.probability == pytest.approx(float(probs.max()), abs=1e-6)
    baseline_ids = torch.where(
        (ids == CLS) | (ids == SEP), ids, torch.full_like(ids, tokenizer.pad_token_id)
    )

    def forward_ids(input_ids):
        return model(input_ids, mask.repeat(input_ids.shape[0], 1)).logits.softmax(-1)

    theirs = LayerIntegratedGradients(forward_ids, model.bert.embeddings.word_embeddings).attribute(
        ids, baseline_ids, target=result.target, n_steps=16
    )
    assert result.scores.shape == (ids.shape[1],)
    torch.testing.assert_close(result.scores, theirs[0].sum(-1), atol=1e-5, rtol=1e-4)
    assert abs(result.delta) < 0.05
    other = token_attributions(
        model,
        tokenizer,
        text,
        target=1 - result.target,
        method="input_x_gradient",
        baseline="zeros",
    )
    assert other.target == 1 - result.target and other.delta is None
    embeddings = model.bert.embeddings.word_embeddings(ids).detach()
    expected = InputXGradient(embedding_forward(model, mask)).attribute(
        embeddings.requires_grad_(), target=other.target
    )
    torch.testing.assert_close(other.scores, expected[0].sum(-1), atol=1e-6, rtol=1e-5)
    assert [token for token, _ in result.top(3)] == [
        result.tokens[i] for i in result.scores.argsort(descending=True)[:3].tolist()
    ]


# ----------------------------------------------------------------------------
# Permuted attention
# ----------------------------------------------------------------------------


def test_permuted_attention_permutes_each_row_among_its_real_keys_only():
    model = BertModel(CONFIG).eval()
    ids, mask, segments = _padded_batch()
    with torch.no_grad():
        before = model(ids, mask, segments, output_attentions=True).attentions
        with permuted_attention(model, layers=[1], generator=torch.Generator().manual_seed(0)):
            inside = model(ids, mask, segments, output_attentions=True).attentions
    padding_keys = (mask == 0)[:, None, None, :].expand_as(inside[1])
    assert inside[1][padding_keys].abs().max() == 0  # padding keeps 0 weight
    # Each row holds the same weights in another order (layer 0 is untouched; layer 1's
    # input is unchanged since the layer below is not permuted).
    torch.testing.assert_close(inside[0], before[0])
    torch.testing.assert_close(inside[1].sort(-1).values, before[1].sort(-1).values)
    assert not torch.allclose(inside[1], before[1], atol=1e-3)


def test_permuted_attention_is_reproducible_restored_and_works_when_padding_is_skipped():
    model = _classifier()
    ids, mask, segments = _padded_batch()
    with torch.no_grad():
        original = model(ids, mask, segments).logits
        runs = []
        for seed, attentions in ((0, False), (0, True), (1, False)):
            # output_attentions=True runs the padded eager path, False skips the padding.
            with permuted_attention(model, generator=torch.Generator().manual_seed(seed)):
                runs.append(model(ids, mask, segments, output_attentions=attentions).logits)
        torch.testing.assert_close(runs[0], runs[1], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(runs[0], runs[2], atol=1e-4)
        assert not torch.allclose(runs[0], original, atol=1e-4)
        torch.testing.assert_close(model(ids, mask, segments).logits, original)
        with pytest.raises(RuntimeError, match="inside"), permuted_attention(model):
            raise RuntimeError("inside")
        torch.testing.assert_close(model(ids, mask, segments).logits, original)
    with pytest.raises(ValueError, match="layers \\[5\\] do not exist"):
        with permuted_attention(model, layers=[5]):
            pass


def test_a_layer_with_identical_scores_is_unaffected_by_permutation():
    model = _classifier(5)
    ids, mask, segments = _padded_batch()
    with torch.no_grad():
        query = model.bert.encoder.layer[0].attention.self.query
        query.weight.zero_()
        query.bias.zero_()  # every score 0: uniform attention over the real keys
        original = model(ids, mask, segments).logits
        with permuted_attention(model, layers=[0], generator=torch.Generator().manual_seed(0)):
            permuted = model(ids, mask, segments).logits
    torch.testing.assert_close(permuted, original, atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------------------------
# Rank correlation
# ----------------------------------------------------------------------------


def test_rank_correlation_equals_scipy_with_ties():
    rng = random.Random(0)
    for size in (5, 17, 60):
        a = [rng.randint(0, 6) for _ in range(size)]  # many ties
        b = [x + rng.gauss(0, 2) for x in a]
        b[: size // 3] = [round(x) for x in b[: size // 3]]
        expected = spearmanr(a, b).statistic
        assert rank_correlation(a, b) == pytest.approx(expected, abs=1e-12)
        assert rank_correlation(torch.tensor(a), torch.tensor(b)) == pytest.approx(
            expected, abs=1e-12
        )
    assert rank_correlation([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    assert math.isnan(rank_correlation([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="same length"):
        rank_correlation([1, 2, 3], [1, 2])


# ----------------------------------------------------------------------------
# Probes
# ----------------------------------------------------------------------------


def test_word_features_take_each_words_first_piece(tokenizer):
    torch.manual_seed(0)
    model = BertModel(TEXT_CONFIG).eval()
    sentences = [
        ["Tokenization", "splits", "unbelievably", "rare", "words", "."],
        ["Hi", "!"],
        ["The", "__debug__", "flag", "is", "True"],
    ]
    features = word_features(model, tokenizer, sentences, batch_size=2)
    assert len(features) == TEXT_CONFIG.num_hidden_layers + 1
    assert all(f.shape == (13, TEXT_CONFIG.hidden_size) for f in features)
    row = 0
    for words in sentences:  # one sentence at a time, pieces found by the tokenizer itself
        ids, firsts = [CLS], []
        for word in words:
            firsts.append(len(ids))
            ids += tokenizer.convert_tokens_to_ids(tokenizer.tokenize(word))
        ids.append(SEP)
        with torch.no_grad():
            states = hidden_states_per_layer(model, torch.tensor([ids]))
        for layer, state in enumerate(states):
            torch.testing.assert_close(features[layer][row : row + len(words)], state[0, firsts])
        row += len(words)
    assert len(tokenizer.tokenize("unbelievably")) > 1  # the case is about pieces
    with pytest.raises(ValueError, match="max_length=8"):
        word_features(model, tokenizer, sentences, max_length=8)


def test_control_labels_one_random_label_per_lowercased_type():
    rng = random.Random(1)
    vocabulary = [f"w{i}" for i in range(3000)]
    words = [rng.choice(vocabulary) for _ in range(20000)]
    words = [w.upper() if rng.random() < 0.3 else w for w in words]
    labels = rng.choices([0, 4, 9], weights=[0.7, 0.2, 0.1], k=len(words))
    control = control_labels(words, labels, seed=3)
    assert control == control_labels(words, labels, seed=3)
    assert control != control_labels(words, labels, seed=4)
    by_type = {}
    for word, label in zip(words, control, strict=True):
        assert by_type.setdefault(word.lower(), label) == label
    assert set(by_type.values()) <= {0, 4, 9}
    share = sum(label == 0 for label in by_type.values()) / len(by_type)
    assert abs(share - 0.7) < 0.05  # the empirical distribution, not uniform (1/3)
    assert control != labels
    with pytest.raises(ValueError, match="-100"):
        control_labels(["a", "b"], [0, -100])
    with pytest.raises(ValueError, match="one label per word"):
        control_labels(["a", "b"], [0])


def _gaussian_classes(n: int, dim: int, classes: int, spread: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=generator)
    labels = torch.randint(0, classes, (n,), generator=generator)
    return centres[labels] + spread * torch.randn(n, dim, generator=generator), labels


def test_train_probe_separable_random_and_against_sklearn():
    x, y = _gaussian_classes(600, 10, 3, 0.05, seed=0)
    assert train_probe(x[:400], y[:400], x[400:], y[400:]) == 1.0
    noise = torch.randn(600, 10, generator=torch.Generator().manual_seed(1))
    random_labels = torch.randint(0, 4, (600,), generator=torch.Generator().manual_seed(2))
    chance = train_probe(noise[:400], random_labels[:400], noise[400:], random_labels[400:])
    assert abs(chance - 0.25) < 0.1
    # Overlapping classes: the same accuracy as sklearn's logistic regression on the same
    # standardised features and the same penalty (C = 1 / (weight_decay * N)).
    x, y = _gaussian_classes(800, 20, 4, 1.2, seed=3)
    ours = train_probe(x[:500], y[:500], x[500:], y[500:], weight_decay=1e-2)
    mean, std = x[:500].mean(0), x[:500].std(0, unbiased=False)
    reference = LogisticRegression(C=1 / (1e-2 * 500), max_iter=2000).fit(
        ((x[:500] - mean) / std).numpy(), y[:500].numpy()
    )
    theirs = reference.score(((x[500:] - mean) / std).numpy(), y[500:].numpy())
    assert 0.4 < theirs < 0.99  # a case where the probes can differ
    assert abs(ours - theirs) <= 0.02
    assert ours == train_probe(x[:500], y[:500], x[500:], y[500:], weight_decay=1e-2)


def test_probe_layers_rows_selectivity_and_unknown_labels():
    x, y = _gaussian_classes(500, 8, 3, 0.3, seed=4)
    noise = torch.randn(500, 8, generator=torch.Generator().manual_seed(5))
    labels = y.clone()
    labels[::10] = -100  # unknown: dropped
    words = [f"w{i % 40}" for i in range(500)]
    rows = probe_layers([noise, x], labels, words, train_fraction=0.75)
    assert [row["layer"] for row in rows] == [0, 1]
    assert rows[1]["accuracy"] > 0.9 > rows[0]["accuracy"]
    for row in rows:
        assert row["selectivity"] == pytest.approx(row["accuracy"] - row["control_accuracy"])
    keep = labels != -100
    n_train = round(0.75 * int(keep.sum()))
    assert rows[1]["accuracy"] == train_probe(
        x[keep][:n_train], y[keep][:n_train], x[keep][n_train:], y[keep][n_train:], num_labels=3
    )
    with pytest.raises(ValueError, match="one row per word"):
        probe_layers([x[:100]], labels, words)
