"""The benchmark runs and reports; it measures, it does not assert speed."""

import contextlib
import json
import math

import pytest
import torch

from bertcourse import BertConfig, bench, commands
from bertcourse.bench.modern import _modern_pair as modern_pair
from bertcourse.modern import ModernConfig


def test_bench_runs_both_modes_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench.main(
        [
            "--task",
            "encoder",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--batch",
            "2",
            "--seq-len",
            "16",
            "--vocab-size",
            "100",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    table = capsys.readouterr().out
    assert "inference" in table and "train" in table and "ratio" in table
    payload = json.loads(out.read_text())
    assert [r["mode"] for r in payload["results"]] == ["inference", "train"]
    for result in payload["results"]:
        assert result["ours_tokens_per_s"] > 0 and result["reference_tokens_per_s"] > 0
    assert payload["setup"]["seq_len"] == 16
    assert payload["setup"]["max_abs_diff"] < 1e-5  # float32: the same model


def test_make_batch_padding_fraction():
    config = BertConfig.from_name("tiny", vocab_size=50)
    _, mask, _ = bench.make_batch(config, batch=64, length=100, padding=0.25, device="cpu")
    assert abs((1 - mask.float().mean().item()) - 0.25) < 0.02
    assert mask[:, 0].all()


def test_bench_rejects_bad_padding():
    with pytest.raises(SystemExit):
        bench.main(["--padding", "0.7"])


def test_cli_dispatch(capsys):
    assert commands.main([]) == 0
    assert "bench" in capsys.readouterr().out
    assert commands.main(["pretrain-typo"]) == 2
    assert "Unknown command 'pretrain-typo'" in capsys.readouterr().err


def test_pretraining_bench_runs_and_the_models_agree(tmp_path, capsys):
    out = tmp_path / "pretraining.json"
    args = ["--task", "pretraining", "--steps", "2", "--warmup", "1", "--batch", "4"]
    args += ["--seq-len", "16", "--vocab-size", "200", "--json", str(out)]
    assert bench.main(args) == 0
    table = capsys.readouterr().out
    assert "sparse MLM prediction" in table and "ratio ours / transformers" in table
    payload = json.loads(out.read_text())
    assert payload["setup"]["loss_difference"] < 1e-5  # same weights, same batch, same loss
    assert (
        payload["result"]["ours_tokens_per_s"] > 0
        and payload["result"]["reference_tokens_per_s"] > 0
    )
    assert payload["result"]["ours_mfu"] is None  # no GPU peak to compare with on a CPU


def test_flops_per_token_counts_matmuls_and_attention():
    config = BertConfig.from_name("base")
    flops = bench.pretraining_flops_per_token(config, seq_len=128)
    # 12 layers x (4 H^2 + 2 H I) + H^2 + H V weights, 6 FLOPs each, + 12 L H T
    weights = 12 * (4 * 768**2 + 2 * 768 * 3072) + 768**2 + 768 * 30522
    assert flops == 6 * weights + 12 * 12 * 768 * 128


def test_finetuning_bench_runs_and_the_models_agree(tmp_path, capsys):
    out = tmp_path / "finetune.json"
    args = ["--task", "finetune", "--steps", "2", "--warmup", "1", "--batch", "4"]
    args += ["--seq-len", "16", "--json", str(out)]
    assert bench.main(args) == 0
    table = capsys.readouterr().out
    assert "examples/s" in table and "ratio ours / transformers" in table
    payload = json.loads(out.read_text())
    assert payload["setup"]["loss_difference"] < 1e-5  # same MiniLM weights, same batch
    assert payload["setup"]["layers_hidden_heads"] == [6, 384, 12]
    assert payload["result"]["ours_examples_per_s"] > 0
    assert payload["result"]["ratio"] == pytest.approx(
        payload["result"]["ours_examples_per_s"] / payload["result"]["reference_examples_per_s"]
    )


def test_tokenizer_bench_compares_the_same_ids_and_splits_our_time():
    from bertcourse.bench import format_tokenizer, run_tokenizer

    result = run_tokenizer(documents=5, repeats=1)
    assert result["same_ids"] and result["documents"] == 5 and result["ratio"] > 0
    assert abs(sum(result["ours_stage_shares"].values()) - 1) < 0.01
    assert "ours / fast" in format_tokenizer(result)


def test_parser_accepts_the_embed_task():
    args = bench.build_parser().parse_args(
        ["--task", "embed", "--quick", "--repeats", "2", "--text-kind", "queries"]
    )
    assert (args.task, args.quick, args.repeats, args.text_kind) == ("embed", True, 2, "queries")
    assert args.texts is None  # --quick picks 256 unless --texts says otherwise


def test_embed_bench_runs_and_the_two_sides_agree(tmp_path, capsys):
    out = tmp_path / "embed.json"
    args = ["--task", "embed", "--texts", "8", "--repeats", "1", "--batch", "4"]
    assert bench.main([*args, "--device", "cpu", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "passages (8)" in table and "queries (8)" in table and "no ratio" not in table
    payload = json.loads(out.read_text())
    assert [(row["texts"], row["tokenizer"]) for row in payload["rows"]] == [
        ("passages", "transformers"),
        ("passages", "bertcourse"),
        ("queries", "transformers"),
        ("queries", "bertcourse"),
    ]
    for row in payload["rows"]:
        assert row["count"] == 8 and row["batch"] == 4 and row["tokens"] > 8
        assert row["agree"] and row["max_abs_diff"] < bench.EMBED_TOLERANCE
        assert row["ours_texts_per_s"] > 0 and row["reference_texts_per_s"] > 0
        assert row["ours_tokens_per_s"] == pytest.approx(
            row["ours_texts_per_s"] * row["tokens"] / row["count"]
        )
        assert row["ratio"] == pytest.approx(row["ours_texts_per_s"] / row["reference_texts_per_s"])
    passages, queries = payload["rows"][0], payload["rows"][2]
    assert passages["tokens"] > queries["tokens"]  # passages are the longer texts
    setup = payload["setup"]
    assert setup["device"] == "cpu" and setup["threads"] >= 1 and setup["repeats"] == 1
    assert setup["sentence_transformers"] and setup["transformers"] and setup["torch"]


def test_embed_bench_gives_no_ratio_when_our_vectors_differ(tmp_path, monkeypatch, capsys):
    from bertcourse import embeddings

    exact = embeddings.encode
    monkeypatch.setattr(embeddings, "encode", lambda *args, **kwargs: exact(*args, **kwargs) + 1e-3)
    out = tmp_path / "embed.json"
    args = ["--task", "embed", "--texts", "4", "--repeats", "1", "--text-kind", "queries"]
    assert bench.main([*args, "--device", "cpu", "--json", str(out)]) == 1
    captured = capsys.readouterr()
    assert "not timed, no ratio" in captured.out and "vectors differ" in captured.err
    for row in json.loads(out.read_text())["rows"]:
        assert not row["agree"] and row["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)
        assert row["ratio"] is None and row["ours_texts_per_s"] is None


def modern_args(*seq_lens: int) -> list[str]:
    """--task modern on a tiny model, CPU, one timed step; a window of 8 tokens (4 each side),
    so 32 tokens take our blockwise local-attention path."""
    args = ["--task", "modern", "--size", "tiny", "--seq-len", *map(str, seq_lens)]
    args += ["--batch", "2", "--steps", "1", "--warmup", "0", "--vocab-size", "128"]
    return [*args, "--local-attention", "8", "--device", "cpu"]


def test_modern_bench_runs_and_the_models_agree(tmp_path, capsys):
    out = tmp_path / "modern.json"
    assert bench.main([*modern_args(16, 32), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "train sparse" in table and "ratio = ours / transformers" in table
    assert "no ratio" not in table
    payload = json.loads(out.read_text())
    assert [(r["seq_len"], r["mode"], r["prediction"]) for r in payload["rows"]] == [
        (16, "inference", None),
        (16, "train", "dense"),
        (16, "train", "sparse"),
        (32, "inference", None),
        (32, "train", "dense"),
        (32, "train", "sparse"),
    ]
    keys = {"size", "layers_hidden_heads", "seq_len", "batch", "mode", "prediction"}
    keys |= {"difference", "agree", "ours_tokens_per_s", "reference_tokens_per_s"}
    keys |= {"ours_peak_memory_mb", "reference_peak_memory_mb", "ratio"}
    for row in payload["rows"]:
        assert set(row) == keys
        assert row["size"] == "tiny" and row["layers_hidden_heads"] == [2, 128, 2]
        assert row["batch"] == 2 and row["agree"] and row["difference"] < 1e-4
        for side in ("ours", "reference"):
            speed = row[f"{side}_tokens_per_s"]
            assert math.isfinite(speed) and speed > 0
            assert row[f"{side}_peak_memory_mb"] is None  # measured on CUDA only
        assert row["ratio"] == pytest.approx(
            row["ours_tokens_per_s"] / row["reference_tokens_per_s"]
        )
    setup = payload["setup"]
    assert (setup["vocab_size"], setup["local_attention"], setup["steps"]) == (128, 8, 1)
    assert setup["unpad"] and setup["device"] == "cpu" and setup["tolerance"] == 1e-4


def test_modern_bench_sparse_rows_make_transformers_predict_sparsely():
    config = ModernConfig.from_name("tiny", vocab_size=128, pad_token_id=0)
    inputs = bench.pretraining_batch(config, 2, 16, 0.25, "cpu", mlm_probability=0.3)
    labelled = int((inputs["labels"] != -100).sum())
    assert 0 < labelled < inputs["attention_mask"].sum()  # 30% of the real tokens
    kwargs = {name: inputs[name] for name in ("input_ids", "attention_mask", "labels")}
    for prediction, shape in (("dense", (2, 16, 128)), ("sparse", (labelled, 128))):
        ours, reference = modern_pair(config, "train", prediction, torch.device("cpu"))
        with torch.no_grad():
            theirs = reference(**kwargs)
            mine = ours(**kwargs, masked_only=prediction == "sparse")
        assert theirs.logits.shape == mine.logits.shape == shape
        assert mine.loss.item() == pytest.approx(theirs.loss.item(), abs=1e-5)


def test_modern_bench_gives_no_ratio_when_the_models_differ(tmp_path, monkeypatch, capsys):
    from bertcourse import modern

    exact = modern.ModernPreTrainedModel.to_hf

    def perturbed(self):  # transformers' twin, its final norm scaled by 1%
        twin = exact(self)
        with torch.no_grad():
            for name, parameter in twin.named_parameters():
                if name.endswith("final_norm.weight"):
                    parameter.mul_(1.01)
        return twin

    monkeypatch.setattr(modern.ModernPreTrainedModel, "to_hf", perturbed)
    out = tmp_path / "modern.json"
    assert bench.main([*modern_args(16), "--json", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.out.count("not timed, no ratio") == 3
    assert "compute different things" in captured.err
    rows = json.loads(out.read_text())["rows"]
    assert [(r["mode"], r["prediction"]) for r in rows] == [
        ("inference", None),
        ("train", "dense"),
        ("train", "sparse"),
    ]
    for row in rows:
        assert not row["agree"] and row["difference"] > 1e-4
        assert row["ratio"] is None and row["ours_tokens_per_s"] is None


def test_modern_options_parse_and_other_tasks_take_one_size():
    args = bench.build_parser().parse_args(
        ["--task", "modern", "--quick", "--size", "tiny", "mini"]
    )
    assert (args.size, args.seq_len, args.steps, args.unpad) == (["tiny", "mini"], None, None, True)
    assert bench.build_parser().parse_args(["--no-unpad"]).unpad is False
    with pytest.raises(SystemExit):
        bench.main(["--task", "pretraining", "--size", "tiny", "mini"])


def matrix_args(*extra: str) -> list[str]:
    """The matrix at a toy scale: tiny model, 100-token vocabulary, one step each side."""
    return ["--size", "tiny", "--seq-len", "16", "32", "--batch", "4", "--steps", "1"] + [
        "--warmup",
        "0",
        "--vocab-size",
        "100",
        "--device",
        "cpu",
        "--dtype",
        "float32",
        *extra,
    ]


def test_matrix_is_the_default_task_and_writes_a_ratio_per_row(tmp_path, capsys):
    out = tmp_path / "matrix.json"
    assert bench.main([*matrix_args(), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    for workload in bench.MATRIX_WORKLOADS:
        assert workload in table
    payload = json.loads(out.read_text())
    rows = payload["rows"]
    assert len(rows) == 2 * len(bench.MATRIX_WORKLOADS)  # two lengths x five workloads
    assert {(r["seq_len"], r["workload"]) for r in rows} == {
        (length, workload) for length in (16, 32) for workload in bench.MATRIX_WORKLOADS
    }
    for row in rows:
        assert row["agree"] and row["difference"] <= bench.MATRIX_TOLERANCE["float32"]
        assert row["ratio"] == pytest.approx(
            row["ours_tokens_per_s"] / row["reference_tokens_per_s"]
        )
        training = not row["workload"].endswith("inference")
        assert (row["ours_saved_activations_mb"] is not None) == training
        assert row["ours_mfu"] is None  # no GPU peak known on a CPU
    assert payload["setup"]["device"] == "cpu" and payload["setup"]["dtypes"] == ["float32"]
    # Sparse prediction keeps the decoder's logits only at masked positions: less saved.
    by = {(r["seq_len"], r["workload"]): r for r in rows}
    assert (
        by[32, "pretrain sparse"]["ours_saved_activations_mb"]
        < by[32, "pretrain dense"]["ours_saved_activations_mb"]
    )


def test_matrix_gives_no_ratio_when_the_models_differ(tmp_path, monkeypatch, capsys):
    from bertcourse import model

    exact = model.BertModel.from_hf.__func__

    def perturbed(cls, reference, *args, **kwargs):  # our twin, its last LayerNorm shifted
        ours = exact(cls, reference, *args, **kwargs)
        with torch.no_grad():
            ours.encoder.layer[-1].output.LayerNorm.bias.add_(0.01)
        return ours

    monkeypatch.setattr(model.BertModel, "from_hf", classmethod(perturbed))
    out = tmp_path / "matrix.json"
    args = matrix_args("--workload", "encoder inference", "--json", str(out))
    assert bench.main(args) == 1
    captured = capsys.readouterr()
    assert captured.out.count("not timed, no ratio") == 2
    assert "compute different things" in captured.err
    for row in json.loads(out.read_text())["rows"]:
        assert not row["agree"] and row["difference"] > 1e-4
        assert row["ratio"] is None and row["ours_tokens_per_s"] is None


def test_saved_activations_count_what_backward_keeps():
    linear = torch.nn.Linear(64, 64)

    class Wrapped(torch.nn.Module):  # a model whose forward returns an object with .loss
        def __init__(self):
            super().__init__()
            self.linear = linear

        def forward(self, x):
            return type("Out", (), {"loss": torch.relu(self.linear(x)).sum()})()

    x = torch.randn(1000, 64)
    saved = bench.saved_activation_mb(Wrapped(), {"x": x}, {}, lambda: contextlib.nullcontext())
    # The input (saved by the matmul) and the relu output: 2 x 1000 x 64 floats, the weight
    # not counted.
    assert saved == pytest.approx(2 * 1000 * 64 * 4 / 2**20)


def test_matrix_flops_per_token_match_the_pretraining_formula():
    config = BertConfig.from_name("mini", vocab_size=30522)
    dense = bench.flops_per_token(config, 128, "pretrain dense")
    assert dense == bench.pretraining_flops_per_token(config, 128)
    inference = bench.flops_per_token(config, 128, "encoder inference")
    train = bench.flops_per_token(config, 128, "classify train")
    assert train == 3 * inference and dense > train


def test_matrix_options():
    args = bench.build_parser().parse_args(
        ["--quick", "--size", "tiny", "mini", "--seq-len", "128"]
    )
    assert args.task == "matrix" and args.quick and args.size == ["tiny", "mini"]
    with pytest.raises(SystemExit):
        bench.main(["--task", "encoder", "--workload", "pretrain dense"])
    with pytest.raises(ValueError, match="Unknown"):
        bench.run_matrix(sizes=("huge",), progress=False)
