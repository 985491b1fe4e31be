"""The training engine: optimizer groups, schedule, learning, checkpoints, exact resume, DDP, CLI.

Models are tiny (2 layers, 32 wide) and the data is synthetic: sequences that
count up or down, so a masked token is predictable from its neighbours and
the direction (the sentence-level label) from the whole sequence.
"""

import csv
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from bertcourse import commands, training, viz  # noqa: E402
from bertcourse.commands import pretrain  # noqa: E402
from bertcourse.config import BertConfig, ConfigError  # noqa: E402
from bertcourse.data import (  # noqa: E402
    Corpus,
    Document,
    PretrainingCollator,
    create_mlm_examples,
)
from bertcourse.model import BertForMaskedLM, BertForPreTraining  # noqa: E402
from bertcourse.reference import REFERENCE_DIR  # noqa: E402
from bertcourse.tokenization import BertTokenizer  # noqa: E402

# On a GPU, bitwise-equal resumes need deterministic kernels; cuBLAS needs this to provide them.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

VOCAB_SIZE = 48
FIRST_WORD_ID = 5  # ids 0-4: [PAD] [UNK] [CLS] [SEP] [MASK]
NUM_WORDS = 12  # the sequences count through ids 5-16 (the rest of the vocabulary is unused)
REPO = Path(__file__).resolve().parents[1]


class ToyTokenizer:
    """What PretrainingCollator needs from a tokenizer, for the synthetic vocabulary."""

    pad_token_id, cls_token_id, sep_token_id, mask_token_id = 0, 2, 3, 4
    all_special_ids = [0, 1, 2, 3, 4]

    def __len__(self) -> int:
        return VOCAB_SIZE


def counting_examples(n: int, seed: int = 0) -> list[dict]:
    """[CLS] a a+1 a+2 ... [SEP] (label 0) or a a-1 a-2 ... (label 1), lengths 8-14, cyclic."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        length, start, down = rng.randint(8, 14), rng.randrange(NUM_WORDS), rng.random() < 0.5
        steps = range(length - 2)
        body = [FIRST_WORD_ID + (start + (-k if down else k)) % NUM_WORDS for k in steps]
        examples.append(
            {
                "input_ids": [2, *body, 3],
                "token_type_ids": [0] * length,
                "next_sentence_label": int(down),
            }
        )
    return examples


def tiny_model(seed: int = 0, head=BertForPreTraining) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )  # dropout stays on (0.1): resuming must restore the random state it draws from
    return head(config)


def arguments(output_dir, **overrides) -> training.TrainingArguments:
    settings = dict(
        output_dir=output_dir,
        max_steps=8,
        per_device_batch_size=4,
        learning_rate=3e-3,
        warmup_steps=2,
        log_every=1,
        show_progress=False,
    )
    settings.update(overrides)
    return training.TrainingArguments(**settings)


def run(output_dir, model=None, examples=36, **overrides) -> training.TrainResult:
    """Train on `examples` (a number of counting examples, or a list of examples)."""
    return training.train(
        model if model is not None else tiny_model(),
        counting_examples(examples) if isinstance(examples, int) else examples,
        PretrainingCollator(ToyTokenizer()),
        arguments(output_dir, **overrides),
        forward_kwargs={"masked_only": True},
    )


def assert_same_weights(first: torch.nn.Module, second: torch.nn.Module) -> None:
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"tensors differ: {different[:5]}"


# 36 examples in batches of 4 is 9 batches an epoch; 2 batches a step, so step 5 takes the
# last batch of epoch 0 and the first of epoch 1: resuming must get both right.
EXACT_RUN = dict(examples=36, gradient_accumulation_steps=2, save_every=4)


@pytest.fixture(scope="module", autouse=True)
def deterministic_algorithms():
    """A GPU adds embedding gradients in a varying order unless told not to; resumes must match."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(previous)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """8 steps in one go: the reference for the resume tests."""
    output_dir = tmp_path_factory.mktemp("straight")
    return run(output_dir, **EXACT_RUN)


# ----------------------------------------------------------------------------
# Arguments, optimizer, schedule
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"max_steps": 0}, "max_steps must be a positive integer"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
        ({"warmup_steps": 2, "warmup_ratio": 0.1}, "either warmup_steps or warmup_ratio"),
        ({"warmup_steps": None, "warmup_ratio": 1.5}, "warmup_ratio is a fraction"),
        ({"mixed_precision": "fp8"}, "mixed_precision must be one of no, bf16, fp16"),
        ({"adam_betas": (0.9, 1.0)}, "adam_betas"),
        ({"max_grad_norm": 0.0}, "max_grad_norm must be > 0"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps must be"),
        ({"resume": True, "overwrite_output_dir": True}, "Choose one"),
    ],
)
def test_training_arguments_reject_bad_values(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        arguments(tmp_path, **overrides)


def test_warmup_ratio_gives_warmup_steps(tmp_path):
    assert (
        arguments(tmp_path, max_steps=100, warmup_steps=None, warmup_ratio=0.1).num_warmup_steps
        == 10
    )
    assert arguments(tmp_path, warmup_steps=3).num_warmup_steps == 3


def test_no_weight_decay_on_biases_and_layer_norms():
    model = tiny_model()
    decay, no_decay = training.parameter_groups(model, weight_decay=0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert "bert.encoder.layer.0.attention.self.query.weight" in decay["param_names"]
    assert "bert.embeddings.word_embeddings.weight" in decay["param_names"]
    assert "cls.seq_relationship.weight" in decay["param_names"]
    for name in (
        "bert.encoder.layer.0.attention.self.query.bias",
        "bert.embeddings.LayerNorm.weight",
        "bert.embeddings.LayerNorm.bias",
        "bert.encoder.layer.1.output.LayerNorm.weight",
        "cls.predictions.transform.LayerNorm.weight",
        "cls.predictions.bias",
    ):
        assert name in no_decay["param_names"], name
    for name in decay["param_names"]:
        assert not name.endswith("bias") and "LayerNorm" not in name, name
    # Every parameter in exactly one group, the tied decoder weight only once.
    grouped = [id(p) for group in (decay, no_decay) for p in group["params"]]
    assert len(grouped) == len(set(grouped)) == len(list(model.parameters()))
    assert "cls.predictions.decoder.weight" not in decay["param_names"] + no_decay["param_names"]


def test_schedule_equals_transformers(tmp_path):
    import transformers

    args = arguments(tmp_path, max_steps=20, warmup_steps=5)
    ours_optimizer, ours = training.create_optimizer_and_schedule(tiny_model(), args)
    reference_optimizer = torch.optim.AdamW(tiny_model().parameters(), lr=args.learning_rate)
    reference = transformers.get_linear_schedule_with_warmup(reference_optimizer, 5, 20)
    for _ in range(22):
        assert ours.get_last_lr()[0] == pytest.approx(reference.get_last_lr()[0], abs=1e-12)
        ours_optimizer.step()
        reference_optimizer.step()
        ours.step()
        reference.step()
    assert ours_optimizer.defaults["eps"] == 1e-6 and ours_optimizer.defaults["betas"] == (
        0.9,
        0.999,
    )


# ----------------------------------------------------------------------------
# Learning, logging, evaluation
# ----------------------------------------------------------------------------


def test_loss_goes_down_and_is_logged(tmp_path):
    result = training.train(
        tiny_model(),
        counting_examples(64),
        PretrainingCollator(ToyTokenizer()),
        arguments(tmp_path, max_steps=30, per_device_batch_size=8, log_every=5, eval_every=10),
        eval_dataset=counting_examples(32, seed=1),
        evaluate_fn=training.evaluate_pretraining,
        forward_kwargs={"masked_only": True},
    )
    losses = [row["loss"] for row in result.log_history if "loss" in row]
    assert len(losses) == 6
    # From ln(48) for the MLM part towards ln(12) (which words occur) and below (which follow).
    assert losses[-1] < 0.85 * losses[0], losses
    metrics = result.eval_metrics
    assert metrics["eval_mlm_accuracy"] > 2 / VOCAB_SIZE  # above guessing over the vocabulary
    assert 0.0 <= metrics["eval_nsp_accuracy"] <= 1.0
    assert metrics["eval_loss"] == pytest.approx(
        metrics["eval_mlm_loss"] + metrics["eval_nsp_loss"]
    )
    assert result.tokens_per_s > 0 and result.global_step == 30 and not result.interrupted

    header = (tmp_path / "log.csv").read_text().splitlines()[0].split(",")
    for column in ("step", "loss", "lr", "tokens_per_s", "elapsed_s", "eval_mlm_accuracy"):
        assert column in header
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval_mlm_accuracy" in r] == [10, 20, 30]
    with open(tmp_path / "log.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(rows) == len(result.log_history)
    assert rows[-1]["eval_mlm_accuracy"] == metrics["eval_mlm_accuracy"]

    figure = viz.plot_training_curves(tmp_path / "log.csv")
    loss_axis, accuracy_axis = figure.axes
    assert {line.get_label() for line in loss_axis.lines} >= {"training loss", "eval mlm loss"}
    assert {line.get_label() for line in accuracy_axis.lines} == {"mlm accuracy", "nsp accuracy"}
    assert len(loss_axis.lines[0].get_xdata()) == 6


def test_evaluation_masks_the_same_tokens_every_time(tmp_path):
    """A fixed masking seed makes evaluations comparable; it does not move training's generators."""
    scores = []

    def evaluate(model, dataloader, accelerator):
        metrics = training.evaluate_pretraining(model, dataloader, accelerator)
        scores.append(metrics)
        torch.rand(1)  # an evaluation that draws from the global generator: must not matter
        return metrics

    model = tiny_model()
    model.eval()
    training.train(
        model,
        counting_examples(16),
        PretrainingCollator(ToyTokenizer()),
        arguments(tmp_path, max_steps=2, learning_rate=1e-12, warmup_steps=0, eval_every=1),
        eval_dataset=counting_examples(12, seed=1),
        evaluate_fn=evaluate,
        forward_kwargs={"masked_only": True},
    )
    # learning rate ~0: the weights barely move, so the same masks give the same numbers.
    assert scores[0]["eval_mlm_loss"] == pytest.approx(scores[1]["eval_mlm_loss"], rel=1e-6)


def test_evaluation_batches_come_from_eval_collate_fn(tmp_path):
    """Training masks at its own rate; evaluation at the eval collator's (pretraining: 15%)."""
    masked_fraction = {"train": [], "eval": []}

    def counting(name, collator):
        def collate(examples, generator=None):
            batch = collator(examples, generator=generator)
            chosen = (batch["labels"] != -100).sum() / batch["attention_mask"].sum()
            masked_fraction[name].append(chosen.item())
            return batch

        return collate

    training.train(
        tiny_model(),
        counting_examples(64),
        counting("train", PretrainingCollator(ToyTokenizer(), mlm_probability=0.6)),
        arguments(tmp_path, max_steps=4, eval_every=2),
        eval_dataset=counting_examples(64, seed=1),
        eval_collate_fn=counting("eval", PretrainingCollator(ToyTokenizer(), mlm_probability=0.15)),
        forward_kwargs={"masked_only": True},
    )
    assert len(masked_fraction["train"]) >= 4 and len(masked_fraction["eval"]) == 2 * 16
    assert min(masked_fraction["train"]) > 0.4  # 60% of the words, [CLS]/[SEP] never
    assert sum(masked_fraction["eval"]) / len(masked_fraction["eval"]) < 0.3


def test_seeded_collate_depends_only_on_the_batch():
    collator = PretrainingCollator(ToyTokenizer())
    seeded = training.SeededCollate(collator, seed=7)
    examples = counting_examples(4)
    keyed = [((i, 0, 8 + i), example) for i, example in enumerate(examples)]
    first, again = seeded(keyed), seeded(keyed)
    assert torch.equal(first["labels"], again["labels"])
    later = seeded([((i, 1, 8 + i), example) for i, example in enumerate(examples)])
    assert not torch.equal(first["labels"], later["labels"])  # another epoch, other masks

    # A collate_fn without a generator parameter: seeded through the global generator,
    # which is restored afterwards.
    def plain(batch):
        return torch.rand(3)

    fallback = training.SeededCollate(plain, seed=7)
    state = torch.get_rng_state()
    assert torch.equal(fallback(keyed), fallback(keyed))
    assert torch.equal(torch.get_rng_state(), state)


def test_cpu_mixed_precision_request_falls_back_clearly(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: bf16 runs as asked")
    with pytest.warns(UserWarning, match="needs a CUDA GPU.*mixed_precision='no'"):
        result = run(tmp_path, max_steps=1, mixed_precision="bf16")
    assert result.mixed_precision == "no" and result.global_step == 1


# ----------------------------------------------------------------------------
# Checkpoints and resuming
# ----------------------------------------------------------------------------


def test_checkpoints_are_complete_atomic_and_pruned(uninterrupted):
    output_dir = uninterrupted.output_dir
    assert [p.name for p in training.list_checkpoints(output_dir)] == [
        "checkpoint-4",
        "checkpoint-8",
    ]
    assert not list(output_dir.glob("*.tmp")) and not list(output_dir.glob("*.old"))
    checkpoint = output_dir / "checkpoint-8"
    assert {p.name for p in checkpoint.iterdir()} == {
        "config.json",
        "model.safetensors",
        "training_state.pt",
    }
    state = torch.load(checkpoint / "training_state.pt", weights_only=True)
    assert state["step"] == 8 and state["epoch"] == 1  # 16 batches: 9 in epoch 0, 7 in epoch 1
    assert state["batches_in_epoch"] == 7
    assert set(state["rng_states"][0]) >= {"python", "numpy", "torch"}
    assert state["optimizer"]["param_groups"][1]["weight_decay"] == 0.0
    assert state["scheduler"]["last_epoch"] == 8
    # The saved weights are the returned model's.
    saved = load_file(checkpoint / "model.safetensors")
    tied = uninterrupted.model.tied_weights  # the MLM decoder: saved once, as the word embeddings
    assert tied and not set(tied) & set(saved)
    for name, tensor in uninterrupted.model.state_dict().items():
        assert torch.equal(saved[tied.get(name, name)], tensor.cpu()), name
    assert json.loads((checkpoint / "config.json").read_text())["architectures"] == [
        "BertForPreTraining"
    ]


def test_keep_checkpoints_is_respected(tmp_path):
    """(With the MLM-only head, whose batches carry no next_sentence_label.)"""
    examples = [{"input_ids": e["input_ids"]} for e in counting_examples(36)]
    model = tiny_model(head=BertForMaskedLM)
    run(tmp_path, model, examples, max_steps=5, save_every=1, keep_checkpoints=3)
    assert [p.name for p in training.list_checkpoints(tmp_path)] == [
        "checkpoint-3",
        "checkpoint-4",
        "checkpoint-5",
    ]


def test_resume_gives_bitwise_the_uninterrupted_weights(uninterrupted, tmp_path):
    shutil.copytree(uninterrupted.output_dir / "checkpoint-4", tmp_path / "checkpoint-4")
    # A save that was cut short: newer, but incomplete, so it must be ignored.
    half_written = tmp_path / "checkpoint-6.tmp"
    half_written.mkdir()
    (half_written / "model.safetensors").write_bytes(b"\0" * 100)
    # The model starts from other weights: everything must come from the checkpoint.
    result = run(tmp_path, model=tiny_model(seed=123), resume=True, **EXACT_RUN)
    assert result.global_step == 8
    assert_same_weights(result.model, uninterrupted.model)
    assert [r["loss"] for r in result.log_history if r["step"] > 4] == [
        r["loss"] for r in uninterrupted.log_history if r["step"] > 4
    ]


def test_keyboard_interrupt_saves_and_resumes_exactly(uninterrupted, tmp_path, capsys):
    def press_ctrl_c(state: training.TrainState) -> None:
        if state.step == 3:
            raise KeyboardInterrupt

    result = training.train(
        tiny_model(),
        counting_examples(EXACT_RUN["examples"]),
        PretrainingCollator(ToyTokenizer()),
        arguments(tmp_path, gradient_accumulation_steps=2, save_every=4),
        forward_kwargs={"masked_only": True},
        callbacks=[press_ctrl_c],
    )
    assert result.interrupted and result.global_step == 3
    assert result.last_checkpoint == tmp_path / "checkpoint-3"
    assert training.latest_checkpoint(tmp_path) == tmp_path / "checkpoint-3"
    output = capsys.readouterr().out
    assert "Interrupted after step 3" in output and "--resume" in output

    resumed = run(tmp_path, model=tiny_model(seed=5), resume=True, **EXACT_RUN)
    assert_same_weights(resumed.model, uninterrupted.model)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))  # no gap, no repeat


def test_a_second_ctrl_c_during_an_update_lets_it_finish(uninterrupted, tmp_path, monkeypatch):
    """Two signals, the second one while the optimizer updates the weights (the reader presses
    Ctrl-C twice): the run stops right after the update, so the checkpoint's step and weights
    belong together and --resume ends exactly where an uninterrupted run does."""
    import signal

    update = training.trainer.Trainer._update

    def update_then_two_signals(self) -> None:
        update(self)  # the weights of the next step are in place, its step number not yet
        if self.position.step == 2:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # a second signal stops at once... after this

    monkeypatch.setattr(training.trainer.Trainer, "_update", update_then_two_signals)
    result = run(tmp_path, **EXACT_RUN)
    assert result.interrupted and result.global_step == 3 and result.stop_signal == signal.SIGINT
    assert training.latest_checkpoint(tmp_path) == tmp_path / "checkpoint-3"
    monkeypatch.undo()
    resumed = run(tmp_path, model=tiny_model(seed=5), resume=True, **EXACT_RUN)
    assert_same_weights(resumed.model, uninterrupted.model)


def test_a_new_run_does_not_overwrite_an_old_one(uninterrupted, tmp_path):
    shutil.copytree(uninterrupted.output_dir, tmp_path, dirs_exist_ok=True)
    with pytest.raises(FileExistsError, match="resume=True"):
        run(tmp_path, max_steps=1)
    result = run(tmp_path, max_steps=1, overwrite_output_dir=True)
    assert [p.name for p in training.list_checkpoints(tmp_path)] == ["checkpoint-1"]
    assert result.global_step == 1


# ----------------------------------------------------------------------------
# Two processes (DDP over gloo) through torchrun
# ----------------------------------------------------------------------------

DDP_SCRIPT = """
import hashlib, json, os, sys
sys.path.insert(0, {tests!r})
import torch
from test_training import PretrainingCollator, ToyTokenizer, arguments, counting_examples, tiny_model
from bertcourse import training

result = training.train(
    tiny_model(),
    counting_examples(64),
    PretrainingCollator(ToyTokenizer()),
    arguments({out!r}, max_steps=12, per_device_batch_size=8, log_every=3, save_every=6),
    forward_kwargs={{"masked_only": True}},
)
digest = hashlib.sha256()
for name, tensor in sorted(result.model.state_dict().items()):
    digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
rank = int(os.environ["RANK"])
with open(os.path.join({out!r}, f"rank{{rank}}.json"), "w") as handle:
    json.dump({{"sha256": digest.hexdigest(), "world": int(os.environ["WORLD_SIZE"]),
               "losses": [r["loss"] for r in result.log_history if "loss" in r]}}, handle)
"""


def test_two_processes_stay_in_sync_and_learn(tmp_path):
    script = tmp_path / "ddp_train.py"
    out = tmp_path / "out"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(tests=str(REPO / "tests"), out=str(out))))
    # Two CPU processes over gloo, also on a machine with one GPU (two NCCL ranks cannot share it).
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", str(script)]  # fmt: skip
    completed = subprocess.run(
        command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == 2
    assert ranks[0]["sha256"] == ranks[1]["sha256"]  # DDP kept the replicas identical
    losses = ranks[0]["losses"]
    assert losses == ranks[1]["losses"]  # logged losses are averaged over both processes
    assert losses[-1] < losses[0], losses
    state = torch.load(out / "checkpoint-12" / "training_state.pt", weights_only=True)
    assert state["num_processes"] == 2 and len(state["rng_states"]) == 2
    # Each process took its own half of every epoch: 8 batches of 8 -> 4 each, 12 steps = 3 epochs.
    assert (state["epoch"], state["batches_in_epoch"]) == (2, 4)


# ----------------------------------------------------------------------------
# python -m bertcourse pretrain
# ----------------------------------------------------------------------------

ANIMALS = ["cat", "dog", "bird", "horse", "mouse", "fox"]
PLACES = ["garden", "house", "field", "river", "forest", "barn"]


def write_small_corpus(path: Path) -> Path:
    """Documents (blank-line separated) of simple sentences: a synthetic corpus for the CLI."""
    rng = random.Random(0)
    documents = []
    for _ in range(40):
        sentences = []
        for _ in range(rng.randint(3, 6)):
            animal, place = rng.choice(ANIMALS), rng.choice(PLACES)
            sentences.append(f"The {animal} walked to the {place} and slept there.")
        documents.append(" ".join(sentences))
    path.write_text("\n\n".join(documents) + "\n")
    return path


def test_pretrain_cli_end_to_end_and_fill_mask(tmp_path, capsys):
    import transformers

    corpus = write_small_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "run"
    code = commands.main(
        [
            "pretrain", "--size", "tiny", "--corpus", str(corpus), "--steps", "20",
            "--out", str(out), "--vocab", "train:120", "--seq-len", "32", "--batch-size", "8",
            "--lr", "1e-3", "--eval-every", "10", "--nsp",
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    for expected in ("checkpoints:", "logs:", "plot:", "fill-mask"):
        assert expected in printed
    assert (out / "training_curves.png").stat().st_size > 0
    assert (out / "vocab.txt").is_file()
    assert [p.name for p in training.list_checkpoints(out)] == ["checkpoint-10", "checkpoint-20"]
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    evaluations = [r for r in rows if "eval_mlm_accuracy" in r]
    assert [r["step"] for r in evaluations] == [10, 20]
    assert "eval_nsp_accuracy" in evaluations[-1]

    final = out / "final"
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"} <= {
        p.name for p in final.iterdir()
    }
    fill_mask = transformers.pipeline("fill-mask", model=str(final), device="cpu")
    predictions = fill_mask("The cat walked to the [MASK] and slept there.", top_k=3)
    assert len(predictions) == 3 and all(p["token_str"].strip() for p in predictions)
    # The export holds our trained weights, not a fresh initialisation.
    reference = transformers.AutoModelForMaskedLM.from_pretrained(str(final))
    trained = load_file(out / "checkpoint-20" / "model.safetensors")
    assert torch.equal(
        reference.bert.embeddings.word_embeddings.weight,
        trained["bert.embeddings.word_embeddings.weight"],
    )


def test_pretrain_cli_checks_the_output_directory_first(tmp_path):
    (tmp_path / "run").mkdir()
    corpus = write_small_corpus(tmp_path / "corpus.txt")
    (tmp_path / "run" / "pretrain_setup.json").write_text(
        json.dumps({"size": "mini", "corpus": str(corpus)})
    )
    (tmp_path / "run" / "log.jsonl").write_text('{"step": 1, "loss": 5.0}\n')
    command = ["--corpus", str(corpus), "--steps", "1", "--out", str(tmp_path / "run")]
    with pytest.raises(ValueError, match="size: 'mini' -> 'tiny'"):
        pretrain.main([*command, "--resume"])
    with pytest.raises(FileExistsError, match="--resume to continue it, --overwrite"):
        pretrain.main(command)


def test_hash_helper_is_stable():
    """The DDP test compares parameter hashes: equal tensors must hash equally."""
    a, b = tiny_model(), tiny_model()

    def digest(model):
        h = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            h.update(name.encode() + tensor.numpy().tobytes())
        return h.hexdigest()

    assert digest(a) == digest(b) and digest(a) != digest(tiny_model(seed=1))


def test_pretraining_evaluates_a_seeded_sample_of_the_whole_validation_split():
    tokenizer = BertTokenizer.from_pretrained("minilm")
    sentences = [f"Document {i} says something new about the topic of part {i}." for i in range(6)]
    corpus = Corpus("toy", [Document(f"doc{i}", sentences) for i in range(40)])
    argv = ["--steps", "1", "--out", "x", "--no-nsp", "--seq-len", "32", "--eval-examples", "10"]
    options = pretrain.build_parser().parse_args(argv)
    _, sample = pretrain.make_pretraining_examples(options, tokenizer, corpus, corpus)
    _, again = pretrain.make_pretraining_examples(options, tokenizer, corpus, corpus)
    every = create_mlm_examples(
        [d.sentences for d in corpus.documents], tokenizer, max_seq_length=32, seed=1
    )
    positions = [every.index(example) for example in sample]
    assert len(sample) == 10 and sample == again  # seeded
    assert max(positions) > len(every) // 2  # not only the first documents


def test_pretrain_defaults_are_the_measured_laptop_recipe():
    """The defaults are the sweep's best run among those of at least 64 tokens (shorter ones
    would leave the position embeddings of longer task inputs untrained)."""
    parser = pretrain.build_parser()
    options = parser.parse_args(["--steps", "1", "--out", "x"])
    assert not parser.parse_args(["--steps", "1", "--out", "x", "--nsp"]).no_nsp
    sweep = json.loads((REFERENCE_DIR / "pretrain_sweep.json").read_text())
    long_enough = [run for run in sweep["runs"] if " --seq-len 32 " not in run["command"]]
    best = max(long_enough, key=lambda run: run["final_reevaluated"]["eval_mlm_accuracy"])
    recipe = parser.parse_args(best["command"].split()[4:])  # after "python -m bertcourse pretrain"
    for key in ("vocab", "no_nsp", "seq_len", "batch_size", "lr", "mlm_probability", "size"):
        assert getattr(options, key) == getattr(recipe, key), key
