"""Sentence embeddings and search, against sentence-transformers and hand-computed values.

`encode` equals `SentenceTransformer.encode` on MiniLM for every pooling, `contrastive_loss`
equals `MultipleNegativesRankingLoss`, the metrics equal `InformationRetrievalEvaluator`'s;
BM25, fusion and reranking are checked against formulas and models evaluated one at a time.
"""

import math
import random

import pytest
import torch
import transformers
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

from bertcourse import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizer,
    minilm_path,
)
from bertcourse.embeddings import (
    BiEncoder,
    EmbeddingIndex,
    PairCollator,
    bm25_search,
    contrastive_loss,
    encode,
    encode_poolings,
    evaluate_retrieval,
    mrr_at_k,
    ndcg_at_k,
    pair_examples,
    pool,
    recall_at_k,
    reciprocal_rank_fusion,
    rerank,
    retrieval_evaluator,
    retrieval_metrics,
    save_sentence_transformer,
    search,
)
from bertcourse.training import TrainingArguments, load_model_weights, train

# Very different lengths (one beyond MiniLM's 256 tokens, so truncation matters), not sorted.
TEXTS = [
    "Hi.",
    "The cat sat on the mat and looked at the garden.",
    " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 25),
    "Why not?",
    "Semantic search encodes every passage once, then compares a query vector with all of "
    "them by a single matrix product, which is fast even for a large collection.",
    "Tokenizers split rare words into pieces: unbelievable, tokenization, WordPiece.",
    "Ünïcödé accents are stripped, and 漢字 characters are split apart.",
    "A mid-sized sentence about retrieval.",
]
# A tiny encoder with MiniLM's vocabulary, for the tests where a real checkpoint is not the point.
TINY = BertConfig(
    vocab_size=30522,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=48,
    max_position_embeddings=128,
)


@pytest.fixture(scope="module")
def minilm():
    return BertModel.from_hf("minilm")


@pytest.fixture(scope="module")
def course_tokenizer():
    return BertTokenizer.from_pretrained("minilm")


@pytest.fixture(scope="module")
def fast_tokenizer():
    return transformers.AutoTokenizer.from_pretrained(str(minilm_path()))


@pytest.fixture(scope="module")
def st_transformer():
    """sentence-transformers' token encoder for MiniLM, shared by the pooling variants."""
    return Transformer(str(minilm_path()), max_seq_length=256)


def sentence_transformer(transformer, pooling: str, normalize: bool) -> SentenceTransformer:
    modules = [transformer, Pooling(384, pooling_mode=pooling)]
    if normalize:
        modules.append(Normalize())
    return SentenceTransformer(modules=modules, device="cpu")


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a.float() - b.float()).abs().max().item()


# ----------------------------------------------------------------------------
# Pooling and encoding
# ----------------------------------------------------------------------------


def test_texts_have_distinct_lengths_so_every_batch_pads(course_tokenizer):
    lengths = [
        len(ids) for ids in course_tokenizer(TEXTS, truncation=True, max_length=256)["input_ids"]
    ]
    assert len(set(lengths)) == len(TEXTS) and max(lengths) == 256
    assert lengths != sorted(lengths, reverse=True)  # batching reorders: rows must come back


@pytest.mark.parametrize("tokenizer_name", ["course_tokenizer", "fast_tokenizer"])
def test_encode_parity_with_sentence_transformers(minilm, tokenizer_name, request):
    tokenizer = request.getfixturevalue(tokenizer_name)
    reference = SentenceTransformer(str(minilm_path()), device="cpu")
    expected = reference.encode(TEXTS, convert_to_tensor=True)
    got = encode(minilm, tokenizer, TEXTS, batch_size=3, pooling="mean", normalize=True)
    assert got.shape == (len(TEXTS), 384) and got.dtype == torch.float32
    assert max_abs_diff(got, expected) < 1e-5
    assert torch.allclose(got.norm(dim=1), torch.ones(len(TEXTS)), atol=1e-5)


@pytest.mark.parametrize(
    "pooling, normalize",
    [("cls", True), ("max", True), ("mean", False)],
)
def test_poolings_parity_with_sentence_transformers_pooling(
    minilm, course_tokenizer, st_transformer, pooling, normalize
):
    reference = sentence_transformer(st_transformer, pooling, normalize)
    expected = reference.encode(TEXTS, convert_to_tensor=True)
    got = encode(
        minilm, course_tokenizer, TEXTS, batch_size=3, pooling=pooling, normalize=normalize
    )
    assert max_abs_diff(got, expected) < 1e-5
    if not normalize:
        assert (got.norm(dim=1) - 1).abs().max() > 0.1  # really not normalised


def test_encode_poolings_equals_encode_for_each_pooling(minilm, course_tokenizer):
    short = [text for text in TEXTS if len(text) < 100]
    together = encode_poolings(minilm, course_tokenizer, short, batch_size=2)
    assert sorted(together) == ["cls", "max", "mean"]
    for name, vectors in together.items():
        alone = encode(minilm, course_tokenizer, short, batch_size=4, pooling=name)
        assert max_abs_diff(vectors, alone) < 1e-5


def test_encode_rejects_a_bare_string_and_handles_no_texts(minilm, course_tokenizer):
    with pytest.raises(TypeError, match=r"wrap a single text as \[text\]"):
        encode(minilm, course_tokenizer, "one text")
    with pytest.raises(ValueError, match="Unknown pooling 'sum'"):
        encode(minilm, course_tokenizer, ["a"], pooling="sum")
    assert encode(minilm, course_tokenizer, []).shape == (0, 384)
    minilm.train()
    encode(minilm, course_tokenizer, ["a"])
    assert minilm.training  # the mode is restored
    minilm.eval()


def padded_states():
    """(2, 4, 3) token vectors, rows of 3 and 2 real tokens; the padding holds huge values."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 4, 3, generator=generator)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    hidden = hidden.masked_fill(mask.unsqueeze(-1) == 0, 1e6)
    return hidden, mask


def test_pool_mean_and_cls_ignore_padding():
    hidden, mask = padded_states()
    mean = pool(hidden, mask, "mean")
    torch.testing.assert_close(mean[0], hidden[0, :3].mean(0))
    torch.testing.assert_close(mean[1], hidden[1, :2].mean(0))
    torch.testing.assert_close(pool(hidden, mask, "cls"), hidden[:, 0])
    assert mean.abs().max() < 10


def test_pool_max_ignores_padding_even_below_zero():
    hidden, mask = padded_states()
    negative = -hidden.abs() - 1  # every real value is negative ...
    negative = negative.masked_fill(mask.unsqueeze(-1) == 0, 0.0)  # ... the padding is 0
    got = pool(negative, mask, "max")
    torch.testing.assert_close(got[0], negative[0, :3].max(0).values)
    torch.testing.assert_close(got[1], negative[1, :2].max(0).values)
    assert (got < 0).all()


def test_pool_rejects_unknown_names():
    hidden, mask = padded_states()
    with pytest.raises(ValueError, match="'first'; choose one of cls, mean, max"):
        pool(hidden, mask, "first")


# ----------------------------------------------------------------------------
# The contrastive loss
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 4, 9])
@pytest.mark.parametrize("scale", [1.0, 20.0, 50.0])
def test_contrastive_loss_parity_with_multiple_negatives_ranking_loss(batch, scale):
    generator = torch.Generator().manual_seed(batch)
    queries, passages, negatives = torch.randn(3, batch, 16, generator=generator).unbind(0)
    reference = MultipleNegativesRankingLoss(None, scale=scale)
    expected = reference.compute_loss_from_embeddings([queries, passages], None)
    got = contrastive_loss(queries, passages, scale=scale)
    torch.testing.assert_close(got, expected)
    expected = reference.compute_loss_from_embeddings([queries, passages, negatives], None)
    got = contrastive_loss(queries, passages, negatives, scale=scale)
    torch.testing.assert_close(got, expected)


def test_contrastive_loss_at_random_is_log_of_the_candidates():
    same = torch.ones(6, 8)
    torch.testing.assert_close(contrastive_loss(same, same), torch.tensor(math.log(6)))
    negatives = torch.ones(6, 8)
    torch.testing.assert_close(contrastive_loss(same, same, negatives), torch.tensor(math.log(12)))


def test_contrastive_loss_gradient_equals_the_reference():
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(5, 16, generator=generator, requires_grad=True)
    passages = torch.randn(5, 16, generator=generator, requires_grad=True)
    got = torch.autograd.grad(contrastive_loss(queries, passages), (queries, passages))
    reference = MultipleNegativesRankingLoss(None)
    loss = reference.compute_loss_from_embeddings([queries, passages], None)
    expected = torch.autograd.grad(loss, (queries, passages))
    for a, b in zip(got, expected, strict=True):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b)


def test_contrastive_loss_rejects_unpaired_inputs():
    with pytest.raises(ValueError, match="3 queries but 4 passages"):
        contrastive_loss(torch.randn(3, 8), torch.randn(4, 8))
    with pytest.raises(ValueError, match="one passage per query"):
        contrastive_loss(torch.randn(3, 8), torch.randn(3, 6))


# ----------------------------------------------------------------------------
# Retrieval metrics
# ----------------------------------------------------------------------------


def random_rankings(num_queries=30, num_passages=50, depth=20, seed=0):
    """Top-`depth` rankings and relevant sets (1-3 passages), with the edge cases first."""
    rng = random.Random(seed)
    rankings = [rng.sample(range(num_passages), depth) for _ in range(num_queries)]
    relevant = [set(rng.sample(range(num_passages), rng.randint(1, 3))) for _ in rankings]
    relevant[0] = {rankings[0][0]}  # found at rank 1
    relevant[1] = {rankings[1][10]}  # at rank 11: outside the top 10
    relevant[2] = {next(p for p in range(num_passages) if p not in rankings[2])}  # never found
    relevant[3] = {rankings[3][0], rankings[3][4], rankings[3][15]}  # several relevant
    relevant[4] = set(rankings[4][2:14])  # more relevant passages than k = 10
    return rankings, relevant


def reference_metrics(rankings, relevant):
    """sentence-transformers' evaluator on our rankings (descending scores)."""
    num_passages = 1 + max(max(row) for row in rankings)
    evaluator = InformationRetrievalEvaluator(
        queries={f"q{i}": f"query {i}" for i in range(len(rankings))},
        corpus={f"d{j}": f"passage {j}" for j in range(num_passages)},
        relevant_docs={f"q{i}": {f"d{j}" for j in rel} for i, rel in enumerate(relevant)},
        mrr_at_k=[10],
        ndcg_at_k=[10],
        precision_recall_at_k=[1, 10],
        write_csv=False,
    )
    results = [
        [{"corpus_id": f"d{j}", "score": float(len(row) - r)} for r, j in enumerate(row)]
        for row in rankings
    ]
    return evaluator.compute_metrics(results)


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_parity_with_information_retrieval_evaluator(seed):
    rankings, relevant = random_rankings(seed=seed)
    expected = reference_metrics(rankings, relevant)
    approx = pytest.approx
    assert recall_at_k(rankings, relevant, 1) == approx(expected["recall@k"][1], abs=1e-12)
    assert recall_at_k(rankings, relevant, 10) == approx(expected["recall@k"][10], abs=1e-12)
    assert mrr_at_k(rankings, relevant, 10) == approx(expected["mrr@k"][10], abs=1e-12)
    assert ndcg_at_k(rankings, relevant, 10) == approx(expected["ndcg@k"][10], abs=1e-12)
    metrics = retrieval_metrics(torch.tensor(rankings), relevant)
    assert metrics == approx(
        {
            "recall@1": expected["recall@k"][1],
            "recall@10": expected["recall@k"][10],
            "mrr@10": expected["mrr@k"][10],
            "ndcg@10": expected["ndcg@k"][10],
        },
        abs=1e-12,
    )


def test_metrics_of_the_edge_cases_alone():
    rankings, relevant = random_rankings()
    first, late, missing = (([rankings[i]], [relevant[i]]) for i in range(3))
    zeros = {"recall@1": 0.0, "recall@10": 0.0, "mrr@10": 0.0, "ndcg@10": 0.0}
    assert retrieval_metrics(*first) == {k: 1.0 for k in zeros}
    assert retrieval_metrics(*late) == zeros
    assert recall_at_k(*late, 11) == 1.0 and mrr_at_k(*late, 11) == pytest.approx(1 / 11)
    assert retrieval_metrics(*missing) == zeros


def test_metrics_hand_computed():
    rankings = [[3, 1, 2], [0, 2, 1]]
    relevant = [{1}, {1, 2}]
    assert recall_at_k(rankings, relevant, 1) == 0.0
    assert recall_at_k(rankings, relevant, 2) == pytest.approx((1 + 1 / 2) / 2)
    assert recall_at_k(rankings, relevant, 3) == 1.0
    assert mrr_at_k(rankings, relevant, 10) == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert mrr_at_k(rankings, relevant, 1) == 0.0
    first = (1 / math.log2(3)) / 1
    second = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(rankings, relevant, 10) == pytest.approx((first + second) / 2)
    # Three relevant passages but k = 2: the ideal ranking fills both places.
    ideal = 1 + 1 / math.log2(3)
    assert ndcg_at_k([[4, 0, 1, 2]], [{0, 1, 2}], 2) == pytest.approx((1 / math.log2(3)) / ideal)


@pytest.mark.parametrize("metric", [recall_at_k, mrr_at_k, ndcg_at_k])
def test_metrics_reject_bad_input(metric):
    with pytest.raises(ValueError, match="2 rankings but 1 sets of relevant"):
        metric([[0, 1], [1, 0]], [{0}], 1)
    with pytest.raises(ValueError, match="Query 1 has no relevant passage"):
        metric([[0, 1], [1, 0]], [{0}, set()], 1)


# ----------------------------------------------------------------------------
# Exact search and the index
# ----------------------------------------------------------------------------


def test_search_equals_brute_force_argsort():
    generator = torch.Generator().manual_seed(0)
    queries, passages = (
        torch.randn(7, 16, generator=generator),
        torch.randn(23, 16, generator=generator),
    )
    scores, indices = search(queries, passages, k=5, chunk_size=3)
    full = queries @ passages.T
    expected = full.argsort(dim=1, descending=True)[:, :5]
    assert torch.equal(indices, expected)
    torch.testing.assert_close(scores, full.gather(1, expected))

    scores, indices = search(queries, passages, k=100, chunk_size=2)  # k beyond the collection
    assert indices.shape == scores.shape == (7, 23)
    assert torch.equal(indices, full.argsort(dim=1, descending=True))
    assert search(queries[:0], passages, k=4)[1].shape == (0, 4)


def test_embedding_index_round_trip(tmp_path):
    generator = torch.Generator().manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=1)
    ids = ["doc-a", "dóc b", "文書", "4", "five", "six"]
    index = EmbeddingIndex(vectors, ids)
    path = index.save(tmp_path / "index.safetensors")
    loaded = EmbeddingIndex.load(path)
    assert torch.equal(loaded.embeddings, vectors) and loaded.ids == ids and len(loaded) == 6
    hits = loaded.search(vectors[[2, 5]], k=2)
    assert [hits[0][0][0], hits[1][0][0]] == ["文書", "six"]
    assert hits[0][0][1] == pytest.approx(1.0, abs=1e-6) and hits[0][0][1] > hits[0][1][1]


def test_embedding_index_errors(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(FileNotFoundError, match=r"No index at .*\.save\("):
        EmbeddingIndex.load(tmp_path / "missing.safetensors")
    other = tmp_path / "weights.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(ValueError, match="not an index saved by EmbeddingIndex.save"):
        EmbeddingIndex.load(other)
    with pytest.raises(ValueError, match="2 ids for 3 vectors"):
        EmbeddingIndex(torch.zeros(3, 4), ["a", "b"])
    with pytest.raises(ValueError, match=r"\(N, H\) matrix"):
        EmbeddingIndex(torch.zeros(3))


# ----------------------------------------------------------------------------
# BM25, fusion, reranking
# ----------------------------------------------------------------------------


def test_bm25_ranks_the_passage_with_the_rare_words_first():
    passages = [
        "The weather today is sunny and warm in the city.",
        "A recipe for bread needs flour, water and salt.",
        "The axolotl regenerates its limbs after an injury.",
        "Sunny days in the city are warm and long.",
    ]
    scores, indices = bm25_search(["Which animal regenerates lost limbs?"], passages, k=2)
    assert indices[0, 0] == 2 and scores[0, 0] > scores[0, 1]
    assert indices.shape == (1, 2) and indices.dtype == torch.long


def test_bm25_scores_equal_lucene_formula():
    # After lower-casing and dropping English stop words ("the", "on", "and"):
    #   passage 0: cat sat mat                (3 terms)
    #   passage 1: dog chased cat garden dog  (5 terms)
    #   passage 2: zebra grazed quietly       (3 terms)
    passages = [
        "The cat sat on the mat.",
        "Dog chased cat garden dog.",
        "Zebra grazed quietly.",
    ]
    k1, b, n = 1.5, 0.75, 3
    average_length = (3 + 5 + 3) / 3

    def idf(document_frequency):  # Lucene's, never negative
        return math.log(1 + (n - document_frequency + 0.5) / (document_frequency + 0.5))

    def term(frequency, length):
        return frequency / (frequency + k1 * (1 - b + b * length / average_length))

    expected = [
        idf(1) * term(2, 5) + idf(2) * term(1, 5),  # passage 1: dog twice, cat
        idf(2) * term(1, 3),  # passage 0: cat only
        0.0,  # passage 2: nothing in common
    ]
    scores, indices = bm25_search(["the dog and the cat"], passages, k=10)  # k clipped to 3
    assert indices.tolist() == [[1, 0, 2]]
    torch.testing.assert_close(scores[0], torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_reciprocal_rank_fusion_hand_computed():
    first, second = [[1, 2, 3]], [[3, 1, 4]]
    # 1: 1/61 + 1/62; 3: 1/63 + 1/61; 2: 1/62; 4: 1/63
    assert reciprocal_rank_fusion(first, second) == [[1, 3, 2, 4]]
    assert reciprocal_rank_fusion(first, second, top=2) == [[1, 3]]
    assert reciprocal_rank_fusion(torch.tensor(first), torch.tensor(second)) == [[1, 3, 2, 4]]
    # k sets how much agreement counts: 2 is second and third, 1 and 4 are first once.
    # k = 60: 2 has 1/62 + 1/63 > 1/61; k = 0: 1/2 + 1/3 < 1/1.
    assert reciprocal_rank_fusion([[1, 2, 3]], [[4, 5, 2]]) == [[2, 1, 4, 5, 3]]
    assert reciprocal_rank_fusion([[1, 2, 3]], [[4, 5, 2]], k=0) == [[1, 4, 2, 5, 3]]


def test_reciprocal_rank_fusion_ties_go_to_the_lower_index():
    assert reciprocal_rank_fusion([[6, 5]], [[5, 6]]) == [[5, 6]]
    assert reciprocal_rank_fusion([[9]], [[2]]) == [[2, 9]]
    assert reciprocal_rank_fusion([[9, 4], [1, 0]], [[4, 9], [0, 1]]) == [[4, 9], [0, 1]]


def test_reciprocal_rank_fusion_rejects_different_queries():
    with pytest.raises(ValueError, match="one row per query"):
        reciprocal_rank_fusion([[1, 2], [2, 1]], [[1, 2]])


def tiny_cross_encoder(num_labels):
    torch.manual_seed(0)
    model = BertForSequenceClassification(TINY, num_labels=num_labels).eval()
    with torch.no_grad():  # large logits, so the order is far from ties
        model.classifier.weight.normal_(0.0, 1.0)
        model.classifier.bias.copy_(torch.linspace(0.5, -0.5, num_labels))
    return model


RERANK_QUERIES = ["Which animal regenerates its limbs?", "How is bread made?"]
RERANK_PASSAGES = [
    "Axolotls regrow limbs.",
    "Bread is baked from a dough of flour, water, yeast and salt, left to rise for hours.",
    "Rain.",
    "The weather in the city was sunny and warm for most of the long summer holidays.",
    "Salamanders, newts and axolotls can regenerate lost body parts.",
    "Sourdough rises slowly.",
    "Flour.",
    "Limbs grow back on some amphibians, but never on mammals such as mice or people.",
]


@pytest.mark.parametrize("num_labels, relevant_label", [(2, 1), (3, 2)])
def test_rerank_orders_by_each_pairs_own_score(course_tokenizer, num_labels, relevant_label):
    cross_encoder = tiny_cross_encoder(num_labels)
    candidates = [[0, 1, 2, 3, 4, 7, 6], [5, 2, 6, 7, 3, 1, 0]]

    def alone(query, passage):  # one pair, no padding
        encoded = course_tokenizer(query, passage, return_tensors="pt")
        with torch.no_grad():
            logits = cross_encoder(
                encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"]
            ).logits[0]
        if num_labels == 2:
            return (logits[1] - logits[0]).item()  # the log-odds of "relevant"
        others = torch.cat([logits[:relevant_label], logits[relevant_label + 1 :]])
        return (logits[relevant_label] - torch.logsumexp(others, 0)).item()

    expected = []
    for query, row in zip(RERANK_QUERIES, candidates, strict=True):
        scores = {p: alone(query, RERANK_PASSAGES[p]) for p in row}
        expected.append(sorted(row, key=lambda p: -scores[p]))
    assert expected != candidates  # the scores reorder something
    cross_encoder.train()
    got = rerank(
        cross_encoder,
        course_tokenizer,
        RERANK_QUERIES,
        RERANK_PASSAGES,
        candidates,
        batch_size=3,
        relevant_label=relevant_label,
    )
    assert cross_encoder.training  # the mode is restored
    assert got == expected


# ----------------------------------------------------------------------------
# The bi-encoder and its training
# ----------------------------------------------------------------------------

QUERIES = [
    "Which animal regenerates its limbs?",
    "How is bread made?",
    "Is it sunny?",
    "What does an index store?",
    "Why batch by length?",
    "What is BM25?",
]
PASSAGES = [
    "Axolotls regrow lost limbs, and even parts of their hearts and brains.",
    "Bread is baked from flour, water, yeast and salt.",
    "Yes, the sky is clear today.",
    "An index stores one vector per passage and the passage ids.",
    "Texts of similar length need little padding, so batches are faster.",
    "A lexical ranking function.",
]


def test_pair_examples_and_collator(course_tokenizer):
    examples = pair_examples(
        course_tokenizer, QUERIES, PASSAGES, query_max_length=6, passage_max_length=10
    )
    assert examples[1]["input_ids"] == course_tokenizer.encode(QUERIES[1], max_length=6)
    assert examples[0]["passage_ids"] == course_tokenizer.encode(PASSAGES[0], max_length=10)
    assert max(len(e["input_ids"]) for e in examples) == 6
    examples[0]["negative_ids"], examples[1]["negative_ids"] = [2, 7, 3], [2, 3]
    batch = PairCollator(pad_token_id=0)(examples[:2])
    assert sorted(batch) == sorted(
        f"{prefix}{name}"
        for prefix in ("", "passage_", "negative_")
        for name in ("input_ids", "attention_mask")
    )
    assert batch["negative_input_ids"].tolist() == [[2, 7, 3], [2, 3, 0]]
    assert batch["negative_attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    lengths = [len(e["passage_ids"]) for e in examples[:2]]
    assert batch["passage_attention_mask"].sum(1).tolist() == lengths
    with pytest.raises(ValueError, match="2 queries but 1 passages"):
        pair_examples(course_tokenizer, QUERIES[:2], PASSAGES[:1])
    with pytest.raises(KeyError, match="missing \\['passage_ids'\\]"):
        PairCollator()([{"input_ids": [1]}])
    with pytest.raises(ValueError, match="empty list"):
        PairCollator()([])


def tiny_bi_encoder(seed=0, pooling="mean"):
    torch.manual_seed(seed)
    return BiEncoder(BertModel(TINY), pooling=pooling)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_bi_encoder_loss_equals_contrastive_loss_of_encode(course_tokenizer, pooling):
    bi_encoder = tiny_bi_encoder(pooling=pooling).eval()
    examples = pair_examples(course_tokenizer, QUERIES, PASSAGES)
    for example, negative in zip(examples, reversed(PASSAGES), strict=True):
        example["negative_ids"] = course_tokenizer.encode(negative)
    batch = PairCollator(course_tokenizer.pad_token_id)(examples)
    assert (batch["attention_mask"] == 0).any() and (batch["passage_attention_mask"] == 0).any()
    with torch.no_grad():
        out = bi_encoder(**batch)

    def vectors(texts):  # one text at a time: no padding at all
        return torch.cat(
            [
                encode(bi_encoder.bert, course_tokenizer, [t], pooling=pooling, normalize=False)
                for t in texts
            ]
        )

    queries, passages = vectors(QUERIES), vectors(PASSAGES)
    torch.testing.assert_close(out.query_embeddings, queries, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.passage_embeddings, passages, atol=1e-5, rtol=1e-5)
    expected = contrastive_loss(queries, passages, vectors(list(reversed(PASSAGES))))
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="Unknown pooling"):
        BiEncoder(BertModel(TINY), pooling="sum")


def test_bi_encoder_trains_and_its_checkpoint_loads_into_a_bert_model(course_tokenizer, tmp_path):
    bi_encoder = tiny_bi_encoder()
    initial = {k: v.clone() for k, v in bi_encoder.bert.state_dict().items()}
    examples = pair_examples(course_tokenizer, QUERIES, PASSAGES)
    relevant = [{i} for i in range(len(QUERIES))]
    evaluate = retrieval_evaluator(course_tokenizer, QUERIES, PASSAGES, relevant, batch_size=4)
    arguments = TrainingArguments(
        output_dir=tmp_path / "run",
        max_steps=3,
        per_device_batch_size=3,
        learning_rate=1e-3,
        warmup_steps=1,
        log_every=1,
        show_progress=False,
    )
    result = train(
        bi_encoder,
        examples,
        PairCollator(course_tokenizer.pad_token_id),
        arguments,
        eval_dataset=examples[:3],
        evaluate_fn=evaluate,
    )
    assert result.global_step == 3 and result.last_checkpoint is not None
    metrics = result.eval_metrics
    assert {"eval_recall@1", "eval_recall@10", "eval_mrr@10", "eval_ndcg@10"} <= set(metrics)
    assert metrics["eval_recall@10"] == 1.0  # six passages: all of them are in the top 10
    direct = evaluate_retrieval(bi_encoder.bert, course_tokenizer, QUERIES, PASSAGES, relevant)
    assert {name: metrics[f"eval_{name}"] for name in direct} == pytest.approx(direct)

    loaded = BertModel(TINY)
    load_model_weights(loaded, result.last_checkpoint)
    trained = bi_encoder.bert.state_dict()
    assert loaded.state_dict().keys() == trained.keys()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, trained[name]), name
    word_embeddings = "embeddings.word_embeddings.weight"
    assert not torch.equal(trained[word_embeddings], initial[word_embeddings])


# ----------------------------------------------------------------------------
# Saving for sentence-transformers
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_save_sentence_transformer_parity(minilm, course_tokenizer, tmp_path, pooling):
    directory = save_sentence_transformer(
        minilm, course_tokenizer, tmp_path / "exported", pooling=pooling
    )
    reloaded = SentenceTransformer(str(directory), device="cpu")
    expected = reloaded.encode(TEXTS, convert_to_tensor=True)
    got = encode(minilm, course_tokenizer, TEXTS, batch_size=3, pooling=pooling)
    assert max_abs_diff(got, expected) < 1e-5
    assert reloaded.max_seq_length == 256


def test_save_sentence_transformer_rejects_unknown_pooling(minilm, course_tokenizer, tmp_path):
    with pytest.raises(ValueError, match="Unknown pooling 'sum'"):
        save_sentence_transformer(minilm, course_tokenizer, tmp_path / "out", pooling="sum")
    assert not (tmp_path / "out").exists()
