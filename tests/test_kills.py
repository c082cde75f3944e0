"""Nothing trained is lost, at any moment: a run killed at each stage (in an
epoch, between epochs, while writing its backup or a checkpoint, during the
final evaluation, plot or summary) reaches the same finished state with
`--resume`; a finished run continues for more epochs; a streamed folder
resumes its shuffling order."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras

import simple_cnn
from cifarkit import checkpoints
from conftest import ROOT
from helpers import use_synthetic

N_TRAIN, N_TEST, EPOCHS, BATCH = 96, 32, 2, 32
ARGS = ["--model", "simple", "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--val-split", "0",
        "--verbose", "0", "--no-mixed-precision"]  # the precision the in-process resume has (conftest)

# Runs simple_cnn.main on the tests' synthetic data and SIGKILLs itself at one stage.
DRIVER = """
import os, signal, sys
root, stage = sys.argv[1], sys.argv[2]
sys.path[:0] = [root, os.path.join(root, "tests")]
import keras, helpers, load_data, simple_cnn
from cifarkit import backup, datasets, history, training
data = helpers.synthetic_cifar(%d, %d)
datasets.load_data = lambda data_dir=None: data
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
calls = []

def half(path):  # a file cut short, as a kill in the middle of writing leaves it
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)

if stage == "in-epoch":
    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 1:
                die()
    original = training.Run.callbacks
    training.Run.callbacks = lambda self, *own: original(self, *own, Kill())
elif stage == "between-epochs":
    original = backup.Backup.on_epoch_end
    def after(self, epoch, logs=None):
        original(self, epoch, logs)
        die()
    backup.Backup.on_epoch_end = after
elif stage in ("writing-backup", "writing-checkpoint"):
    method = "save_weights" if stage == "writing-backup" else "save"
    original = getattr(keras.Model, method)
    def cut(self, path, *a, **k):
        original(self, path, *a, **k)
        calls.append(path)
        if len(calls) == 2:  # the second backup (or checkpoint): the first one exists
            half(path)
            die()
    setattr(keras.Model, method, cut)
elif stage == "evaluation":  # the final one on the test set, not fit()'s validation (which passes this flag)
    original = keras.Model.evaluate
    keras.Model.evaluate = lambda *a, **k: original(*a, **k) if k.get("_use_cached_eval_dataset") else die()
elif stage == "plot":
    history.plot_history = lambda *a, **k: die()
elif stage == "summary":
    original = backup.write_json
    def cut(path, value, **k):
        if path.endswith("_summary.json"):
            with backup.atomic_path(path) as partial:
                with open(partial, "w") as f:
                    f.write('{"model": "cut sh')
                die()
        original(path, value, **k)
    backup.write_json = cut
simple_cnn.main(sys.argv[3:])
""" % (N_TRAIN, N_TEST)

# The stage, and the epochs --resume has to train again (None: it depends on whether epoch 2 improved).
STAGES = {"in-epoch": 1, "between-epochs": 1, "writing-backup": 1, "writing-checkpoint": None, "evaluation": 0,
          "plot": 0, "summary": 0}


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def kill_at(stage, out):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    killed = subprocess.run([sys.executable, "-c", DRIVER, ROOT, stage] + ARGS + ["--output-dir", str(out)],
                            env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / "cifar10_simple_summary.json").exists()


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_run_killed_at_any_stage_finishes_with_resume(stage, tmp_path, monkeypatch, capsys):
    use_synthetic(monkeypatch, N_TRAIN, N_TEST)
    out = tmp_path / "out"
    kill_at(stage, out)
    simple_cnn.main(ARGS + ["--output-dir", str(out), "--resume"])
    history = rows(out / "cifar10_simple_history.csv")
    assert [int(r["epoch"]) for r in history] == list(range(EPOCHS))
    summary = json.loads((out / "cifar10_simple_summary.json").read_text())
    assert summary["epochs_run"] == EPOCHS
    if STAGES[stage] is not None:  # nothing finished is trained again
        assert summary["epochs_this_session"] == STAGES[stage]
    # Every epoch trained exactly once, whatever the session it was trained in.
    assert summary["optimizer_steps"] == EPOCHS * (N_TRAIN // BATCH)
    _, run = checkpoints.read_run(str(out / "cifar10_simple_final.h5"))
    assert run["metrics"]["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert run["epoch"] == EPOCHS
    for path in summary["best_checkpoints"] or [str(out / "cifar10_simple_best.h5")]:
        keras.models.load_model(path)  # whole
    assert not [p for p in os.listdir(out) if p.startswith(".partial-")]


def test_a_finished_run_continues_for_more_epochs(tmp_path, monkeypatch, capsys):
    use_synthetic(monkeypatch, N_TRAIN, N_TEST)
    out = tmp_path / "out"
    simple_cnn.main(ARGS + ["--output-dir", str(out)])
    simple_cnn.main(ARGS[:2] + ["--epochs", "3"] + ARGS[4:] + ["--output-dir", str(out), "--resume"])
    assert "Continuing cifar10_simple from epoch 2 to 3" in capsys.readouterr().out
    assert [int(r["epoch"]) for r in rows(out / "cifar10_simple_history.csv")] == [0, 1, 2]
    summary = json.loads((out / "cifar10_simple_summary.json").read_text())
    assert summary["epochs_run"] == 3 and summary["optimizer_steps"] == 3 * (N_TRAIN // BATCH)
    assert summary["hyperparameters"]["epochs"] == 3
    # main(argv) called from Python (here, under pytest) records its own script and flags, not sys.argv's.
    assert summary["command"] == " ".join(["python3", "simple_cnn.py"] + ARGS[:2] + ["--epochs", "3"] + ARGS[4:]
                                          + ["--output-dir", str(out), "--resume"])
    assert checkpoints.read_run(str(out / "cifar10_simple_final.h5"))[1]["script"] == "simple_cnn.py"
    # Fewer epochs than were trained cannot be resumed into.
    from cifarkit import cli
    with pytest.raises(cli.UsageError, match="has trained 3 epochs, more than the 2 asked for"):
        simple_cnn.main(ARGS + ["--output-dir", str(out), "--resume"])


def test_a_run_resumed_on_other_code_names_every_commit_it_trained_with(tmp_path, monkeypatch):
    """The summary's `code` is the last session's; a run resumed after a
    commit also lists each session's (the bug: a run started on one commit
    and finished on another named only the second). One commit throughout
    adds no list."""
    from cifarkit import hardware
    use_synthetic(monkeypatch, N_TRAIN, N_TEST)
    out = tmp_path / "out"
    first, second = {"commit": "a" * 40, "dirty": False}, {"commit": "b" * 40, "dirty": True}
    monkeypatch.setattr(hardware, "code_version", lambda folder=None: first)
    simple_cnn.main(ARGS + ["--output-dir", str(out)])
    assert "code_sessions" not in json.loads((out / "cifar10_simple_summary.json").read_text())
    monkeypatch.setattr(hardware, "code_version", lambda folder=None: second)
    simple_cnn.main(ARGS[:2] + ["--epochs", "3"] + ARGS[4:] + ["--output-dir", str(out), "--resume"])
    summary = json.loads((out / "cifar10_simple_summary.json").read_text())
    assert summary["code"] == second
    assert summary["code_sessions"] == [{"code": first, "after_epoch": 0}, {"code": second, "after_epoch": 2}]


def test_a_streamed_folder_resumes_its_shuffling_order():
    from cifarkit import streaming

    class Files(list):
        def read(self, chosen):
            return np.asarray(chosen)
    files = Files(range(50))
    straight = streaming.FileBatches(files, np.zeros(50), batch_size=10, shuffle=True, seed=3)
    orders = []
    for _ in range(3):
        orders.append(straight.order.copy())
        straight.on_epoch_end()
    assert not np.array_equal(orders[0], orders[1])  # it does reshuffle
    resumed = streaming.FileBatches(files, np.zeros(50), batch_size=10, shuffle=True, seed=3, epoch=2)
    np.testing.assert_array_equal(resumed.order, orders[2])


def test_a_run_from_before_this_backup_format_resumes(tmp_path, monkeypatch):
    """A run whose backup Keras's BackupAndRestore wrote (latest.weights.h5,
    training_metadata.json) and whose history has no train_seconds column
    continues, its history rows whole; a file another live process is writing
    in the folder is left alone, a dead one's is removed."""
    use_synthetic(monkeypatch, N_TRAIN, N_TEST)
    out = tmp_path / "out"
    simple_cnn.main(ARGS + ["--output-dir", str(out)])
    folder = out / ".cifar10_simple_resume"
    (weights,) = folder.glob("epoch*.weights.h5")
    weights.rename(folder / "latest.weights.h5")
    (folder / "state.json").unlink()
    (folder / "training_metadata.json").write_text(json.dumps({"epoch": EPOCHS, "batch": 0}))
    old = rows(out / "cifar10_simple_history.csv")
    with open(out / "cifar10_simple_history.csv", "w", newline="") as f:
        fields = [k for k in old[0] if k != "train_seconds"]
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(old)
    live, dead = out / f".partial-{os.getppid()}-other.h5", out / ".partial-999999999-gone.h5"
    live.write_text("another run is writing this")
    dead.write_text("cut short")

    simple_cnn.main(ARGS[:2] + ["--epochs", "3"] + ARGS[4:] + ["--output-dir", str(out), "--resume"])
    history = rows(out / "cifar10_simple_history.csv")
    assert [int(r["epoch"]) for r in history] == [0, 1, 2]
    assert all(None not in r and 0 <= float(r["val_accuracy"]) <= 1 for r in history)  # columns in line
    assert history[-1]["train_seconds"] and not history[0]["train_seconds"]
    assert json.loads((out / "cifar10_simple_summary.json").read_text())["epochs_this_session"] == 1
    assert live.exists() and not dead.exists()
