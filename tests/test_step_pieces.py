"""benchmarks/step_pieces.py: its hand-written rows step as Keras's own
train_step does (else they would time something else; checked under torch,
in a subprocess), and its table sets each row against the right one."""

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def under_torch(args, **kwargs):
    return subprocess.run([sys.executable] + args, cwd=ROOT, env=dict(os.environ, KERAS_BACKEND="torch"),
                          capture_output=True, text=True, **kwargs)


DRIVER = """
import sys
sys.path.insert(0, sys.argv[1])
import torch
import step_pieces
import keras
print("RESULT same", step_pieces.same_step())


def no_update(model, x, y):
    step_pieces.backward(model, x, y)


def no_penalties(model, x, y):
    model.zero_grad()
    with torch.enable_grad():
        keras.ops.mean(keras.losses.categorical_crossentropy(y, model(x, training=True))).backward()  # no L2
    with torch.no_grad():
        model.optimizer.apply([w.value.grad for w in model.trainable_weights], model.trainable_weights)


for wrong in (no_update, no_penalties):
    step_pieces.update = wrong
    try:
        step_pieces.same_step()
        print("RESULT", wrong.__name__, "passed")
    except RuntimeError:
        print("RESULT", wrong.__name__, "refused")
"""


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_the_hand_written_step_is_keras_own_and_a_wrong_one_is_refused():
    """same_step passes for the rows as written, and raises for a step that
    leaves out the optimizer's update or the L2 penalties."""
    done = under_torch(["-c", DRIVER, os.path.join(ROOT, "benchmarks")], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = dict(line.split()[1:] for line in done.stdout.splitlines() if line.startswith("RESULT"))
    assert float(results["same"]) <= 1e-6
    assert results["no_update"] == "refused" and results["no_penalties"] == "refused", results


def test_each_row_is_set_against_the_row_it_adds_a_piece_to():
    """The table's differences are each row's median minus its own base row's
    (a fit row against its own compile's train_step, not the row above it)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import step_pieces
    report = {"machine": "a CPU", "date": "today", "versions": {}, "windows": 3, "batches": 2, "same_step": 0.0,
              "ms_per_batch": {"1. a": [10, 11, 12], "2. b": [15, 14, 30], "3. c": [20, 20, 20],
                               "4. d": [26, 25, 25], "3. e": [21, 22, 23]},
              "added_to": {"1. a": None, "2. b": "1. a", "3. c": "2. b", "4. d": "3. c", "3. e": "3. c"}}
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in step_pieces.markdown(report).splitlines()
            if line.startswith("| ") and line[2].isdigit()}
    assert rows["1. a"] == ["11.0 (10.0-12.0)", "", " |"]
    assert rows["2. b"][0] == "15.0 (14.0-30.0)" and rows["2. b"][2] == "+4.0 |"  # medians, not means
    assert rows["4. d"][1:] == ["3. c", "+5.0 |"] and rows["3. e"][1:] == ["3. c", "+2.0 |"]


def test_each_row_names_the_row_it_adds_a_piece_to(monkeypatch):
    """rows() pairs each row with the one it adds a piece to: the update with
    the bare pass, the first train_step with the update, the scripts' compile
    with throughput.py's, each fit with its own compile's train_step."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import step_pieces
    monkeypatch.setattr(step_pieces, "batches", lambda: [])
    monkeypatch.setattr(step_pieces, "keras_model", lambda compile_as: compile_as)
    monkeypatch.setattr(step_pieces, "timed", lambda step, data: "timed")
    monkeypatch.setattr(step_pieces, "fitted", lambda model: "fitted " + model)
    monkeypatch.setattr(step_pieces, "pytorch_rows", lambda: ("backward", "step"))
    rows = step_pieces.rows()
    ours, scripts = step_pieces.BENCHMARK_COMPILE, step_pieces.SCRIPT_COMPILE
    assert {name: base for name, (_, base) in rows.items()} == {
        "1. forward, loss and backward": None,
        "2. and Keras's SGD update": "1. forward, loss and backward",
        f"3. model.train_step, {ours}": "2. and Keras's SGD update",
        f"4. model.fit, {ours}": f"3. model.train_step, {ours}",
        f"3. model.train_step, {scripts}": f"3. model.train_step, {ours}",
        f"4. model.fit, {scripts}": f"3. model.train_step, {scripts}",
        "PyTorch: forward, loss and backward": None,
        "PyTorch: and torch.optim.SGD's step": "PyTorch: forward, loss and backward"}
    assert rows[f"4. model.fit, {scripts}"][0] == "fitted " + scripts  # the fit row fits its own compile
