import pytest
import torch
import transformers

from bertcourse import BertConfig, ConfigError, get_profile
from bertcourse.config import PROFILES, SIZES


@pytest.mark.parametrize("size", list(SIZES))
def test_named_sizes(size):
    layers, hidden, heads = SIZES[size]
    config = BertConfig.from_name(size)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (
        layers,
        hidden,
        heads,
    )
    assert config.intermediate_size == 4 * hidden
    assert config.head_size * heads == hidden


def test_named_sizes_match_the_issue():
    assert SIZES == {
        "tiny": (2, 128, 2),
        "mini": (4, 256, 4),
        "small": (4, 512, 8),
        "base": (12, 768, 12),
    }


def test_overrides_and_unknown_size():
    config = BertConfig.from_name("tiny", vocab_size=8000, type_vocab_size=3)
    assert config.vocab_size == 8000 and config.type_vocab_size == 3
    with pytest.raises(ConfigError, match="Unknown model size 'huge'"):
        BertConfig.from_name("huge")


def test_defaults_equal_transformers_defaults():
    ours = BertConfig().to_dict()
    reference = transformers.BertConfig().to_dict()
    for name, value in ours.items():
        if name == "attn_implementation":
            continue
        assert reference.get(name, value) == value, name


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(hidden_size=100, num_attention_heads=3), "divisible by num_attention_heads"),
        (dict(hidden_act="gleu"), "Unknown hidden_act 'gleu'"),
        (dict(num_hidden_layers=0), "num_hidden_layers must be a positive integer"),
        (dict(vocab_size=-5), "vocab_size must be a positive integer"),
        (dict(hidden_size=64.0), "hidden_size must be a positive integer"),
        (dict(intermediate_size=True), "intermediate_size must be a positive integer"),
        (dict(hidden_dropout_prob=1.0), r"hidden_dropout_prob is a probability in \[0, 1\)"),
        (dict(attention_probs_dropout_prob=-0.1), "attention_probs_dropout_prob"),
        (dict(attn_implementation="flash"), "Unknown attn_implementation 'flash'"),
        (dict(position_embedding_type="relative_key"), "not supported"),
        (dict(layer_norm_eps=0.0), "layer_norm_eps must be > 0"),
        (dict(vocab_size=10, pad_token_id=10), "pad_token_id"),
    ],
)
def test_validation_errors_name_the_problem(fields, message):
    with pytest.raises(ConfigError, match=message):
        BertConfig(**fields)


def test_divisibility_error_suggests_head_counts():
    with pytest.raises(ConfigError) as error:
        BertConfig(hidden_size=96, num_attention_heads=5)
    assert "Try num_attention_heads in" in str(error.value) and "12" in str(error.value)


def test_from_hf_and_to_hf_round_trip():
    hf = transformers.BertConfig(
        vocab_size=123,
        hidden_size=96,
        num_hidden_layers=3,
        num_attention_heads=3,
        intermediate_size=100,
        type_vocab_size=3,
        hidden_act="gelu_new",
        layer_norm_eps=1e-7,
    )
    ours = BertConfig.from_hf(hf)
    assert (ours.vocab_size, ours.hidden_size, ours.num_attention_heads) == (123, 96, 3)
    assert (ours.intermediate_size, ours.type_vocab_size, ours.hidden_act) == (100, 3, "gelu_new")
    assert ours.layer_norm_eps == 1e-7
    back = BertConfig.from_hf(ours.to_hf())
    assert back == ours


def test_from_hf_keeps_attention_implementation():
    hf = transformers.BertConfig(num_hidden_layers=1)
    hf._attn_implementation = "eager"
    assert BertConfig.from_hf(hf).attn_implementation == "eager"


def test_from_hf_validates():
    with pytest.raises(ConfigError, match="divisible"):
        BertConfig.from_hf({"hidden_size": 100, "num_attention_heads": 3})


def test_save_and_load(tmp_path):
    config = BertConfig.from_name("mini", vocab_size=777, attn_implementation="eager")
    config.save(tmp_path / "config.json")
    assert BertConfig.load(tmp_path / "config.json") == config


def test_profiles(monkeypatch):
    assert set(PROFILES) == {"ci", "cpu", "gpu"}
    monkeypatch.setenv("BERTCOURSE_PROFILE", "ci")
    assert get_profile().name == "ci"
    assert get_profile("GPU ").name == "gpu"
    monkeypatch.setenv("BERTCOURSE_PROFILE", "laptop")
    with pytest.raises(ConfigError, match="Unknown profile 'laptop'"):
        get_profile()
    monkeypatch.delenv("BERTCOURSE_PROFILE")
    assert get_profile().name == ("gpu" if torch.cuda.is_available() else "cpu")
    for profile in PROFILES.values():
        assert profile.model_size in SIZES
        assert list(profile.attention_lengths) == sorted(profile.attention_lengths)
    assert not PROFILES["ci"].use_hub and not PROFILES["cpu"].use_hub
