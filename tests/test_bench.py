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
