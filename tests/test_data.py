"""Corpora and labelled data: sentence splitting, the offline corpus, loaders that never hang."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
import zlib

import datasets
import pytest
import transformers

from bertcourse import data, minilm_path
from bertcourse.data import (
    OFFLINE_CLASSIFICATION_PACKAGES,
    Corpus,
    CorpusUnavailableError,
    Document,
    LabelledData,
    load_classification,
    load_corpus,
    offline_classification,
    offline_corpus,
    offline_pair_classification,
    prose_sentences,
    split_sentences,
    tokenize_dataset,
    wikitext_documents,
)
from bertcourse.data import corpus as corpus_module
from bertcourse.data import offline as offline_module


@pytest.fixture(scope="module", autouse=True)
def offline_cache(tmp_path_factory):
    """Every test of this file reads one offline corpus, built once into a fresh cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BERTCOURSE_CACHE", str(tmp_path_factory.mktemp("cache")))
        offline_corpus("all")
        yield data.offline_cache_path()


# ----------------------------------------------------------------------------
# Sentences and cleaning (synthetic text: these are unit tests of the rules)
# ----------------------------------------------------------------------------


def test_split_sentences_at_terminal_punctuation():
    text = "It works.  Then it stops!\nDoes it?  Yes, it does."
    assert split_sentences(text) == ["It works.", "Then it stops!", "Does it?", "Yes, it does."]


@pytest.mark.parametrize(
    "text",
    [
        "Use a sequence, e.g. A list or a tuple, here.",
        "Pass a mapping, i.e. A dict, to the function.",
        "Lists, tuples, etc. Are all sequences here.",
        "Ask Mr. Smith about it.",
        "Compare apples vs. Oranges in the table.",
        "The value of pi is about 3.14 in this example.",
        "Call os.path.join to build the path.",
        "The book by J. Smith explains it.",
        "The value is 3. then it changes.",  # lower case: not a new sentence
    ],
)
def test_split_sentences_keeps_abbreviations_numbers_and_names(text):
    assert split_sentences(text) == [text]


def test_split_sentences_before_quotes_and_brackets():
    assert split_sentences('It ended. "Quoted" text follows. (An aside.) [1] A note.') == [
        "It ended.",
        '"Quoted" text follows.',
        "(An aside.)",
        "[1] A note.",
    ]
    assert split_sentences('He said "stop." Then he left.') == ['He said "stop."', "Then he left."]
    assert split_sentences("") == []


DOCSTRING = """Return the frobnicated value of a widget.

    The widget must be attached to a non-
    numeric frame.  It is copied first.

    Example::

        result = frobnicate(widget)
        if result:
            print(result)

    >>> frobnicate(Widget())
    Widget(frobnicated=True)
    More output of the example above.

    Grammar
    =======

    frob_stmt ::= "frob" expression

    +------------+--------+
    | Operation  | Result |
    +------------+--------+

    * The first item of the list is here.
    * The second item spans
      two lines of the docstring.
    x
    """


def test_prose_sentences_keep_prose_and_drop_code_and_markup():
    assert prose_sentences(DOCSTRING) == [
        "Return the frobnicated value of a widget.",
        "The widget must be attached to a non-numeric frame.",
        "It is copied first.",
        "The first item of the list is here.",
        "The second item spans two lines of the docstring.",
    ]


PARAMETER_DOCSTRING = """Normalize a tensor over its last dimension.

Args:
    eps (`float`, *optional*, defaults to 1e-12):
        The value added to the variance, so that it is never zero.
    weights (list[float], optional): Scale each row by its weight.

Parameters
----------
x : int
    The number of rows to keep in the result.

Returns:
    tuple[`torch.Tensor`, `torch.Tensor`]: The normalized rows and their norms.

See Also
--------
cut : Bin values into discrete intervals.

Default: 0.5
training: apply dropout if is ``True``.

The rest is ordinary prose, and it stays.
"""


def test_prose_sentences_drop_parameter_lists_and_keep_their_descriptions():
    assert prose_sentences(PARAMETER_DOCSTRING) == [
        "Normalize a tensor over its last dimension.",
        "The value added to the variance, so that it is never zero.",
        "The number of rows to keep in the result.",
        "The rest is ordinary prose, and it stays.",
    ]


@pytest.mark.parametrize(
    "sentence",
    [
        "Too short here.",
        "This sentence has no final punctuation",
        "with open(name) as file:",
        "result = compute(value) + other(value).",
        "An unbalanced (bracket starts a fragment here.",
        "== 12 + 34 * 56 / 78 % 90 != 12 ==.",
    ],
)
def test_non_prose_sentences_are_rejected(sentence):
    assert not data.is_prose_sentence(sentence)


# ----------------------------------------------------------------------------
# The offline corpus
# ----------------------------------------------------------------------------


def test_offline_corpus_is_large_real_and_licensed():
    corpus = offline_corpus("all")
    assert corpus.num_characters >= 1_000_000
    assert len(corpus) > 300 and corpus.num_sentences > 10_000
    ids = [document.id for document in corpus.documents]
    assert len(set(ids)) == len(ids)
    assert any(i.startswith("topic:") for i in ids) and any(i.startswith("module:") for i in ids)
    assert "PSF License" in corpus.license and "pydoc_data.topics" in corpus.provenance
    assert "offline/all" in corpus.summary() and f"{corpus.num_sentences:,}" in corpus.summary()


def test_offline_corpus_is_clean_prose():
    sentences = offline_corpus("all").sentences()
    assert len(set(sentences)) == len(sentences)  # exact duplicates dropped
    assert not [s for s in sentences if ">>>" in s or s.startswith("...") or "::=" in s]
    assert not [s for s in sentences if "****" in s or "====" in s or "----" in s]
    assert all(s[-1] in ".!?:\"')]”’" for s in sentences)
    assert all(len(s.split()) >= 4 for s in sentences)


def test_offline_splits_are_disjoint_and_complete():
    every, train, validation = (offline_corpus(s) for s in ("all", "train", "validation"))
    train_ids = {d.id for d in train.documents}
    validation_ids = {d.id for d in validation.documents}
    assert not train_ids & validation_ids
    assert train_ids | validation_ids == {d.id for d in every.documents}
    assert train.num_sentences + validation.num_sentences == every.num_sentences
    assert all(zlib.crc32(i.encode()) % 10 == 0 for i in validation_ids)
    assert 0.05 < len(validation) / len(every) < 0.2
    with pytest.raises(ValueError, match="Unknown split 'test'"):
        offline_corpus("test")


def test_offline_corpus_build_is_deterministic(offline_cache):
    # A second build in a fresh interpreter, with another hash seed, gives the same file.
    script = (
        "import json, sys; from bertcourse.data import build_offline_documents; "
        "json.dump([[d.id, d.sentences] for d in build_offline_documents()], sys.stdout)"
    )
    environment = {**os.environ, "PYTHONHASHSEED": "12345"}
    rebuilt = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment, check=True
    )
    cached = json.loads(offline_cache.read_text(encoding="utf-8"))["documents"]
    assert json.loads(rebuilt.stdout) == [[d["id"], d["sentences"]] for d in cached]


def test_warm_load_reads_the_cache_silently(offline_cache, capfd):
    first = offline_corpus("validation")
    second = offline_corpus("validation")
    assert first == second
    assert capfd.readouterr().err == ""
    assert sys.version.split()[0] in offline_cache.name
    assert not list(offline_cache.parent.glob("*.tmp"))  # written atomically


def test_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTCOURSE_CACHE", str(tmp_path))
    stub = [Document("module:alpha", ["One real sentence is here."])]
    monkeypatch.setattr(offline_module, "build_offline_documents", lambda variant: stub)
    data.offline_cache_path().write_text('{"format_version": 2, "documents": [', encoding="utf-8")
    assert offline_corpus("all").documents == stub
    assert json.loads(data.offline_cache_path().read_text())["documents"][0]["id"] == "module:alpha"


@pytest.fixture
def small_large_corpus(tmp_path, monkeypatch):
    """The large corpus with two small packages instead of PACKAGE_SOURCES, in a fresh cache."""
    monkeypatch.setenv("BERTCOURSE_CACHE", str(tmp_path))
    monkeypatch.setattr(offline_module, "PACKAGE_SOURCES", ("tqdm", "no_such_package", "jinja2"))
    return offline_corpus("all", "large")


def test_large_offline_corpus_adds_the_packages_docstrings(small_large_corpus, tmp_path):
    small = offline_corpus("all")
    large = small_large_corpus
    packages = {d.id.split(":")[1].split(".")[0] for d in large.documents if "package:" in d.id}
    assert packages == {"tqdm", "jinja2"}  # an absent package is left out
    assert [d.id for d in large.documents[: len(small)]] == [d.id for d in small.documents]
    assert large.num_sentences > small.num_sentences + 300
    sentences = large.sentences()
    assert len(set(sentences)) == len(sentences)  # no sentence twice, across all sources
    assert not any("test" in d.id.split(".") for d in large.documents)  # tests are left out
    versions = {p.distribution: p.version for p in offline_module.installed_packages()}
    assert f"tqdm {versions['tqdm']}" in large.provenance and "Jinja2" in large.provenance
    assert "PSF License" in large.license and "tqdm: " in large.license
    assert large.name == "offline-large/all" and load_corpus("offline-large", "all") == large
    cache = list(tmp_path.glob("offline-corpus-large-*.json"))
    assert len(cache) == 1 and json.loads(cache[0].read_text())["license"] == large.license


def test_large_offline_corpus_splits_by_document_and_rebuilds_for_new_versions(
    small_large_corpus, tmp_path
):
    train, validation = offline_corpus("train", "large"), offline_corpus("validation", "large")
    assert {d.id for d in validation.documents} == {
        d.id for d in small_large_corpus.documents if zlib.crc32(d.id.encode()) % 10 == 0
    }
    assert len(train) + len(validation) == len(small_large_corpus)
    packages = offline_module.installed_packages()
    newer = [dataclasses.replace(p, version=p.version + ".post1") for p in packages]
    here = offline_module.offline_cache_path("large", packages)
    assert here.exists() and offline_module.offline_cache_path("large", newer) != here
    with pytest.raises(ValueError, match="Unknown offline corpus 'huge'; choose one of small"):
        offline_corpus("train", "huge")


def test_corpus_to_dataset_has_one_row_per_sentence():
    corpus = Corpus(
        "tiny", [Document("a", ["First one here.", "Second one here."]), Document("b", ["Third."])]
    )
    dataset = corpus.to_dataset()
    assert dataset.column_names == ["text", "document_id", "sentence_index"]
    assert dataset["text"] == corpus.sentences()
    assert dataset["document_id"] == ["a", "a", "b"] and dataset["sentence_index"] == [0, 1, 0]
    assert corpus.texts() == ["First one here. Second one here.", "Third."]
    assert corpus.num_characters == len("First one here.Second one here.Third.")


# ----------------------------------------------------------------------------
# Corpora by name or path
# ----------------------------------------------------------------------------


def test_load_corpus_offline_by_name():
    assert load_corpus("offline", split="validation") == offline_corpus("validation")


def test_load_corpus_from_text_file_and_directory(tmp_path):
    text_file = tmp_path / "notes.txt"
    text_file.write_text(
        "First doc. It has two sentences.\n\n\nSecond doc here.\n", encoding="utf-8"
    )
    corpus = load_corpus(text_file)
    assert [d.sentences for d in corpus.documents] == [
        ["First doc.", "It has two sentences."],
        ["Second doc here."],
    ]
    (tmp_path / "b.txt").write_text("Bee file. Two.", encoding="utf-8")
    (tmp_path / "ignored.md").write_text("Not read.", encoding="utf-8")
    from_directory = load_corpus(tmp_path, split="all")
    assert [d.id for d in from_directory.documents] == ["b.txt", "notes.txt"]
    assert from_directory.documents[1].sentences == [
        "First doc.",
        "It has two sentences.",
        "Second doc here.",
    ]
    with pytest.raises(ValueError, match="one local file"):
        load_corpus(text_file, split="validation")
    with pytest.raises(FileNotFoundError, match="No such file"):  # a typo, not a hub name
        load_corpus(tmp_path / "note.txt")


def test_load_corpus_from_csv_and_its_errors(tmp_path):
    table = tmp_path / "reviews.csv"
    table.write_text('\ufeffid,body\n1,"Great film. Loved it, really."\n2,Bad.\n', encoding="utf-8")
    corpus = load_corpus(table, text_column="body")
    assert [d.sentences for d in corpus.documents] == [
        ["Great film.", "Loved it, really."],
        ["Bad."],
    ]
    with pytest.raises(ValueError, match="no column 'text'.*'id', 'body'"):
        load_corpus(table)
    (tmp_path / "data.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match="unsupported file type '.json'"):
        load_corpus(tmp_path / "data.json")


def test_wikitext_articles_start_at_top_level_headings():
    lines = [
        "",
        " = Valkyria Chronicles = \n",
        "",
        " It is a well @-@ known game. It sold 1 @,@ 000 copies in 2011. \n",
        " = = Gameplay = = \n",
        " Players fight battles. \n",
        " = Tower Building = \n",
        " = = = History = = = \n",
        " The tower is old. \n",
    ]
    documents = wikitext_documents(lines)
    assert [d.id for d in documents] == ["wikitext:Valkyria Chronicles", "wikitext:Tower Building"]
    assert documents[0].sentences == [
        "It is a well-known game.",
        "It sold 1,000 copies in 2011.",
        "Players fight battles.",
    ]
    assert documents[1].sentences == ["The tower is old."]


def _forbid_datasets(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("datasets.load_dataset must not be called when the hub is unavailable")

    monkeypatch.setattr(datasets, "load_dataset", fail)


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_hub_corpus_offline_fails_at_once(monkeypatch, variable):
    _forbid_datasets(monkeypatch)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv(variable, "1")
    started = time.monotonic()
    with pytest.raises(CorpusUnavailableError) as error:
        load_corpus("wikitext-103")
    assert time.monotonic() - started < 5  # never hangs
    message = str(error.value)
    assert "'wikitext'" in message and f"{variable}=1" in message
    assert 'load_corpus("offline")' in message and "local file path" in message
    assert isinstance(error.value, FileNotFoundError)


def test_hub_probe_fails_fast_when_the_host_cannot_be_reached(monkeypatch):
    _forbid_datasets(monkeypatch)
    for variable in (
        "HF_HUB_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "HTTPS_PROXY",
        "https_proxy",
        "HF_ENDPOINT",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(corpus_module, "HUB_ADDRESS", ("invalid.invalid", 443))
    started = time.monotonic()
    with pytest.raises(CorpusUnavailableError, match="invalid.invalid:443 cannot be reached"):
        load_corpus("some-user/some-corpus")
    with pytest.raises(CorpusUnavailableError, match="offline_classification"):
        data.load_sst2()
    assert time.monotonic() - started < 5  # never hangs


def test_hub_corpus_when_the_hub_answers(monkeypatch):
    requests = []

    def fake_load_dataset(name, config=None, split=None):
        requests.append((name, config, split))
        return datasets.Dataset.from_dict({"text": [" = Title = \n", " One sentence here. \n"]})

    monkeypatch.setattr(corpus_module, "_hub_unavailable_reason", lambda: None)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    corpus = load_corpus("wikitext-2", split="validation")
    assert requests == [("wikitext", "wikitext-2-raw-v1", "validation")]
    assert corpus.documents == [Document("wikitext:Title", ["One sentence here."])]
    with pytest.raises(ValueError, match="no column 'body'"):
        load_corpus("wikitext-2", text_column="body")


# ----------------------------------------------------------------------------
# Labelled data
# ----------------------------------------------------------------------------


def test_load_classification_string_labels_and_pairs(tmp_path):
    table = tmp_path / "nli.csv"
    table.write_text(
        'premise,hypothesis,label\n"A dog runs, fast.",An animal moves.,yes\nA cat.,A car.,no\n'
        "It rains.,It is wet.,yes\n",
        encoding="utf-8",
    )
    labelled = load_classification(table, "premise", "label", text_pair_column="hypothesis")
    assert labelled.texts == ["A dog runs, fast.", "A cat.", "It rains."]
    assert labelled.pairs == ["An animal moves.", "A car.", "It is wet."]
    assert labelled.label_names == ["no", "yes"] and labelled.labels == [1, 0, 1]
    assert labelled.label2id == {"no": 0, "yes": 1} and labelled.id2label == {0: "no", 1: "yes"}
    assert labelled.class_counts() == {"no": 1, "yes": 2} and len(labelled) == 3
    dataset = labelled.to_dataset()
    assert dataset.column_names == ["text", "text_pair", "label"] and dataset["label"] == [1, 0, 1]


def test_load_classification_glue_tsv_with_integer_labels(tmp_path):
    table = tmp_path / "train.tsv"
    table.write_text(
        'sentence\tlabel\nit \'s a "charming" and often affecting journey . \t1\n'
        'the " plot " is thin \t0\nworst movie "ever\t0\n',
        encoding="utf-8",
    )
    labelled = load_classification(table, "sentence", "label")
    assert labelled.texts[0] == 'it \'s a "charming" and often affecting journey . '
    assert labelled.texts[2] == 'worst movie "ever'  # an unmatched quote is plain text
    assert labelled.labels == [1, 0, 0] and labelled.label_names == ["0", "1"]
    assert labelled.to_dataset().column_names == ["text", "label"]
    semicolons = tmp_path / "data.txt"
    semicolons.write_text("text;label\nFine here.;2\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="integers 2, not 0..0"):  # no empty classes 0 and 1
        only_two = load_classification(semicolons, "text", "label", delimiter=";")
    assert only_two.label_names == ["2"] and only_two.labels == [0]


def test_load_classification_errors_name_the_problem(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="is empty"):
        load_classification(path, "text", "label")
    path.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(ValueError, match="header but no rows"):
        load_classification(path, "text", "label")
    path.write_text("text,label\nGood.,1\nBad.,\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"Row 2 .*\(line 3\) has no 'label'"):
        load_classification(path, "text", "label")
    with pytest.raises(ValueError, match="no column 'sentence'.*'text', 'label'"):
        load_classification(path, "sentence", "label")
    with pytest.raises(ValueError, match="pass delimiter"):
        load_classification(tmp_path / "data.json", "text", "label")


def test_labelled_data_split_is_stratified_deterministic_and_complete():
    labelled = LabelledData(
        texts=[f"text {i}" for i in range(100)],
        labels=[0] * 80 + [1] * 20,
        label_names=["common", "rare"],
        name="toy",
    )
    train, validation = labelled.split(validation_fraction=0.25, seed=3)
    assert validation.class_counts() == {"common": 20, "rare": 5}
    assert train.class_counts() == {"common": 60, "rare": 15}
    assert sorted(train.texts + validation.texts) == sorted(labelled.texts)
    assert labelled.split(0.25, seed=3)[1].texts == validation.texts
    assert labelled.split(0.25, seed=4)[1].texts != validation.texts
    assert (train.name, validation.name) == ("toy/train", "toy/validation")
    with pytest.raises(ValueError, match="Label 2 is not an id"):
        LabelledData(["a"], [2], ["x", "y"])


def test_sentence_split_holds_out_whole_sentences_and_every_part_of_them():
    # Phrase-level data as in SST-2's training file: sentences and their sub-phrases, labelled.
    sentences = [
        f"review {i} says the film is {'good' if i % 2 else 'bad'} and long" for i in range(6)
    ]
    texts, labels = [], []
    for i, sentence in enumerate(sentences):
        words = sentence.split()
        for phrase in (sentence, " ".join(words[:4]), " ".join(words[1:5]), words[-1]):
            texts.append(phrase)
            labels.append(i % 2)
    texts.append("review  0 says the film is bad and long")  # a duplicate with other spacing
    labels.append(0)
    texts.append(f"indeed {sentences[5]}")  # sentence 5 is part of a longer phrase: not whole
    labels.append(1)
    labelled = LabelledData(texts, labels, ["negative", "positive"], name="toy")
    train, validation = labelled.sentence_split(2, min_words=5, seed=1)
    whole = {*sentences[:5], f"indeed {sentences[5]}"}
    assert len(validation) == 2 and set(validation.texts) <= whole  # whole sentences only
    assert all(sentences[5] not in labelled.sentence_split(2, min_words=5, seed=seed)[1].texts
               for seed in range(20))  # fmt: skip
    for held_out in validation.texts:  # nothing of a held-out sentence is trained on
        assert not [
            text for text in train.texts if f" {' '.join(text.split())} " in f" {held_out} "
        ]
    # Everything else is trained on: the other sentences and their parts, unless they are also
    # part of a held-out sentence (as "long" is).
    parts = [" ".join(t.split()) for t in texts]
    kept = [t for t in parts if not any(f" {t} " in f" {v} " for v in validation.texts)]
    assert sorted(" ".join(t.split()) for t in train.texts) == sorted(kept)
    assert labelled.sentence_split(2, min_words=5, seed=1)[1].texts == validation.texts
    with pytest.raises(ValueError, match="6 whole sentences of at least 5 words, fewer than"):
        labelled.sentence_split(7, min_words=5)


def test_offline_classification_classes_and_split():
    train, validation = offline_classification("train"), offline_classification("validation")
    assert train.label_names == list(OFFLINE_CLASSIFICATION_PACKAGES)
    assert 4 <= len(train.label_names) <= 8
    assert min(train.class_counts().values()) >= 150
    # A balanced validation set: chance (and the majority rate) is 1/number of classes.
    per_class = data.OFFLINE_CLASSIFICATION_VALIDATION_PER_CLASS
    assert set(validation.class_counts().values()) == {per_class}
    assert not set(train.texts) & set(validation.texts)  # a sentence is in one split only
    assert len(set(train.texts)) == len(train)  # repeated sentences are left out
    everything = offline_classification("all")
    assert sorted(everything.texts) == sorted(train.texts + validation.texts)
    assert offline_classification("train") == train
    with pytest.raises(ValueError, match="Unknown split"):
        offline_classification("test")


def test_offline_pair_classification_is_balanced_and_truthful():
    pairs = offline_pair_classification("validation")
    counts = pairs.class_counts()
    assert abs(counts["same_document"] - counts["different_document"]) <= 1
    assert pairs.label_names == ["different_document", "same_document"]
    document_of = {s: d.id for d in offline_corpus("validation").documents for s in d.sentences}
    for first, second, label in zip(pairs.texts, pairs.pairs, pairs.labels, strict=True):
        assert (document_of[first] == document_of[second]) == (label == 1)
    assert offline_pair_classification("validation") == pairs
    assert offline_pair_classification("validation", seed=1).labels != pairs.labels


def test_hub_labelled_loaders_fail_at_once_offline(monkeypatch):
    _forbid_datasets(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for loader, name in ((data.load_sst2, "'glue' (sst2)"), (data.load_imdb, "'imdb'")):
        with pytest.raises(CorpusUnavailableError, match=re.escape(name)):
            loader("validation")


# ----------------------------------------------------------------------------
# Tokenizing a dataset
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_tokenizer():
    return transformers.AutoTokenizer.from_pretrained(minilm_path())


def test_tokenize_dataset_equals_the_tokenizer(minilm_tokenizer):
    dataset = offline_corpus("validation").to_dataset()
    tokenized = tokenize_dataset(dataset, minilm_tokenizer, max_length=32, batch_size=256)
    assert tokenized.column_names == ["input_ids", "token_type_ids", "attention_mask"]
    assert len(tokenized) == len(dataset)
    lengths = [len(ids) for ids in tokenized["input_ids"]]
    assert max(lengths) == 32 and min(lengths) < 32  # long sentences truncated, short ones kept
    expected = minilm_tokenizer(list(dataset["text"]), truncation=True, max_length=32)
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert tokenized[key] == expected[key]


def test_tokenize_dataset_pairs_keep_the_label(minilm_tokenizer):
    pairs = offline_pair_classification("validation").to_dataset().select(range(50))
    tokenized = tokenize_dataset(pairs, minilm_tokenizer, text_pair_column="text_pair")
    assert tokenized.column_names == ["label", "input_ids", "token_type_ids", "attention_mask"]
    assert tokenized["label"] == pairs["label"]
    expected = minilm_tokenizer(
        list(pairs["text"]), list(pairs["text_pair"]), truncation=True, max_length=128
    )
    assert tokenized["input_ids"] == expected["input_ids"]
    assert all(1 in segments for segments in tokenized["token_type_ids"])
    with pytest.raises(ValueError, match="no column 'sentence'"):
        tokenize_dataset(pairs, minilm_tokenizer, text_column="sentence")


def test_offline_topic_classification_is_balanced_and_unseen_by_pretraining():
    """Five subjects from packages the large corpus leaves out; no sentence of it in the corpus."""
    train, validation = (data.offline_topic_classification(s) for s in ("train", "validation"))
    assert train.label_names == validation.label_names == list(data.TOPIC_PACKAGES)
    assert set(train.class_counts().values()) == {data.TOPIC_SENTENCES_PER_CLASS["train"]}
    assert set(validation.class_counts().values()) == {data.TOPIC_SENTENCES_PER_CLASS["validation"]}
    assert not set(train.texts) & set(validation.texts)  # no sentence in both splits
    assert len(set(train.texts)) == len(train.texts)  # nor under two subjects
    corpus = {s for d in data.offline_corpus("all", "large").documents for s in d.sentences}
    assert not (set(train.texts) | set(validation.texts)) & corpus
    sources = {name for names in data.TOPIC_PACKAGES.values() for name in names}
    assert not sources & set(data.PACKAGE_SOURCES)  # the corpus reads none of these packages
    with pytest.raises(ValueError, match="'train' or 'validation'"):
        data.offline_topic_classification("all")
