"""Checkpoints any Keras user can open, and the run they carry."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras

import allconv_cifar
from cifarkit import legacy
from cifarkit import preprocessing
from cifarkit.checkpoints import read_run, save_h5
import load_data
import predict
import resnet18_fashion_mnist
import resnet_cifar
import simple_cnn
import vgg19_cifar
from helpers import synthetic_cifar, use_synthetic

# Each script's model as its main() builds it: its normalisation and its augmentation.
MODELS = {
    "simple_cnn": lambda x: simple_cnn.build_model("deep_aug", dict(rotation_range=40, zoom_range=0.2,
                                                                    width_shift_range=0.2, horizontal_flip=True)),
    "resnet_cifar": lambda x: resnet_cifar.build_model(1, 8, preprocessing.pixel_mean(x),
                                                       dict(width_shift_range=0.125, horizontal_flip=True)),
    "vgg19_cifar": lambda x: vgg19_cifar.build_model("A", dict(width_shift_range=0.125, fill_mode="constant")),
    "allconv_cifar": lambda x: allconv_cifar.build_model(dict(width_shift_range=0.1)),
    "resnet18_fashion_mnist": lambda x: resnet18_fashion_mnist.build_model(
        "imagenet", (28, 28, 1), 48, 10, dict(horizontal_flip=True)),
}
BACKENDS = [b for b in ("tensorflow", "torch", "jax") if importlib.util.find_spec(b)]

# Run in a fresh interpreter, outside the repository, with nothing of ours
# importable: every checkpoint in one interpreter (a start-up per backend, not
# per checkpoint), each on its own, so one that fails to open spoils no other.
LOAD_AND_PREDICT = """
import sys, traceback, numpy as np, keras
print(keras.backend.backend())
for path, x_path, out_path in zip(*[iter(sys.argv[1:])] * 3):
    try:
        model = keras.models.load_model(path, compile=False)
        np.save(out_path, model.predict(np.load(x_path), verbose=0))
    except Exception:
        print(f"--- {path}", file=sys.stderr)
        traceback.print_exc()
"""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{script: (checkpoint path, input images, predictions of the writing model)}."""
    folder = tmp_path_factory.mktemp("checkpoints")
    out = {}
    for script, build in MODELS.items():
        (x, _), _ = synthetic_cifar(16, 1, size=28 if "fashion" in script else 32,
                                    channels=1 if "fashion" in script else 3)
        model = build(x)
        path = str(folder / f"{script}.h5")
        save_h5(model, path, load_data.CIFAR10_CLASSES, {"script": f"{script}.py"})
        np.save(folder / f"{script}_x.npy", x[:8])
        out[script] = (path, str(folder / f"{script}_x.npy"), model.predict(x[:8], verbose=0))
    return out


@pytest.fixture(scope="module")
def opened_under(checkpoints, tmp_path_factory):
    """opened_under(backend): (the backend the fresh interpreter ran, its
    stderr, {script: the path of its predictions}), one interpreter a backend."""
    runs = {}

    def run(backend):
        if backend not in runs:
            folder = tmp_path_factory.mktemp(f"opened_{backend}")
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            env.update(KERAS_BACKEND=backend, HOME=str(folder), TF_CPP_MIN_LOG_LEVEL="3")
            args, outputs = [], {}
            for script, (path, x_path, _) in checkpoints.items():
                outputs[script] = folder / f"{script}_p.npy"
                args += [path, x_path, str(outputs[script])]
            result = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT] + args, cwd=folder, env=env,
                                    capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, result.stderr[-3000:]
            runs[backend] = (result.stdout.strip().splitlines()[0], result.stderr, outputs)
        return runs[backend]
    return run


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("script", list(MODELS))
def test_plain_load_model_opens_every_script_checkpoint_anywhere(script, backend, checkpoints, opened_under):
    path, _, expected = checkpoints[script]
    ran, errors, outputs = opened_under(backend)
    assert ran == backend
    assert outputs[script].exists(), errors[-3000:]
    # Another backend's kernels sum in another order: through VGG-19's 16 convolutions float32
    # round-off reaches 3e-5 of a probability (seen on a loaded machine); a wrong layer is far more.
    np.testing.assert_allclose(np.load(outputs[script]), expected, atol=1e-5 if backend == "tensorflow" else 1e-4)


def test_no_custom_layer_in_any_checkpoint(checkpoints):
    import h5py
    for path, _, _ in checkpoints.values():
        with h5py.File(path, "r") as f:
            config = f.attrs["model_config"]
        assert "cifar_collection" not in (config.decode() if isinstance(config, bytes) else config), path


def test_normalisation_stays_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    (x, _), _ = synthetic_cifar(8, 1)
    model = resnet_cifar.build_model(1, 8, preprocessing.pixel_mean(x))
    layer = model.get_layer("subtract_pixel_mean")
    assert all(inner.compute_dtype == "float32" for inner in layer.layers)
    out = keras.ops.convert_to_numpy(layer(x.astype("float32")))
    assert out.dtype == np.float32
    mean, std = preprocessing.statistics(layer)
    np.testing.assert_allclose(out, (x - mean) / std, atol=1e-5)  # no bfloat16 rounding of the pixels


def test_checkpoints_carry_class_names_and_their_run(tmp_path, monkeypatch):
    use_synthetic(monkeypatch, 96, 32)
    out = tmp_path / "out"
    simple_cnn.main(["--model", "simple", "--epochs", "2", "--batch-size", "32", "--verbose", "0",
                     "--output-dir", str(out)])
    summary = json.loads((out / "cifar10_simple_summary.json").read_text())
    names, run = read_run(str(out / "cifar10_simple_final.h5"))
    assert names == list(load_data.CIFAR10_CLASSES)
    assert run["checkpoint"] == "final" and run["epoch"] == 2 and run["dataset"] == "cifar10"
    assert run["hyperparameters"]["batch_size"] == 32 and run["hyperparameters"]["model"] == "simple"
    assert run["metrics"]["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert "val_accuracy" in run["metrics"]
    names, best = read_run(summary["best_checkpoints"][-1])
    assert names == list(load_data.CIFAR10_CLASSES) and best["checkpoint"] == "best"
    assert best["metrics"]["val_accuracy"] == pytest.approx(summary["best_val_accuracy"])


def test_stored_class_names_are_what_predict_shows(tmp_path, capsys):
    (x, _), _ = synthetic_cifar(8, 1)
    path = str(tmp_path / "m.h5")
    names = [f"kind_{i}" for i in range(10)]
    save_h5(simple_cnn.build_model("simple"), path, names)
    cv2 = pytest.importorskip("cv2")
    cv2.imwrite(str(tmp_path / "a.png"), x[0])
    assert predict.main([path, str(tmp_path / "a.png"), "--top", "10"]) == 0
    shown = capsys.readouterr().out
    assert all(name in shown for name in names) and "airplane" not in shown


def test_old_checkpoints_still_open_in_predict_and_convert(tmp_path):
    (x, _), _ = synthetic_cifar(8, 1)
    inputs = keras.Input((32, 32, 3))
    h = legacy.Standardize(x.astype("float64").mean(axis=0), 255.0, name="subtract_pixel_mean")(inputs)
    h = keras.layers.Conv2D(4, 3)(h)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    old = keras.Model(inputs, outputs)
    old_path, new_path = str(tmp_path / "old.h5"), str(tmp_path / "new.h5")
    save_h5(old, old_path, load_data.CIFAR10_CLASSES)
    model, names = predict.load_checkpoint(old_path)
    assert names == list(load_data.CIFAR10_CLASSES)
    expected = old.predict(x, verbose=0)
    new = legacy.convert(old_path, new_path)
    assert not any(isinstance(layer, legacy.Standardize) for layer in new.layers)
    np.testing.assert_allclose(new.predict(x, verbose=0), expected, atol=1e-5)
    assert read_run(new_path)[0] == list(load_data.CIFAR10_CLASSES)
