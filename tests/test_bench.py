"""The benchmark runs and reports; it measures, it does not assert speed."""

import json

import pytest

from bertcourse import bench, commands


def test_bench_runs_both_modes_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench.main(
        [
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
    config = bench.BertConfig.from_name("tiny", vocab_size=50)
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
    config = bench.BertConfig.from_name("base")
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
