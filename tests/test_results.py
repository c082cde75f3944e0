"""results_table.py (the README's table comes from results/) and reproduce.py."""

import json
import os
import subprocess

import pytest

import reproduce
from conftest import ROOT
import results_table

SUMMARY = {
    "model": "cifar10_ResNet20v1",
    "command": "python3 resnet_cifar.py --recipe fast --data-dir ../shared/datasets --verbose 2 "
               "--output-dir runs/resnet20_fast --resume",
    "date": "2026-11-24",
    "test_accuracy": 0.9016,
    "best_val_accuracy": 0.9023,
    "epochs_run": 60,
    "train_images_per_s": 300.4,
    "validation": "test set (as the seed does); recipe fast",
    "backend": "tensorflow",
    "device": "CPU:0",
    "machine": "AMD EPYC, 2 cores",
    "hyperparameters": {"recipe": "fast"},
}


def test_readme_table_is_the_one_generated_from_results():
    assert results_table.main(["--check"]) == 0, "run python3 results_table.py --write"


def test_a_row_gives_the_final_model_and_the_gap_to_the_published_figure():
    row = results_table.row(SUMMARY)
    cells = [c.strip() for c in row.strip("|").split("|")]
    # where files go is left out; the default length is spelt out (defaults change: 40 epochs until 2026-11-30)
    assert cells[0] == "`python3 resnet_cifar.py --recipe fast --epochs 60`"
    assert cells[1] == "60"
    assert cells[2] == "**90.16%**"  # the final model, not the best epoch
    assert cells[3] == "90.23% (chosen on the test set)"
    assert cells[4] == "91.25% (ResNet-20 paper (He et al., 2016)): missed by 1.09 points"
    assert cells[5] == "300" and cells[6] == "AMD EPYC, 2 cores, tensorflow"


def test_published_figure_follows_the_recipe_and_a_met_target_says_so():
    seed = dict(SUMMARY, hyperparameters={"recipe": "seed"}, test_accuracy=0.93, epochs_run=200,
                command="python3 resnet_cifar.py", validation="held-out last 10% of the training images",
                device="NVIDIA H100 80GB HBM3")
    cells = [c.strip() for c in results_table.row(seed).strip("|").split("|")]
    assert cells[3] == "90.23% (validation)"
    assert cells[4] == "92.16% (Keras example, 200 epochs): met"
    assert cells[6] == "NVIDIA H100 80GB HBM3, tensorflow"
    short = dict(SUMMARY, model="cifar10_allconv", command="python3 allconv_cifar.py --epochs 5",
                 hyperparameters={}, epochs_run=5, test_accuracy=0.70)
    cells = [c.strip() for c in results_table.row(short).strip("|").split("|")]
    assert cells[4] == "92.75% (paper, with augmentation, 350 epochs): not comparable: 5 of its 350 epochs"
    other = dict(SUMMARY, model="cifar10_deep_aug", command="python3 simple_cnn.py --model deep_aug")
    assert "| none |" in results_table.row(other)


def test_write_replaces_only_what_lies_between_the_markers():
    text = f"intro\n{results_table.BEGIN}\nold table\n{results_table.END}\nrest\n"
    new = results_table.with_table(text, "| new |")
    assert new == f"intro\n{results_table.BEGIN}\n| new |\n{results_table.END}\nrest\n"
    with pytest.raises(SystemExit, match="markers"):
        results_table.with_table("no markers here", "| new |")


def test_reproduce_runs_collects_small_files_and_skips_what_is_done(tmp_path, fake_cifar, monkeypatch, capsys):
    root, _, _ = fake_cifar
    monkeypatch.setattr(reproduce, "RUNS", [
        ("tiny", ["simple_cnn.py", "--model", "simple", "--epochs", "1", "--subset", "64"])])
    results, runs = tmp_path / "results", tmp_path / "runs"
    common = ["--data-dir", str(root), "--results", str(results), "--runs-dir", str(runs), "--no-readme",
              "--allow-dirty"]  # the tree under test may have changes; refusing them is tested below
    assert reproduce.main(common) == 0
    kept = sorted(os.listdir(results / "tiny"))
    assert kept == ["cifar10_simple_history.csv", "cifar10_simple_history.png", "cifar10_simple_summary.json"]
    assert any(name.endswith(".h5") for name in os.listdir(runs / "tiny"))  # checkpoints stay in runs/
    summary = json.loads((results / "tiny" / "cifar10_simple_summary.json").read_text())
    assert summary["epochs_run"] == 1 and "simple_cnn.py --model simple" in summary["command"]

    def no_training(*a, **k):
        raise AssertionError("a finished run was started again")
    monkeypatch.setattr(subprocess, "run", no_training)
    assert reproduce.main(common) == 0
    assert "tiny: done" in capsys.readouterr().out
    reproduce.main(["--list", "--results", str(results)])
    assert capsys.readouterr().out.split()[:2] == ["tiny", "done"]

    # A run that finished but was not collected (results/ lost, say) is collected, not retrained.
    import shutil
    shutil.rmtree(results / "tiny")
    assert reproduce.main(common) == 0
    assert "finished in" in capsys.readouterr().out
    assert (results / "tiny" / "cifar10_simple_summary.json").is_file()


def test_collect_refuses_a_run_from_uncommitted_code_unless_allowed(tmp_path):
    run_dir, results = tmp_path / "run", tmp_path / "results"
    run_dir.mkdir()
    path = run_dir / "cifar10_simple_summary.json"
    for code in (None, {"commit": "a" * 40, "dirty": True}):
        path.write_text(json.dumps(dict(SUMMARY, code=code)))
        with pytest.raises(SystemExit, match="uncommitted changes|without its git commit"):
            reproduce.collect(str(run_dir), "tiny", str(results))
        assert not (results / "tiny").exists()
    reproduce.collect(str(run_dir), "tiny", str(results), allow_dirty=True)
    path.write_text(json.dumps(dict(SUMMARY, code={"commit": "b" * 40, "dirty": False})))
    assert reproduce.collect(str(run_dir), "clean", str(results))
    # a run whose earlier session trained on uncommitted (or unrecorded) code is refused as well
    for earlier in (None, {"commit": "c" * 40, "dirty": True}):
        sessions = [{"code": earlier, "after_epoch": 0}, {"code": {"commit": "b" * 40, "dirty": False},
                                                          "after_epoch": 14}]
        path.write_text(json.dumps(dict(SUMMARY, code=sessions[-1]["code"], code_sessions=sessions)))
        with pytest.raises(SystemExit):
            reproduce.collect(str(run_dir), "resumed", str(results))


def test_a_run_resumed_on_other_code_shows_each_sessions_commit():
    sessions = [{"code": {"commit": "c" * 40, "dirty": False}, "after_epoch": 0},
                {"code": {"commit": "d" * 40, "dirty": False}, "after_epoch": 14}]
    row = results_table.row(dict(SUMMARY, code=sessions[-1]["code"], code_sessions=sessions))
    assert row.rstrip().endswith("| `ccccccc` (epochs 1-), then `ddddddd` (epochs 15-) |")


def test_rows_name_their_commit_and_repeated_runs_get_their_mean():
    clean = dict(SUMMARY, code={"commit": "0123456789" * 4, "dirty": False}, test_accuracy=0.9100)
    dirty = dict(SUMMARY, code={"commit": "abcdef0123" * 4, "dirty": True}, test_accuracy=0.9160)
    lines = results_table.table([clean, dirty]).splitlines()[2:]
    assert lines[0].rstrip().endswith("| `0123456` |") and lines[1].rstrip().endswith("| `abcdef0` + changes |")
    assert "| not recorded |" in results_table.row(SUMMARY)
    assert lines[2].startswith("| mean of the 2 runs above |")
    assert "**91.30%** (91.00, 91.60; sd 0.42)" in lines[2] and "met" in lines[2]  # the spread too


def test_a_default_length_run_and_one_that_names_its_epochs_are_repeats_of_one_recipe():
    """`--recipe fast` at its default 60 epochs and `--recipe fast --epochs 60
    --seed 1` train the same recipe: one mean (the bug: the explicit flag made
    them two recipes, each "one run"); 40 epochs of it is another."""
    values = {"recipe": "fast", "epochs": 60}
    plain = dict(SUMMARY, hyperparameters=values, test_accuracy=0.9100)
    named = dict(SUMMARY, hyperparameters=dict(values, seed=1), test_accuracy=0.9160,
                 command="python3 resnet_cifar.py --recipe fast --epochs 60 --seed 1 --output-dir r")
    short = dict(SUMMARY, hyperparameters=dict(values, epochs=40), epochs_run=40, test_accuracy=0.9050)
    lines = results_table.table([plain, named, short]).splitlines()[2:]
    assert len(lines) == 4 and lines[2].startswith("| mean of the 2 runs above |")
    assert lines[3].startswith("| `python3 resnet_cifar.py --recipe fast --epochs 40` | 40 |")
    assert "missed by 0.75 points" in lines[3]  # held to the paper's figure from 40 epochs


def test_a_run_shows_the_precision_flag_that_repeats_it_on_any_cpu():
    """A float32 run typed without a precision flag would train in bfloat16
    today on a CPU that runs it natively: its row says --no-mixed-precision;
    likewise a bfloat16 run without one; a command that named a flag shows as typed."""
    f32 = dict(SUMMARY, hyperparameters={"recipe": "fast", "mixed_precision": False})
    assert results_table.shown_command(f32) == "python3 resnet_cifar.py --recipe fast --epochs 60 --no-mixed-precision"
    bf16 = dict(SUMMARY, hyperparameters={"recipe": "fast", "mixed_precision": True})
    assert results_table.shown_command(bf16) == "python3 resnet_cifar.py --recipe fast --epochs 60 --mixed-precision"
    typed = dict(f32, command="python3 resnet_cifar.py --no-mixed-precision --epochs 3")
    assert results_table.shown_command(typed) == "python3 resnet_cifar.py --no-mixed-precision --epochs 3"


def test_reproduce_refuses_an_unknown_run(capsys):
    with pytest.raises(SystemExit):
        reproduce.main(["--only", "resnet1000"])
    assert "unknown run(s) resnet1000" in capsys.readouterr().err


def test_a_run_names_its_commit_and_only_code_changes_make_it_dirty(tmp_path):
    """hardware.code_version: the commit, and dirty for a changed script but not
    for the README, docs or results that reproduce.py itself rewrites."""
    from cifarkit import hardware
    git = lambda *a: subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t",  # noqa: E731
                                     *a], check=True, capture_output=True, text=True).stdout.strip()
    git("init", "-q")
    for name in ("train.py", "README.md", "results/run/summary.json", "docs/notes.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("0\n")
    git("add", "-A")
    git("commit", "-q", "-m", "first")
    assert hardware.code_version(str(tmp_path)) == {"commit": git("rev-parse", "HEAD"), "dirty": False}
    for name in ("README.md", "results/run/summary.json", "docs/notes.md"):
        (tmp_path / name).write_text("1\n")
    assert hardware.code_version(str(tmp_path))["dirty"] is False
    (tmp_path / "train.py").write_text("1\n")
    assert hardware.code_version(str(tmp_path))["dirty"] is True


@pytest.mark.parametrize("script", ["simple_cnn", "resnet_cifar", "vgg19_cifar", "allconv_cifar",
                                    "resnet18_fashion_mnist"])
def test_each_docstring_ends_with_its_measured_result(script):
    """A script's docstring ends with "Expected result: NN.NN% ..." naming the
    results/ folder whose summary measured it; a figure typed by hand, or
    left behind when a new run replaced the summary, fails here."""
    import glob
    import importlib
    import re
    doc = importlib.import_module(script).__doc__.strip()
    last = doc.split("\n\n")[-1]
    match = re.match(r"Expected result: (\d+\.\d\d)% .*?(results/[\w.-]+)/", last, re.S)
    assert match, f"{script}: the docstring's last paragraph is not its expected result"
    figure, folder = match.groups()
    summaries = glob.glob(os.path.join(ROOT, folder, "*summary.json"))
    assert len(summaries) == 1, f"{folder} holds no one summary"
    with open(summaries[0]) as f:
        summary = json.load(f)
    assert figure == f"{100 * summary['test_accuracy']:.2f}"
    assert re.search(rf"\b{summary['epochs_run']}\b[^.]*epochs", last), "the epochs are not the summary's"
