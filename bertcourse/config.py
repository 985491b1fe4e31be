"""Model configuration, named model sizes and run profiles.

`BertConfig` uses exactly the field names of `transformers.BertConfig`, so a
reader can move between the two, and `BertConfig.from_hf` / `to_hf` convert
without a mapping table. Every field is validated when the config is created,
so a typo fails here with a message, not deep inside a matrix multiply.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "ACTIVATIONS",
    "ATTENTION_IMPLEMENTATIONS",
    "SIZES",
    "ConfigError",
    "BertConfig",
    "Profile",
    "PROFILES",
    "get_profile",
    "get_device",
]

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")
ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")

# name -> (num_hidden_layers, hidden_size, num_attention_heads); the feed-forward
# width is 4 x hidden_size, as in BERT (Devlin et al. 2019) and the compact models
# of Turc et al. (2019).
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "base": (12, 768, 12),
}


class ConfigError(ValueError):
    """A configuration value that cannot work, with the reason and the fix."""


@dataclass
class BertConfig:
    """Hyper-parameters of a BERT encoder (field names as in `transformers.BertConfig`)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"
    classifier_dropout: float | None = None
    # "sdpa" runs torch's fused kernel; "eager" runs the course's own
    # softmax(QK^T / sqrt(d)) V and can return the attention probabilities.
    attn_implementation: str = "sdpa"

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads}): each head gets hidden_size / num_attention_heads "
                f"dimensions. Try num_attention_heads in {_divisors(self.hidden_size)}."
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(
                f"Unknown hidden_act {self.hidden_act!r}; choose one of {', '.join(ACTIVATIONS)} "
                "(BERT uses 'gelu', the exact erf form)."
            )
        if self.attn_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ConfigError(
                f"Unknown attn_implementation {self.attn_implementation!r}; choose 'eager' "
                "(from scratch, can return attention probabilities) or 'sdpa' (torch's fused kernel)."
            )
        if self.position_embedding_type != "absolute":
            raise ConfigError(
                f"position_embedding_type {self.position_embedding_type!r} is not supported: "
                "this course implements BERT's learned absolute position embeddings only."
            )
        probabilities = {
            "hidden_dropout_prob": self.hidden_dropout_prob,
            "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
        }
        if self.classifier_dropout is not None:
            probabilities["classifier_dropout"] = self.classifier_dropout
        for name, value in probabilities.items():
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} is a probability in [0, 1), got {value!r}.")
        if self.layer_norm_eps <= 0:
            raise ConfigError(f"layer_norm_eps must be > 0, got {self.layer_norm_eps!r}.")
        if self.initializer_range <= 0:
            raise ConfigError(f"initializer_range must be > 0, got {self.initializer_range!r}.")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(
                f"pad_token_id ({self.pad_token_id}) must be an id in the vocabulary "
                f"[0, {self.vocab_size})."
            )

    @property
    def head_size(self) -> int:
        """Width of one attention head, d_k = hidden_size / num_attention_heads."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_name(cls, size: str, **overrides: Any) -> BertConfig:
        """A named size (`tiny`, `mini`, `small`, `base`), with any field overridden."""
        if size not in SIZES:
            raise ConfigError(f"Unknown model size {size!r}; choose one of {', '.join(SIZES)}.")
        layers, hidden, heads = SIZES[size]
        fields = dict(
            num_hidden_layers=layers,
            hidden_size=hidden,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
        )
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def from_hf(cls, hf_config: Any) -> BertConfig:
        """Copy the fields of a `transformers.BertConfig` (or a dict of them)."""
        source = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in source.items() if k in names and k != "attn_implementation"}
        fields["position_embedding_type"] = fields.get("position_embedding_type") or "absolute"
        implementation = source.get("attn_implementation") or getattr(
            hf_config, "_attn_implementation", None
        )
        if implementation in ATTENTION_IMPLEMENTATIONS:
            fields["attn_implementation"] = implementation
        return cls(**fields)

    def to_hf(self) -> Any:
        """The equivalent `transformers.BertConfig`."""
        import transformers  # deferred: half a second to import, needed only here

        fields = self.to_dict()
        implementation = fields.pop("attn_implementation")
        hf_config = transformers.BertConfig(**fields)
        hf_config._attn_implementation = implementation
        return hf_config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> BertConfig:
        return cls.from_hf(json.loads(Path(path).read_text()))

    def replace(self, **changes: Any) -> BertConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, min(n, 64) + 1) if n % d == 0]


# ----------------------------------------------------------------------------
# Run profiles: one knob that scales every notebook from CI to a GPU server.
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """How big a run is: chosen by BERTCOURSE_PROFILE = ci | cpu | gpu."""

    name: str
    description: str
    model_size: str
    max_seq_length: int
    batch_size: int
    # Sequence lengths at which chapters time attention (its cost grows as n^2).
    attention_lengths: tuple[int, ...]
    timing_repeats: int
    # Whether chapters also fetch large public checkpoints/corpora from the hub.
    use_hub: bool
    extra: dict[str, Any] = field(default_factory=dict)


PROFILES: dict[str, Profile] = {
    "ci": Profile(
        name="ci",
        description="continuous integration: each notebook in at most 90 s on 2 CPU cores",
        model_size="tiny",
        max_seq_length=64,
        batch_size=16,
        attention_lengths=(32, 64, 128, 256, 512),
        timing_repeats=3,
        use_hub=False,
    ),
    "cpu": Profile(
        name="cpu",
        description="a reader's laptop: each notebook in about 10 minutes",
        model_size="mini",
        max_seq_length=128,
        batch_size=32,
        attention_lengths=(64, 128, 256, 512, 1024, 2048),
        timing_repeats=5,
        use_hub=False,
    ),
    "gpu": Profile(
        name="gpu",
        description="Colab or a GPU server: real corpora, bigger models, hub checkpoints",
        model_size="base",
        max_seq_length=512,
        batch_size=64,
        attention_lengths=(128, 256, 512, 1024, 2048, 4096, 8192),
        timing_repeats=10,
        use_hub=True,
    ),
}


def get_profile(name: str | None = None) -> Profile:
    """The run profile named, else $BERTCOURSE_PROFILE, else `gpu` with CUDA and `cpu` without."""
    name = name or os.environ.get("BERTCOURSE_PROFILE") or None
    if name is None:
        name = "gpu" if torch.cuda.is_available() else "cpu"
    name = name.strip().lower()
    if name not in PROFILES:
        raise ConfigError(
            f"Unknown profile {name!r} (from BERTCOURSE_PROFILE); choose one of "
            f"{', '.join(PROFILES)}, e.g. `export BERTCOURSE_PROFILE=cpu`."
        )
    return PROFILES[name]


def get_device(prefer: str | None = None):
    """`cuda` if available, else `mps` on Apple silicon, else `cpu` (or the one asked for)."""
    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
