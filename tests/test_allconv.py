"""allconv_cifar.py, and data-parallel training across devices and workers."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import allconv_cifar as A
from conftest import ROOT
from helpers import use_synthetic

DRIVER = os.path.join(ROOT, "tests", "distributed_driver.py")


def test_parameter_count():
    assert A.build_model().count_params() == 1_369_738
    assert A.build_model(dict(width_shift_range=0.1), input_dropout=0.2, weight_decay=1e-3).count_params() \
        == 1_369_738


def test_relu_after_every_convolution_but_the_last():
    import keras
    convs = [l for l in A.build_model().layers if isinstance(l, keras.layers.Conv2D)]
    assert len(convs) == 9
    assert [c.strides for c in convs].count((2, 2)) == 2
    assert all(c.activation.__name__ == "relu" for c in convs[:-1])
    assert convs[-1].activation.__name__ == "linear"


def test_one_epoch_end_to_end_with_the_seed_file_names(tmp_path, monkeypatch):
    use_synthetic(monkeypatch, 128, 64)
    out = tmp_path / "out"
    A.main(["--epochs", "1", "--input-dropout", "0.2", "--weight-decay", "1e-3", "--verbose", "0",
            "--output-dir", str(out)])
    for name in ("history.csv", "keras_allconv.h5", "allconv_summary.json", "allconv_history.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "allconv_summary.json").read_text())
    assert summary["parameters"] == 1_369_738
    assert summary["hyperparameters"]["learning_rate"] == 0.1  # the optimizer the seed meant


def run_driver(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, DRIVER, *args], capture_output=True, text=True,
                          timeout=timeout, env=env or dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def weights_of(path):
    data = np.load(path)
    return [data[f"arr_{i}"] for i in range(len(data.files) - 1)], int(data["n"])


def test_data_parallel_step_equals_single_device_step(tmp_path):
    out = str(tmp_path / "eq.npz")
    result = run_driver("equivalence", out)
    assert result.returncode == 0, result.stderr[-3000:]
    arrays, n = weights_of(out)
    parallel, single = arrays[:n], arrays[n:]
    assert len(parallel) == len(single) == 4
    for p, s in zip(parallel, single):
        # Same weights after the step, to float32 rounding of the summed gradients.
        np.testing.assert_allclose(p, s, atol=1e-5)


def test_training_across_machines_is_refused_clearly(tmp_path, fake_cifar):
    """Keras 3's fit() fails under MultiWorkerMirroredStrategy (keras-team/keras#20585):
    a run with TF_CONFIG set stops at once with one line saying so."""
    cluster = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}
    env = dict(os.environ, TF_CONFIG=json.dumps(cluster), HOME=str(tmp_path), TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "allconv_cifar.py", "--epochs", "1", "--data-dir",
                             str(fake_cifar[0])], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: TF_CONFIG is set") and "keras-team/keras#20585" in last


def test_devices_under_torch_is_a_clear_error(tmp_path, fake_cifar):
    pytest.importorskip("torch")
    env = dict(os.environ, KERAS_BACKEND="torch", HOME=str(tmp_path))
    result = subprocess.run([sys.executable, "allconv_cifar.py", "--devices", "2", "--epochs", "1",
                             "--data-dir", str(fake_cifar[0])], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == \
        "error: --devices 2: data-parallel training needs the tensorflow or jax backend, not torch"
