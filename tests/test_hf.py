"""Loading checkpoints: the offline MiniLM weights, local directories, clear mismatch errors."""

import pytest
import torch
import transformers
from conftest import hf_bert_model, random_batch

from bertcourse import BertConfig, BertModel, CheckpointMismatchError, minilm_path
from bertcourse.hf import load_checkpoint, load_state_dict_checked, resolve_checkpoint

SMALL = BertConfig(
    vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=90
)


@pytest.fixture(scope="module")
def minilm_reference():
    return transformers.AutoModel.from_pretrained(minilm_path()).eval()


def test_minilm_package_is_a_bert_checkpoint():
    path = minilm_path()
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        assert (path / name).is_file(), name
    config, state_dict = load_checkpoint(path)
    assert (config["num_hidden_layers"], config["hidden_size"]) == (6, 384)
    assert "embeddings.position_ids" in state_dict  # an old buffer we must ignore


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_minilm_parity(implementation):
    reference = transformers.AutoModel.from_pretrained(
        minilm_path(), attn_implementation=implementation
    ).eval()
    ours = BertModel.from_hf("minilm", attn_implementation=implementation)
    assert ours.config.hidden_size == 384 and ours.config.attn_implementation == implementation
    input_ids, attention_mask, token_type_ids = random_batch(30522, 2, batch=3, length=21)
    input_ids[:, 0] = 101  # [CLS]
    with_probabilities = implementation == "eager"
    with torch.no_grad():
        got = ours(input_ids, attention_mask, token_type_ids, output_attentions=with_probabilities)
        expected = reference(
            input_ids=input_ids,
            token_type_ids=token_type_ids,
            attention_mask=attention_mask,
            output_attentions=with_probabilities,
        )
    assert (got.last_hidden_state - expected.last_hidden_state).abs().max() < 1e-5
    assert (got.pooler_output - expected.pooler_output).abs().max() < 1e-5
    if with_probabilities:
        assert len(got.attentions) == 6
        for a, b in zip(got.attentions, expected.attentions, strict=True):
            assert (a - b).abs().max() < 1e-5


def test_from_object_directory_and_name_agree(minilm_reference):
    from_object = BertModel.from_hf(minilm_reference)
    from_directory = BertModel.from_hf(minilm_path())
    from_name = BertModel.from_hf("MiniLM")
    for key, tensor in from_object.state_dict().items():
        assert torch.equal(tensor, from_directory.state_dict()[key])
        assert torch.equal(tensor, from_name.state_dict()[key])


def test_from_hf_returns_eval_mode_and_accepts_overrides():
    model = BertModel.from_hf("minilm", hidden_dropout_prob=0.0, attn_implementation="eager")
    assert not model.training
    assert model.config.hidden_dropout_prob == 0.0 and model.config.attn_implementation == "eager"


def test_save_pretrained_loads_in_transformers(tmp_path):
    ours = BertModel(SMALL).eval()
    ours.save_pretrained(tmp_path / "export")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    reference = transformers.AutoModel.from_pretrained(tmp_path / "export").eval()
    assert isinstance(reference, transformers.BertModel)
    input_ids, attention_mask, token_type_ids = random_batch(SMALL.vocab_size)
    with torch.no_grad():
        a = ours(input_ids, attention_mask, token_type_ids).last_hidden_state
        b = reference(
            input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask
        ).last_hidden_state
    assert (a - b).abs().max() < 1e-5
    again = BertModel.from_hf(tmp_path / "export")
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in ours.state_dict().items())


def test_a_pretraining_checkpoint_loads_into_the_encoder(tmp_path):
    """bert-base-uncased ships as BertForPreTraining: `bert.` prefix plus `cls.` heads."""
    pretraining = transformers.BertForPreTraining(SMALL.to_hf()).eval()
    pretraining.save_pretrained(tmp_path / "pt")
    ours = BertModel.from_hf(tmp_path / "pt")
    input_ids, attention_mask, token_type_ids = random_batch(SMALL.vocab_size)
    with torch.no_grad():
        a = ours(input_ids, attention_mask, token_type_ids).last_hidden_state
        b = pretraining.bert(
            input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask
        ).last_hidden_state
    assert (a - b).abs().max() < 1e-5


def test_tensorflow_era_names_are_normalised():
    reference = hf_bert_model(SMALL, "eager")
    old_style = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        ): v
        for k, v in reference.state_dict().items()
    }
    assert any(k.endswith("gamma") for k in old_style)
    model = BertModel(SMALL)
    load_state_dict_checked(model, old_style)
    assert torch.equal(
        model.encoder.layer[1].output.LayerNorm.weight,
        reference.encoder.layer[1].output.LayerNorm.weight,
    )


def test_mismatch_lists_every_problem():
    state_dict = hf_bert_model(SMALL, "eager").state_dict()
    del state_dict["encoder.layer.1.output.dense.weight"]
    state_dict["encoder.layer.2.output.dense.weight"] = torch.zeros(64, 90)
    state_dict["pooler.dense.weight"] = torch.zeros(64, 65)
    with pytest.raises(CheckpointMismatchError) as error:
        load_state_dict_checked(BertModel(SMALL), state_dict)
    message = str(error.value)
    assert "missing from the checkpoint (1)" in message
    assert "encoder.layer.1.output.dense.weight" in message
    assert "unexpected in the checkpoint (1)" in message
    assert "encoder.layer.2.output.dense.weight" in message
    assert "pooler.dense.weight: checkpoint (64, 65) vs model (64, 64)" in message


def test_wrong_config_for_checkpoint_fails_clearly(minilm_reference):
    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        BertModel.from_hf(minilm_path(), vocab_size=1000)
    with pytest.raises(CheckpointMismatchError, match="unexpected in the checkpoint"):
        BertModel.from_hf(minilm_path(), num_hidden_layers=4)


def test_non_bert_checkpoint_is_rejected(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(CheckpointMismatchError, match="'gpt2' model, not BERT"):
        BertModel.from_hf(tmp_path)


def test_directory_without_weights(tmp_path):
    SMALL.to_hf().save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="No model.safetensors or pytorch_model.bin"):
        BertModel.from_hf(tmp_path)


def test_pytorch_bin_checkpoint_is_loaded_with_weights_only(tmp_path):
    reference = hf_bert_model(SMALL, "eager")
    SMALL.to_hf().save_pretrained(tmp_path)
    torch.save(reference.state_dict(), tmp_path / "pytorch_model.bin")
    ours = BertModel.from_hf(tmp_path)
    assert torch.equal(ours.pooler.dense.weight, reference.pooler.dense.weight)


def test_unknown_hub_name_offline_fails_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="from_hf\\('minilm'\\)"):
        resolve_checkpoint("some-org/not-a-cached-model")


def test_from_hf_rejects_non_bert_objects():
    with pytest.raises(TypeError, match="expects a transformers BERT model"):
        BertModel.from_hf(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_minilm_parity_on_real_sentence_pairs_at_every_position(implementation):
    """Real text, sentence pairs, heavy padding: every position agrees, padded ones included.

    (Summing the embeddings in another order than transformers leaves a last-bit
    difference that six layers amplify to ~7e-5 at padded positions.)
    """
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path())
    first = [
        "A man is playing a guitar on the stage tonight.",
        "The cat sleeps.",
        "Stock markets fell sharply after the announcement of new tariffs on imports.",
        "Hi",
    ]
    second = ["and a second segment follows", "x", "y z", "the pair"]
    batch = tokenizer(first, second, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any() and (batch["token_type_ids"] == 1).any()
    reference = transformers.AutoModel.from_pretrained(
        minilm_path(), attn_implementation=implementation
    ).eval()
    ours = BertModel.from_hf("minilm", attn_implementation=implementation)
    with torch.no_grad():
        got = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        expected = reference(**batch)
    assert (got.last_hidden_state - expected.last_hidden_state).abs().max() < 1e-5
    assert (got.pooler_output - expected.pooler_output).abs().max() < 1e-5


def test_a_masked_lm_checkpoint_gets_a_fresh_pooler_with_a_warning(tmp_path):
    """An MLM-only export has no pooler: a classifier (and BertModel) load it with a fresh one,
    as transformers does, and the encoder's weights are the checkpoint's."""
    from bertcourse import BertForMaskedLM, BertForSequenceClassification
    from bertcourse.hf import FreshPoolerWarning

    torch.manual_seed(0)
    BertForMaskedLM(SMALL).save_pretrained(tmp_path)
    with pytest.warns(FreshPoolerWarning, match="bert.pooler.dense.weight"):
        ours = BertForSequenceClassification.from_hf(tmp_path, num_labels=3).eval()
    assert {"bert.pooler.dense.weight", "classifier.weight"} <= set(ours.newly_initialized_keys)
    theirs = transformers.BertForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    ids, mask, types = random_batch(SMALL.vocab_size, batch=3, length=9)
    with torch.no_grad():
        torch.testing.assert_close(
            ours.bert(ids, mask, types).last_hidden_state,
            theirs.eval().bert(ids, mask, types).last_hidden_state,
        )
    with pytest.warns(FreshPoolerWarning):
        encoder = BertModel.from_hf(tmp_path)
    assert encoder.newly_initialized_keys == ["pooler.dense.weight", "pooler.dense.bias"]
    assert BertModel.from_hf(tmp_path, add_pooling_layer=False).pooler is None


def test_a_masked_lm_checkpoint_continues_pretraining_with_fresh_nsp_parts(tmp_path):
    """BertForPreTraining loads an MLM-only export: its MLM logits are the checkpoint's, and the
    pooler and NSP classifier start fresh (with a warning), as in transformers."""
    from bertcourse import BertForMaskedLM, BertForPreTraining
    from bertcourse.hf import FreshPoolerWarning

    torch.manual_seed(0)
    masked_lm = BertForMaskedLM(SMALL).eval()
    masked_lm.save_pretrained(tmp_path)
    with pytest.warns(FreshPoolerWarning, match="bert.pooler.dense.weight"):
        ours = BertForPreTraining.from_hf(tmp_path).eval()
    fresh = {key.rsplit(".", 1)[0] for key in ours.newly_initialized_keys}
    assert fresh == {"bert.pooler.dense", "cls.seq_relationship"}
    theirs = transformers.BertForPreTraining.from_pretrained(tmp_path).eval()
    ids, mask, types = random_batch(SMALL.vocab_size, batch=3, length=9)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, mask, types).prediction_logits,
                                   masked_lm(ids, mask, types).logits)  # fmt: skip
        torch.testing.assert_close(ours(ids, mask, types).prediction_logits,
                                   theirs(input_ids=ids, attention_mask=mask,
                                          token_type_ids=types).prediction_logits)  # fmt: skip
