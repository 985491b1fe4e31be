"""The commands fail safely: a mistake is one line and status 2 before any slow work, a diverged
run saves nothing, and a run stopped at any point (SIGTERM, after its last checkpoint) finishes
with --resume exactly as if it had never stopped."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bertcourse import commands
from bertcourse.files import atomic_directory, atomic_save_file
from bertcourse.training import list_checkpoints

ROOT = Path(__file__).resolve().parent.parent


def write_corpus(path: Path) -> Path:
    rng = random.Random(0)
    animals, places = ["cat", "dog", "bird", "fox"], ["garden", "house", "river", "barn"]
    documents = [
        " ".join(
            f"The {rng.choice(animals)} walked to the {rng.choice(places)} and slept there."
            for _ in range(rng.randint(3, 6))
        )
        for _ in range(40)
    ]
    path.write_text("\n\n".join(documents) + "\n")
    return path


def pretrain_argv(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        "pretrain", "--corpus", str(corpus), "--out", str(out), "--vocab", "train:120",
        "--seq-len", "32", "--batch-size", "8", "--eval-examples", "16", *extra,
    ]  # fmt: skip


# -- options: refused by argparse, naming the flag, before any work -------------------------

BAD_OPTIONS = [
    (["pretrain", "--steps", "0"], "--steps: '0': must be at least 1"),
    (["pretrain", "--steps", "5", "--batch-size", "0"], "--batch-size: '0': must be at least 1"),
    (["pretrain", "--steps", "5", "--size", "huge"], "--size: invalid choice: 'huge'"),
    (["pretrain", "--steps", "5", "--lr", "nan"], "--lr: 'nan' is not a finite number"),
    (["pretrain", "--steps", "5", "--lr", "-1"], "--lr: '-1': must be greater than 0"),
    (["pretrain", "--steps", "5", "--mlm-probability", "1.5"], "--mlm-probability: '1.5'"),
    (["pretrain", "--steps", "5", "--warmup-ratio", "1"], "--warmup-ratio: '1': must be"),
    (["pretrain", "--steps", "2.5"], "--steps: '2.5' is not a whole number"),
    (["finetune", "--train", "x.tsv", "--batch-size", "0"], "--batch-size: '0'"),
    (["finetune", "--train", "x.tsv", "--evals-per-epoch", "0"], "--evals-per-epoch: '0'"),
    (["finetune", "--train", "x.tsv", "--epochs=-1"], "--epochs: '-1': must be greater than 0"),
    (["finetune", "--train", "x.tsv", "--max-steps", "-3"], "--max-steps: '-3': must be 0 or more"),
]


@pytest.mark.parametrize(
    ("argv", "message"), BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS]
)
def test_a_bad_option_is_refused_at_once_naming_the_flag(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        commands.main([*argv, "--out", str(tmp_path / "out")])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()  # refused before any work: nothing was written


# -- input files: one line, the file named, status 2 -----------------------------------------


def test_a_missing_or_damaged_input_is_one_line_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "missing.tsv"
    code = commands.main(["finetune", "--train", str(missing), "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and str(missing) in err[0]

    damaged = tmp_path / "damaged"  # a checkpoint whose weights were cut short
    damaged.mkdir()
    (damaged / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 10}))
    (damaged / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    table = tmp_path / "train.tsv"
    table.write_text("sentence\tlabel\n" + "".join(f"text {i}\t{i % 2}\n" for i in range(20)))
    argv = ["finetune", "--train", str(table), "--init", str(damaged), "--out", str(tmp_path / "b")]
    code = commands.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert str(damaged / "model.safetensors") in err[0] and "damaged or incomplete" in err[0]
    assert err[0].startswith(f"error: --init {damaged}: ")  # the flag the reader typed
    assert err[0].endswith("(a run's model/ or final/).")  # and what the flag accepts

    with pytest.raises(Exception, match="cannot be read"):  # --debug: the traceback instead
        commands.main([*argv, "--debug"])


def test_an_unreadable_table_or_corpus_is_named_with_its_line_and_the_fix(tmp_path, capsys):
    latin1 = tmp_path / "reviews.tsv"
    latin1.write_bytes("sentence\tlabel\ngood\t1\ncaf\u00e9 noir\t0\n".encode("latin-1"))
    commas = tmp_path / "commas.tsv"
    commas.write_text("sentence,label\ngood,1\nbad,0\n")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("A fine sentence.\n")
    (corpus / "b.txt").write_bytes(b"One line.\nTwo \xff lines.\n")
    cases = [
        (["finetune", "--train", str(latin1)], [str(latin1), "line 3", "UTF-8"]),
        (["finetune", "--train", str(commas)], [str(commas), "commas", "name it .csv"]),
        (["pretrain", "--corpus", str(corpus), "--steps", "1"], [str(corpus / "b.txt"), "line 2"]),
    ]
    for argv, expected in cases:
        code = commands.main([*argv, "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and err[-1].startswith("error: "), (argv, err)
        assert all(part in err[-1] for part in expected), (argv, err[-1])


def test_a_corpus_too_small_for_the_options_names_the_flag_to_change(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt")
    cases = [
        (pretrain_argv(corpus, tmp_path / "a", "--steps", "2", "--batch-size", "5000"),
         ["--batch-size 5000:", "57 training examples", "lower --batch-size"]),
        ([*pretrain_argv(corpus, tmp_path / "b", "--steps", "2"), "--vocab", "train:5"],
         ["--vocab train:5:", "at least 49", "--vocab train:N"]),
    ]  # fmt: skip
    for argv, expected in cases:
        code = commands.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (argv, err)
        assert all(part in err[0] for part in expected), err[0]
        assert "per_device_batch_size" not in err[0]  # the flag, not the Python argument


def test_integer_labels_with_gaps_map_through_a_shown_list(tmp_path):
    from bertcourse.data import load_classification

    table = tmp_path / "gaps.tsv"
    table.write_text(
        "sentence\tlabel\n" + "".join(f"text {i}\t{[0, 5][i % 2]}\n" for i in range(6))
    )
    with pytest.warns(
        UserWarning, match="integers 0, 5, not 0..1: .* 2 classes, ids 0 = '0', 1 = '5'"
    ):
        data = load_classification(table, "sentence", "label")
    assert data.label_names == ["0", "5"] and data.labels == [0, 1, 0, 1, 0, 1]


def test_finetune_holds_out_whole_sentences_of_a_phrase_file(tmp_path):
    from bertcourse.commands import finetune

    rows = []
    for i in range(1_100):  # sentences of 16 words, each with two of its sub-phrases
        words = [f"w{i}"] + [f"word{(i * 7 + j) % 50}" for j in range(15)]
        rows += [(" ".join(words), i % 2), (" ".join(words[:5]), i % 2), (" ".join(words[:9]), 1)]
    table = tmp_path / "phrases.tsv"
    table.write_text("sentence\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows))
    options = finetune.build_parser().parse_args(
        ["--train", str(table), "--out", str(tmp_path / "run"), "--holdout", "sentences"]
    )
    train, validation = finetune.load_task_data(options)
    assert len(validation) == finetune.SENTENCES_HELD_OUT
    assert all(len(text.split()) == 16 for text in validation.texts)
    held_out = [f" {text} " for text in validation.texts]
    assert not [text for text in train.texts if any(f" {text} " in h for h in held_out)]
    assert len(train) == 3 * 1_100 - 3 * finetune.SENTENCES_HELD_OUT


def test_a_max_length_beyond_the_checkpoints_positions_is_refused_naming_the_flag(tmp_path, capsys):
    from test_finetune import tiny_checkpoint  # 128 positions

    table = write_table(tmp_path / "train.tsv")
    argv = ["finetune", "--train", str(table), "--init", str(tiny_checkpoint(tmp_path / "init")),
            "--out", str(tmp_path / "run"), "--max-length", "1000"]  # fmt: skip
    assert commands.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--max-length 1000 is longer than the 128 positions" in err
    assert not (tmp_path / "run").exists()


def test_a_seq_len_beyond_bert_positions_says_it_grows_the_position_table(tmp_path, capsys):
    out = tmp_path / "run"
    argv = pretrain_argv(write_corpus(tmp_path / "corpus.txt"), out, "--steps", "1")
    argv[argv.index("--seq-len") + 1] = "600"
    assert commands.main(argv) == 0
    assert "--seq-len 600 is longer than BERT's 512 positions" in capsys.readouterr().out
    config = json.loads((out / "final" / "config.json").read_text())
    assert config["max_position_embeddings"] == 600


# -- a diverged run --------------------------------------------------------------------------


def test_a_diverged_run_stops_saves_and_exports_nothing_and_its_log_stays_json(tmp_path, capsys):
    out = tmp_path / "run"
    argv = pretrain_argv(write_corpus(tmp_path / "corpus.txt"), out, "--steps", "30", "--lr", "1e6")
    code = commands.main([*argv, "--eval-every", "10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("error: the training loss became NaN or infinite at step ")
    assert "--lr" in err[-1]
    assert not list_checkpoints(out) and not (out / "final").exists()
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(row["loss"] == row["loss"] for row in rows)  # no NaN was logged


def test_a_diverged_run_on_two_processes_stops_both_without_hanging(tmp_path):
    """Each process notes its own first non-finite loss; the check gathers them, so the two
    stop at the same step together instead of one waiting for the other forever."""
    out = tmp_path / "run"
    argv = pretrain_argv(write_corpus(tmp_path / "corpus.txt"), out, "--steps", "30", "--lr", "1e6")
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                   "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", "-m", "bertcourse", *argv, "--eval-every", "10"]  # fmt: skip
    completed = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True,
                               text=True, timeout=180)  # fmt: skip
    # One line from each process (a progress bar may precede it on the same line).
    steps = re.findall(r"error: the training loss became NaN or infinite at step (\d+)",
                       completed.stderr)  # fmt: skip
    assert completed.returncode != 0 and len(steps) == 2, completed.stderr[-3000:]
    assert steps[0] == steps[1]  # both stopped at the same step
    assert not list_checkpoints(out) and not (out / "final").exists()


# -- runs stopped at any point finish with --resume ------------------------------------------


def test_resume_finishes_a_run_stopped_after_its_last_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    argv = pretrain_argv(write_corpus(tmp_path / "corpus.txt"), out, "--steps", "4")
    assert commands.main([*argv, "--save-every", "2", "--eval-every", "2"]) == 0
    exported = load_file(out / "final" / "model.safetensors")
    for stale in (out / "final").iterdir():  # killed during the export: final/ is not there
        stale.unlink()
    (out / "final").rmdir()
    capsys.readouterr()
    assert commands.main([*argv, "--save-every", "2", "--eval-every", "2", "--resume"]) == 0
    assert "eval_mlm_accuracy" in capsys.readouterr().out  # the run's own last evaluation
    again = load_file(out / "final" / "model.safetensors")
    assert exported.keys() == again.keys()
    assert all(torch.equal(exported[name], again[name]) for name in exported)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_run_stopped_by_a_signal_resumes_exactly(stop, tmp_path):
    """SIGTERM (a scheduler, Colab): the run saves its last step and exits 143. SIGKILL (out of
    memory, a lost machine): nothing runs, the newest complete checkpoint survives. Either
    way, --resume ends with the uninterrupted run's weights, bit for bit."""
    corpus = write_corpus(tmp_path / "corpus.txt")
    steps = ["--steps", "300", "--save-every", "10", "--eval-every", "1000", "--log-every", "1"]
    whole = tmp_path / "whole"
    assert commands.main(pretrain_argv(corpus, whole, *steps)) == 0

    stopped = tmp_path / "stopped"
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "bertcourse", *pretrain_argv(corpus, stopped, *steps)]
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    log = stopped / "log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and len(log.read_text().splitlines()) >= 25):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0]
        time.sleep(0.02)
    process.send_signal(stop)
    output, _ = process.communicate(timeout=120)
    saved = [int(path.name.split("-")[1]) for path in list_checkpoints(stopped)]
    if stop == signal.SIGTERM:
        assert process.returncode == 128 + signal.SIGTERM, output
        assert "--resume" in output and saved[-1] >= 25  # the step it stopped at, saved
    else:
        assert process.returncode == -signal.SIGKILL
        assert saved and all(step % 10 == 0 for step in saved)
    assert saved[-1] < 300 and not (stopped / "final").exists()

    assert commands.main([*pretrain_argv(corpus, stopped, *steps), "--resume"]) == 0
    expected = load_file(whole / "final" / "model.safetensors")
    resumed = load_file(stopped / "final" / "model.safetensors")
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [row["step"] for row in rows if "loss" in row] == list(
        range(1, 301)
    )  # no gap, no repeat


# -- --out: only new, empty or the command's own runs ----------------------------------------


def write_table(path: Path, rows: int = 40) -> Path:
    words = ["good film", "bad film", "fine story", "dull plot"]
    path.write_text("sentence\tlabel\n" + "".join(
        f"{words[i % 4]} number {i}\t{['pos', 'neg'][i % 2]}\n" for i in range(rows)))  # fmt: skip
    return path


def test_a_folder_of_the_readers_is_refused_untouched_and_overwrite_clears_a_run(tmp_path, capsys):
    mine = tmp_path / "mine"  # a reader's own results, with a vocab.txt of their own
    mine.mkdir()
    for name, text in (
        ("metrics.json", '{"mine": 1}'),
        ("vocab.txt", "[PAD]\n"),
        ("notes.txt", "x"),
    ):
        (mine / name).write_text(text)
    before = {p.name: p.read_text() for p in mine.iterdir()}
    corpus, table = write_corpus(tmp_path / "corpus.txt"), write_table(tmp_path / "train.tsv")
    for argv in (pretrain_argv(corpus, mine, "--steps", "2"),
                 ["finetune", "--train", str(table), "--out", str(mine)],
                 pretrain_argv(corpus, mine, "--steps", "2", "--overwrite")):  # fmt: skip
        assert commands.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "no bertcourse run wrote (metrics.json, notes.txt, vocab.txt)" in err
    assert {p.name: p.read_text() for p in mine.iterdir()} == before  # nothing changed

    out = tmp_path / "run"  # a pretrain run cannot be overwritten by finetune
    assert commands.main(pretrain_argv(corpus, out, "--steps", "2")) == 0
    assert commands.main(["finetune", "--train", str(table), "--out", str(out), "--overwrite"]) == 2
    assert "holds a `pretrain` run, not a `finetune` one" in capsys.readouterr().err
    (out / "training_curves.png").unlink()  # --overwrite removes the old run's artefacts first
    stale = out / "final" / "config.json"
    stale_time = stale.stat().st_mtime_ns
    assert (
        commands.main(pretrain_argv(corpus, out, "--steps", "2", "--seed", "1", "--overwrite")) == 0
    )
    assert stale.stat().st_mtime_ns != stale_time and (out / "training_curves.png").is_file()


def test_finetune_resumed_after_its_last_checkpoint_writes_its_report(tmp_path, capsys):
    from test_finetune import tiny_checkpoint  # a small random BERT with MiniLM's vocabulary

    table = write_table(tmp_path / "train.tsv")
    init = str(tiny_checkpoint(tmp_path / "init"))
    argv = ["finetune", "--train", str(table), "--init", init, "--out", str(tmp_path / "run"),
            "--max-steps", "4", "--batch-size", "8", "--no-progress"]  # fmt: skip
    assert commands.main(argv) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    (tmp_path / "run" / "metrics.json").unlink()  # stopped during its final report
    assert commands.main([*argv, "--resume"]) == 0
    again = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert again["accuracy"] == metrics["accuracy"] and again["steps"] == 4


CTRL_C_DURING_THE_REPORT = """
import os, signal, sys
sys.path.insert(0, "tests")
import bertcourse.commands.finetune as finetune
from bertcourse import commands

# As in a terminal: a process started in the background (CI) inherits SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)

def ctrl_c(*args, **kwargs):  # the reader presses Ctrl-C while the report's plots are drawn
    signal.raise_signal(signal.SIGINT)

finetune.plot_confusion_matrix = ctrl_c
sys.exit(commands.main(sys.argv[1:]))
"""


def test_finetune_stopped_by_ctrl_c_during_its_report_exits_130_and_resumes(tmp_path):
    from test_finetune import tiny_checkpoint

    table = write_table(tmp_path / "train.tsv")
    init = str(tiny_checkpoint(tmp_path / "init"))
    out = tmp_path / "run"
    argv = ["finetune", "--train", str(table), "--init", init, "--out", str(out),
            "--max-steps", "4", "--batch-size", "8", "--no-progress"]  # fmt: skip
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.run([sys.executable, "-c", CTRL_C_DURING_THE_REPORT, *argv], cwd=ROOT,
                             env=environment, capture_output=True, text=True)  # fmt: skip
    assert process.returncode == 128 + signal.SIGINT, process.stderr
    assert process.stderr.strip().splitlines()[-1] == "error: interrupted (SIGINT)"
    assert "Traceback" not in process.stderr and not (out / "model").exists()
    assert commands.main([*argv, "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4
    assert (out / "model" / "model.safetensors").is_file()


# -- files -----------------------------------------------------------------------------------


def test_saved_files_and_folders_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        atomic_save_file(lambda path: Path(path).write_text("x"), tmp_path / "file.txt")
        atomic_directory(lambda folder: (folder / "inside.txt").write_text("y"), tmp_path / "dir")
    finally:
        os.umask(previous)
    assert (tmp_path / "file.txt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "dir").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "dir" / "inside.txt").read_text() == "y"
    (tmp_path / ".dir.abc123.tmp").mkdir()  # what a write killed halfway leaves
    atomic_directory(lambda folder: (folder / "new.txt").write_text("z"), tmp_path / "dir")
    assert [p.name for p in (tmp_path / "dir").iterdir()] == ["new.txt"]  # replaced whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file.txt"]  # no leftovers


# A subprocess that kills itself (SIGKILL: no handler, no cleanup runs) in the middle of
# writing one file of a save: the weights of checkpoint-20, or the exported final/ folder.
KILLED_INSIDE_A_SAVE = """
import os, signal, sys
from pathlib import Path
import bertcourse.hf as hf
from bertcourse import commands

write_file = hf.atomic_save_file

def killed_inside(write, path):
    path = Path(path)
    if path.name == "model.safetensors" and path.parent.name.startswith(sys.argv[1]):
        write_file(write, path.parent / "model.safetensors")  # one file of the folder written
        (path.parent / "half-written").write_bytes(b"x" * 1000)
        os.kill(os.getpid(), signal.SIGKILL)
    return write_file(write, path)

hf.atomic_save_file = killed_inside
sys.exit(commands.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("inside", ["checkpoint-20.tmp", ".final."], ids=["checkpoint", "export"])
def test_a_run_killed_inside_a_save_resumes_exactly(inside, tmp_path):
    """Killed while checkpoint-20 or final/ is half written: the half-written folder is never
    taken for a complete one, and --resume ends with the uninterrupted run's weights."""
    corpus = write_corpus(tmp_path / "corpus.txt")
    steps = ["--steps", "40", "--save-every", "10", "--eval-every", "1000", "--log-every", "5"]
    whole = tmp_path / "whole"
    assert commands.main(pretrain_argv(corpus, whole, *steps)) == 0

    killed = tmp_path / "killed"
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", KILLED_INSIDE_A_SAVE, inside,
               *pretrain_argv(corpus, killed, *steps)]  # fmt: skip
    process = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
    assert process.returncode == -signal.SIGKILL, process.stdout + process.stderr
    half_written = [path.parent for path in killed.rglob("half-written")]
    assert len(half_written) == 1 and half_written[0].name.startswith(inside)
    saved = [int(path.name.split("-")[1]) for path in list_checkpoints(killed)]
    assert saved == ([10] if inside.startswith("checkpoint") else [30, 40])  # the newest two kept
    assert not (killed / "final").exists()

    assert commands.main([*pretrain_argv(corpus, killed, *steps), "--resume"]) == 0
    expected = load_file(whole / "final" / "model.safetensors")
    resumed = load_file(killed / "final" / "model.safetensors")
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)
    assert not list(killed.rglob("half-written"))  # the cut-short folder is cleared
