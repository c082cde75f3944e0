"""allconv_cifar.py, and data-parallel training across devices and workers."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import allconv_cifar as A
from conftest import ROOT
from helpers import final_model_accuracy, synthetic_cifar, use_synthetic

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
    for name in ("cifar10_history.csv", "cifar10_keras_allconv.h5", "cifar10_allconv_summary.json",
                 "cifar10_allconv_history.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "cifar10_allconv_summary.json").read_text())
    assert summary["parameters"] == 1_369_738
    assert summary["hyperparameters"]["learning_rate"] == 0.01


def run_driver(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, DRIVER, *args], capture_output=True, text=True,
                          timeout=timeout, env=env or dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def weights_of(path):
    """The arrays arr_0, arr_1, ... of a driver's .npz, in order."""
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(sum(k.startswith("arr_") for k in data.files))]


def test_data_parallel_step_equals_single_device_step(tmp_path):
    out = str(tmp_path / "eq.npz")
    result = run_driver("equivalence", out)
    assert result.returncode == 0, result.stderr[-3000:]
    arrays, n = weights_of(out), int(np.load(out)["n"])
    parallel, single = arrays[:n], arrays[n:]
    assert len(parallel) == len(single) == 4
    for p, s in zip(parallel, single):
        # Same weights after the step, to float32 rounding of the summed gradients.
        np.testing.assert_allclose(p, s, atol=1e-5)


def free_ports(n):
    import socket
    sockets = [socket.socket() for _ in range(n)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def run_cluster(tmp_path, mode, *more, workers=2, timeout=600):
    """multiworker_driver.py MODE as `workers` processes of one cluster on
    127.0.0.1 (none: one process, no TF_CONFIG); worker i saves w{i}.npz.
    A cluster still running after `timeout` seconds (a worker waiting for
    another in a collective that never comes) is killed and fails the test."""
    addresses = [f"127.0.0.1:{port}" for port in free_ports(workers)]
    procs = []
    for index in range(max(workers, 1)):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        if workers:
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": addresses},
                                           "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tests", "multiworker_driver.py"), mode,
             str(tmp_path / f"w{index}.npz"), *more],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        outputs = [p.communicate()[0] for p in procs]
        pytest.fail(f"{mode}: the cluster was still running after {timeout} s\n" + outputs[0][-2000:])
    for p, output in zip(procs, outputs):
        assert p.returncode == 0, output[-3000:]
    return outputs


def test_a_two_worker_step_equals_a_single_process_step(tmp_path):
    """Each worker takes half of the global batch of 32; the summed gradients
    give the single-process step on all 32, to float32 rounding."""
    run_cluster(tmp_path, "step")
    first, second = (weights_of(tmp_path / f"w{i}.npz") for i in range(2))
    (tmp_path / "single").mkdir()
    run_cluster(tmp_path / "single", "step", workers=0)
    single = weights_of(tmp_path / "single" / "w0.npz")
    for a, b, c in zip(first, second, single):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=0, atol=1e-6)


def test_two_workers_on_localhost_train_to_the_same_weights(tmp_path):
    """MultiWorkerMirroredStrategy: two processes on 127.0.0.1 train one short
    epoch of resnet_cifar.py (ResNet-8); both exit 0, only worker 0 writes the
    outputs, and both end with the same weights, batch-norm statistics too."""
    outputs = run_cluster(tmp_path, "script", str(tmp_path / "out"))
    assert "worker 0 of 2, 2 replicas in all" in outputs[0]
    assert not list(tmp_path.glob("worker1-*"))  # worker 1 wrote to a scratch folder, then removed it
    summary = json.loads((tmp_path / "out" / "cifar10_ResNet8v1_summary.json").read_text())
    assert summary["epochs_run"] == 1 and summary["hyperparameters"]["replicas"] == 2
    assert summary["optimizer_steps"] == 256 // 32  # 256 images, global batch 2 x 16
    _, (x_test, y_test) = synthetic_cifar(256, 64)  # the driver's data
    assert summary["test_accuracy"] == pytest.approx(final_model_accuracy(summary, x_test, y_test), abs=1e-6)
    first, second = (weights_of(tmp_path / f"w{i}.npz") for i in range(2))
    assert len(first) == len(second) > 10
    for a, b in zip(first, second):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_a_loss_scaled_two_worker_run_equals_a_single_process_run(tmp_path):
    """mixed_float16 with a LossScaleOptimizer (compile() adds one under
    --mixed-precision on GPUs): two steps on a global batch of 32, split
    across two workers, give the single-process weights and loss scale, so
    the loss is scaled before the gradients are taken, and by the current
    scale (doubled after each step here), not by that of the first step."""
    run_cluster(tmp_path, "loss-scale")
    (tmp_path / "single").mkdir()
    run_cluster(tmp_path / "single", "loss-scale", workers=0)
    paths = [tmp_path / "w0.npz", tmp_path / "w1.npz", tmp_path / "single" / "w0.npz"]
    for path in paths:
        with np.load(path) as data:
            assert float(data["scale"]) == 2.0 ** 17, (path, float(data["scale"]))
    first, second, single = (weights_of(path) for path in paths)
    for a, b, c in zip(first, second, single):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=0, atol=2e-3)  # float16 compute


def test_a_step_that_overflows_on_one_worker_is_skipped_on_both(tmp_path):
    """The LossScaleOptimizer skips a step with non-finite gradients and
    halves its scale, deciding on each worker's own gradients: one image that
    is infinite in float16, on one worker, must make both skip (as one process
    skips it), not leave the other waiting for it in the gradients' sum."""
    run_cluster(tmp_path, "overflow", timeout=300)
    initial = weights_of(tmp_path / "w0-initial.npz")
    for path in (tmp_path / "w0.npz", tmp_path / "w1.npz"):
        with np.load(path) as data:
            assert float(data["scale"]) == 2.0 ** 14, (path, float(data["scale"]))  # halved from 2 ** 15
        for before, after in zip(initial, weights_of(path)):
            np.testing.assert_array_equal(before, after)


def test_two_workers_log_the_losses_that_fit_and_evaluate_report(tmp_path):
    """With an L2 kernel regulariser: the logged loss and val_loss, and
    multiworker.evaluate's loss, are fit()'s and evaluate()'s, the
    regularisation included (a plateau schedule watches val_loss)."""
    run_cluster(tmp_path, "logs")
    (tmp_path / "single").mkdir()
    run_cluster(tmp_path / "single", "logs", workers=0)
    for path in (tmp_path / "w0.npz", tmp_path / "w1.npz"):
        with np.load(path) as cluster, np.load(tmp_path / "single" / "w0.npz") as single:
            for key in ("loss", "val_loss", "evaluated"):
                np.testing.assert_allclose(cluster[key], single[key], rtol=1e-5, err_msg=key)


def test_a_malformed_tf_config_is_a_clear_error(tmp_path, fake_cifar):
    env = dict(os.environ, TF_CONFIG="{not json", HOME=str(tmp_path), TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "allconv_cifar.py", "--epochs", "1", "--data-dir",
                             str(fake_cifar[0])], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: TF_CONFIG must be JSON like")


def test_devices_under_torch_is_a_clear_error(tmp_path, fake_cifar):
    pytest.importorskip("torch")
    env = dict(os.environ, KERAS_BACKEND="torch", HOME=str(tmp_path))
    result = subprocess.run([sys.executable, "allconv_cifar.py", "--devices", "2", "--epochs", "1",
                             "--data-dir", str(fake_cifar[0])], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == \
        "error: --devices 2: data-parallel training needs the tensorflow or jax backend, not torch"
