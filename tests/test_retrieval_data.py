"""Query → passage pairs: docstring pairs, the offline search task, files of pairs, BEIR tables."""

import datasets
import pytest

from bertcourse.data import (
    PASSAGE_SENTENCES,
    CorpusUnavailableError,
    RetrievalData,
    RetrievalPair,
    docstring_pairs,
    hub_retrieval,
    is_test_module,
    load_retrieval_pairs,
    offline_retrieval,
)
from bertcourse.data.retrieval import beir_pairs

# ----------------------------------------------------------------------------
# Docstring pairs (a synthetic module: unit tests of the rules)
# ----------------------------------------------------------------------------

SOURCE = '''
def frobnicate(widget):
    """Return the frobnicated value of a widget.

    The widget must be attached to a frame before it is frobnicated. It is copied
    first, so the caller keeps the original widget unchanged.

    Example::

        result = frobnicate(widget)
        print(result)

    Frobnication can take a while for large widgets. Small widgets are quick.
    A fifth sentence is cut off here.
    """


def terse(widget):
    """Too short.

    The widget must be attached to a frame before it is frobnicated. It is copied
    first, so the caller keeps the original widget unchanged.
    """


def thin(widget):
    """Return the thin value of a widget for display.

    It is short.
    """


def summary_only(widget):
    """Return the summary only value of a widget for display."""


class Widget:
    """A widget that the library can frobnicate on request.

    Widgets hold a value and a frame. Each widget belongs to exactly one frame, and the
    frame keeps a reference to every widget that is attached to it.
    """

    async def fetch(self):
        """Fetch the remote value of this widget asynchronously.

        The value is read from the server that owns the frame. A failed read raises an
        error and leaves the cached value as it was before the call.
        """
'''


def test_docstring_pairs_take_the_summary_and_the_prose_after_it():
    pairs = {pair.source: pair for pair in docstring_pairs(SOURCE, "toy.widgets")}
    # terse: a summary of two words; thin: a passage of three; summary_only: no passage.
    assert sorted(pairs) == ["toy.widgets:Widget", "toy.widgets:fetch", "toy.widgets:frobnicate"]
    frobnicate = pairs["toy.widgets:frobnicate"]
    assert frobnicate.query == "Return the frobnicated value of a widget."
    assert frobnicate.passage == (  # the code block is dropped, four sentences are kept
        "The widget must be attached to a frame before it is frobnicated. It is copied first, "
        "so the caller keeps the original widget unchanged. Frobnication can take a while for "
        "large widgets. Small widgets are quick."
    )
    assert PASSAGE_SENTENCES == 4 and "result" not in frobnicate.passage
    assert pairs["toy.widgets:Widget"].query == (
        "A widget that the library can frobnicate on request."
    )
    assert pairs["toy.widgets:fetch"].passage.startswith("The value is read from the server")


def test_docstring_pairs_of_unparsable_source_are_none():
    assert list(docstring_pairs("def broken(:\n    pass\n", "broken")) == []


def test_is_test_module_is_a_deterministic_fifth():
    names = [f"package{i % 7}.module_{i}" for i in range(3000)]
    first = [is_test_module(name) for name in names]
    assert first == [is_test_module(name) for name in names]
    assert 0.17 < sum(first) / len(names) < 0.23


# ----------------------------------------------------------------------------
# The offline task (built once per test run, into a fresh cache)
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def offline_task(tmp_path_factory):
    """The small offline search task, all splits, built once into a fresh cache."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BERTCOURSE_CACHE", str(cache))
        everything = offline_retrieval("all")
        yield {
            "all": everything,
            "train": offline_retrieval("train"),
            "test": offline_retrieval("test"),
            "cache": cache,
        }


def module_of(pair: RetrievalPair) -> str:
    return pair.source.split(":")[0]


def test_offline_retrieval_splits_by_module(offline_task):
    train, test, everything = offline_task["train"], offline_task["test"], offline_task["all"]
    assert len(train) > 500 and len(test) > 100
    assert len(train) + len(test) == len(everything)
    train_modules, test_modules = (
        {module_of(p) for p in train.pairs},
        {module_of(p) for p in test.pairs},
    )
    assert not train_modules & test_modules
    assert all(is_test_module(module) for module in test_modules)
    assert not any(is_test_module(module) for module in train_modules)
    assert train.name == "docstrings-small/train" and "standard library" in train.provenance
    assert any(p.name.startswith("retrieval-small-") for p in offline_task["cache"].iterdir())


def test_offline_retrieval_has_no_duplicate_queries_or_passages(offline_task):
    everything = offline_task["all"]
    queries = [query.lower() for query in everything.queries]
    assert len(set(queries)) == len(queries)
    assert len(set(everything.passages)) == len(everything.passages) == len(everything)
    assert everything.relevant[:3] == [{0}, {1}, {2}]
    for pair in everything.pairs[:200]:
        assert pair.query and len(pair.passage.split()) >= 20 and ":" in pair.source


def test_offline_retrieval_reads_its_cache_silently(offline_task, monkeypatch, capfd):
    monkeypatch.setenv("BERTCOURSE_CACHE", str(offline_task["cache"]))
    capfd.readouterr()
    again = offline_retrieval("test")
    assert "building" not in capfd.readouterr().err
    assert again.pairs == offline_task["test"].pairs


def test_head_keeps_the_whole_collection(offline_task):
    test = offline_task["test"]
    head = test.head(10)
    assert head.queries == test.queries[:10]
    assert head.relevant == [{i} for i in range(10)]
    assert sorted(head.passages) == sorted(test.passages)
    assert head.passages[:10] == [pair.passage for pair in test.pairs[:10]]


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"split": "validation"}, "Unknown split 'validation'.*'train', 'test' or 'all'"),
        ({"variant": "huge"}, "Unknown offline task 'huge'.*small"),
    ],
)
def test_offline_retrieval_rejects_unknown_names(arguments, message):
    with pytest.raises(ValueError, match=message):
        offline_retrieval(**arguments)


# ----------------------------------------------------------------------------
# A reader's file of pairs
# ----------------------------------------------------------------------------


def test_load_retrieval_pairs_from_tsv_and_csv(tmp_path):
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text(
        'query\tpassage\nWhat is "BM25"?\tA ranking function.\nWhy?\t Because. \n',
        encoding="utf-8",
    )
    data = load_retrieval_pairs(tsv)
    assert isinstance(data, RetrievalData) and data.name == "pairs.tsv"
    assert data.queries == ['What is "BM25"?', "Why?"]
    assert data.passages == ["A ranking function.", "Because."]
    assert [pair.source for pair in data.pairs] == ["line 2", "line 3"]

    csv = tmp_path / "pairs.csv"
    csv.write_text(
        'id,question,answer\n1,"Who, exactly?","Someone, somewhere."\n', encoding="utf-8"
    )
    data = load_retrieval_pairs(csv, query_column="question", passage_column="answer")
    assert data.pairs == [RetrievalPair("Who, exactly?", "Someone, somewhere.", "line 2")]
    assert "'question'" in data.provenance and "'answer'" in data.provenance


def test_load_retrieval_pairs_errors_name_the_problem_and_the_fix(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("question,passage\nWhat?,That.\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no column 'query'.*available columns.*'question'"):
        load_retrieval_pairs(path)

    path.write_text("query,passage\n", encoding="utf-8")
    with pytest.raises(ValueError, match="header but no rows.*add one line per pair"):
        load_retrieval_pairs(path)

    path.write_text("query,passage\nWhat?,That.\n  ,Orphan passage.\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 3: the 'query' cell is empty.*remove the row"):
        load_retrieval_pairs(path)

    path.write_text("query,passage\nWhat?,That.\nWhere?,\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 3: the 'passage' cell is empty.*fill it in"):
        load_retrieval_pairs(path)

    with pytest.raises(FileNotFoundError, match="does not exist.*csv or .tsv"):
        load_retrieval_pairs(tmp_path / "missing.tsv")


# ----------------------------------------------------------------------------
# BEIR tables and the hub
# ----------------------------------------------------------------------------

CORPUS = [
    {"_id": "d1", "title": "Aspirin", "text": "Aspirin thins the blood."},
    {"_id": "d2", "title": "", "text": "Ibuprofen reduces swelling."},
    {"_id": "d3", "title": "Sleep", "text": "Adults need seven hours."},
    {"_id": 4, "title": "Water", "text": "Drink when thirsty."},
]
QUERIES = [
    {"_id": "q1", "text": "Does aspirin thin blood?"},
    {"_id": "q2", "text": "Is aspirin a blood thinner?"},
    {"_id": "q3", "text": "How much sleep?"},
    {"_id": "q4", "text": "How much water?"},
    {"_id": "q5", "text": "A query without judgements."},
]
QRELS = [
    {"query-id": "q1", "corpus-id": "d1", "score": 1},
    {"query-id": "q1", "corpus-id": "d2", "score": 1},  # a second relevant passage
    {"query-id": "q2", "corpus-id": "d1", "score": 2},  # d1 already answers q1
    {"query-id": "q3", "corpus-id": "d3", "score": 0},  # not relevant
    {"query-id": "q3", "corpus-id": "d9", "score": 1},  # not in the corpus
    {"query-id": "q4", "corpus-id": 4, "score": 1},
]


def test_beir_pairs_one_passage_per_query_and_one_query_per_passage():
    data = beir_pairs(CORPUS, QUERIES, QRELS, name="toy/test")
    assert data.queries == ["Does aspirin thin blood?", "How much water?"]
    assert data.passages[:2] == ["Aspirin Aspirin thins the blood.", "Water Drink when thirsty."]
    assert data.extra_passages == ["Ibuprofen reduces swelling.", "Sleep Adults need seven hours."]
    assert len(data.passages) == len(CORPUS) and data.relevant == [{0}, {1}]
    assert [pair.source for pair in data.pairs] == ["q1->d1", "q4->4"]
    assert data.name == "toy/test"

    first = beir_pairs(CORPUS, QUERIES, QRELS, max_queries=1)
    assert first.queries == ["Does aspirin thin blood?"]
    assert sorted(first.passages) == sorted(data.passages)


def test_hub_retrieval_offline_fails_at_once(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("datasets.load_dataset must not be called offline")

    monkeypatch.setattr(datasets, "load_dataset", fail)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CorpusUnavailableError) as error:
        hub_retrieval("BeIR/scifact")
    message = str(error.value)
    assert "BeIR/scifact" in message and "HF_HUB_OFFLINE=1" in message
    assert "offline_retrieval()" in message
