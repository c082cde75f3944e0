"""simple_cnn.py end to end on tiny synthetic data, predict.py on its
checkpoints, resumption, and one real-data learning check."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras

from cifarkit import cli

from cifarkit import preprocessing
import predict
import simple_cnn
import load_data
from cifarkit import training
from conftest import ROOT
from helpers import final_model_accuracy, use_synthetic

FAST = ["--epochs", "1", "--batch-size", "32", "--verbose", "0"]


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("model,params", [("simple", 4_200_842), ("deep", 1_676_842),
                                          ("deep_aug", 1_676_842)])
def test_parameter_counts(model, params):
    augment = dict(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2,
                   zoom_range=0.2, horizontal_flip=True) if model == "deep_aug" else None
    m = simple_cnn.build_model(model, augment)
    assert m.count_params() == params
    assert sum(int(np.prod(w.shape)) for w in m.trainable_weights) == params


def test_unknown_model_is_a_clear_error():
    with pytest.raises(cli.UsageError, match="unknown model 'huge'"):
        simple_cnn.build_model("huge")


@pytest.mark.parametrize("model", simple_cnn.MODELS)
def test_each_model_trains_and_writes_its_outputs(model, tmp_path, monkeypatch):
    _, (x_test, y_test) = use_synthetic(monkeypatch)
    out = tmp_path / "out"
    assert simple_cnn.main(["--model", model, "--output-dir", str(out)] + FAST) == 0
    name = f"cifar10_{model}"
    for suffix in ("_best.h5", "_final.h5", "_history.csv", "_history.png", "_summary.json"):
        assert (out / (name + suffix)).is_file(), suffix
    assert list((out / "logs" / name).rglob("events.out.tfevents.*"))
    summary = json.loads((out / f"{name}_summary.json").read_text())
    assert summary["epochs_run"] == 1 and summary["train_images"] == 240
    assert summary["validation"].startswith("held-out last 20%")
    assert summary["hyperparameters"]["model"] == model
    assert summary["test_accuracy"] == pytest.approx(final_model_accuracy(summary, x_test, y_test), abs=1e-6)
    assert summary["train_images_per_s"] > 0
    assert summary["backend"] == keras.backend.backend()
    assert len(read_rows(out / f"{name}_history.csv")) == 1


def test_best_checkpoint_follows_val_accuracy(tmp_path, monkeypatch):
    """The seeds watched 'val_acc', which Keras never logs: ours must save."""
    use_synthetic(monkeypatch)
    out = tmp_path / "out"
    simple_cnn.main(["--model", "simple", "--output-dir", str(out), "--epochs", "3", "--verbose", "0"])
    summary = json.loads((out / "cifar10_simple_summary.json").read_text())
    rows = read_rows(out / "cifar10_simple_history.csv")
    best = max(float(r["val_accuracy"]) for r in rows)
    assert summary["best_checkpoints"] and abs(summary["best_val_accuracy"] - best) < 1e-6


def test_checkpoint_takes_raw_pixels_and_predict_agrees(tmp_path, monkeypatch, capsys):
    import cv2
    (_, _), (x_test, _) = use_synthetic(monkeypatch)
    out = tmp_path / "out"
    simple_cnn.main(["--model", "deep", "--output-dir", str(out), "--epochs", "2", "--verbose", "0"])
    ckpt = str(out / "cifar10_deep_final.h5")
    model, names = predict.load_checkpoint(ckpt)
    assert names == list(load_data.CIFAR10_CLASSES)
    images = x_test[:6]
    expected = model.predict(images, verbose=0).argmax(axis=1)

    paths, decoded = [], []
    for i, img in enumerate(images):
        bgr = img[:, :, ::-1]
        for ext in ("png", "jpg"):
            path = str(tmp_path / f"img{i}.{ext}")
            cv2.imwrite(path, bgr)
            paths.append(path)
            decoded.append(cv2.imread(path)[:, :, ::-1])
    expected_files = model.predict(np.stack(decoded), verbose=0).argmax(axis=1)
    assert (expected_files[0::2] == expected).all()  # PNG is lossless

    capsys.readouterr()
    assert predict.main([ckpt, *paths, "--top", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(paths)
    for line, path, cls in zip(lines, paths, expected_files):
        assert line.startswith(path + ": " + names[cls] + " ")


def test_predict_resizes_and_converts(tmp_path, monkeypatch, capsys):
    import cv2
    use_synthetic(monkeypatch)
    out = tmp_path / "out"
    simple_cnn.main(["--model", "simple", "--output-dir", str(out)] + FAST)
    ckpt = str(out / "cifar10_simple_final.h5")
    big = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "big.png"), big)
    cv2.imwrite(str(tmp_path / "gray.png"), big[:, :, 0])
    capsys.readouterr()
    assert predict.main([ckpt, str(tmp_path / "big.png"), str(tmp_path / "gray.png"), "--top", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.count("%") == 3 for line in lines)
    model, _ = predict.load_checkpoint(ckpt)
    expected = cv2.resize(big[:, :, ::-1], (32, 32), interpolation=cv2.INTER_AREA)
    got = predict.read_image(str(tmp_path / "big.png"), 32, 32, 3)
    np.testing.assert_array_equal(got, expected)


def test_predict_reports_bad_files_and_goes_on(tmp_path, monkeypatch, capsys):
    import cv2
    use_synthetic(monkeypatch)
    out = tmp_path / "out"
    simple_cnn.main(["--model", "simple", "--output-dir", str(out)] + FAST)
    ckpt = str(out / "cifar10_simple_final.h5")
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.zeros((32, 32, 3), np.uint8))
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    capsys.readouterr()
    code = predict.main([ckpt, str(tmp_path / "missing.png"), str(junk), str(good)])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.strip().startswith(str(good) + ": ")
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2
    assert "missing.png: no such file" in errors[0] and "junk.jpg: not an image" in errors[1]


def test_predict_wrong_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"garbage")
    assert predict.main([str(bad), "x.png"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "bad.h5" in err and "\n" not in err


class InterruptAt(keras.callbacks.Callback):
    """Acts like Ctrl-C at the start of the given epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_without_losing_or_repeating_epochs(tmp_path, monkeypatch):
    use_synthetic(monkeypatch)
    args = ["--model", "simple", "--epochs", "3", "--lr-drop-epoch", "1", "--lr-drop-factor", "0.1",
            "--verbose", "0"]
    simple_cnn.main(args + ["--output-dir", str(tmp_path / "straight")])
    straight = read_rows(tmp_path / "straight" / "cifar10_simple_history.csv")

    original = training.Run.callbacks
    monkeypatch.setattr(training.Run, "callbacks", lambda self, *own: original(self, InterruptAt(1), *own))
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        simple_cnn.main(args + ["--output-dir", str(out)])
    assert len(read_rows(out / "cifar10_simple_history.csv")) == 1
    monkeypatch.setattr(training.Run, "callbacks", original)
    simple_cnn.main(args + ["--output-dir", str(out), "--resume"])

    resumed = read_rows(out / "cifar10_simple_history.csv")
    assert [int(r["epoch"]) for r in resumed] == [0, 1, 2]
    assert [float(r["learning_rate"]) for r in resumed] == \
        pytest.approx([float(r["learning_rate"]) for r in straight])
    summary = json.loads((out / "cifar10_simple_summary.json").read_text())
    # Optimizer state came back: its step count covers all three epochs.
    steps_per_epoch = int(np.ceil(240 / 32))
    assert summary["optimizer_steps"] == 3 * steps_per_epoch
    assert summary["epochs_run"] == 3 and summary["epochs_this_session"] == 2


def test_normalisation_statistics():
    x = np.random.default_rng(0).integers(0, 256, (50, 32, 32, 3)).astype(np.uint8)
    layer = preprocessing.pixel_mean(x)
    np.testing.assert_allclose(preprocessing.statistics(layer)[0], x.mean(axis=0), rtol=1e-6)
    out = keras.ops.convert_to_numpy(layer(x.astype("float32")))
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(preprocessing.rescale()(np.full((1, 2, 2, 3), 255.0))), 1.0)
    layer = preprocessing.channel_mean([123.68, 116.779, 103.939])
    out = keras.ops.convert_to_numpy(layer(np.full((1, 2, 2, 3), 123.68, "float32")))
    np.testing.assert_allclose(out[..., 0], 0, atol=1e-4)
    # The statistics travel in the layer's config, hence in every checkpoint.
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(np.full((1, 2, 2, 3), 123.68, "float32"))), out)


def test_hyperparameters_come_from_the_top_block():
    names = [name for name, _, _ in cli.hyperparameters(simple_cnn.__file__)]
    assert names[:4] == ["MODEL", "DATASET", "EPOCHS", "BATCH_SIZE"]
    args = cli.parse_args(simple_cnn.__file__, "x", ["--epochs", "5", "--no-horizontal-flip"])
    assert args.epochs == 5 and args.horizontal_flip is False and args.batch_size == simple_cnn.BATCH_SIZE


@pytest.mark.parametrize("script", ["simple_cnn", "resnet_cifar", "resnet18_fashion_mnist", "vgg19_cifar",
                                    "allconv_cifar"])
def test_every_commented_constant_of_a_script_is_a_flag(script):
    """A hyperparameter the parser cannot read (an expression, say) would
    silently have no flag and no value in args: every commented upper-case
    constant of the top block must come through, with its value."""
    import ast
    import importlib
    module = importlib.import_module(script)
    with open(module.__file__, encoding="utf-8") as f:
        source = f.read()
    lines = source.splitlines()
    commented = [node.targets[0].id for node in ast.parse(source).body
                 if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                 and node.targets[0].id.isupper() and "  # " in lines[node.end_lineno - 1]]
    found = {name: value for name, value, _ in cli.hyperparameters(module.__file__)}
    assert commented and set(commented) == set(found)
    for name in commented:
        assert found[name] == getattr(module, name)


def test_help_lists_hyperparameters_with_defaults():
    result = subprocess.run([sys.executable, "simple_cnn.py", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for flag in ("--epochs", "--batch-size", "--model", "--data-dir", "--subset", "--seed",
                 "--output-dir", "--resume", "--val-split"):
        assert flag in result.stdout
    assert "passes over the training images (default: 20)" in " ".join(result.stdout.split())


def test_bad_data_dir_is_one_line(tmp_path):
    bad = tmp_path / "data" / "cifar-10-batches-py"
    bad.mkdir(parents=True)
    (bad / "test_batch").write_bytes(b"junk")
    env = dict(os.environ, HOME=str(tmp_path), TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "simple_cnn.py", "--data-dir", str(tmp_path / "data"),
                             "--epochs", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in result.stderr


def test_importing_a_script_trains_nothing(tmp_path):
    code = "import simple_cnn, os; print(callable(simple_cnn.build_model))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "True"
    assert "Epoch" not in result.stdout


def test_torch_backend_smoke(tmp_path, fake_cifar):
    pytest.importorskip("torch")
    root, _, _ = fake_cifar
    env = dict(os.environ, KERAS_BACKEND="torch", HOME=str(tmp_path))
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "simple_cnn.py", "--model", "deep_aug", "--data-dir", str(root),
                             "--subset", "256", "--epochs", "1", "--verbose", "2",
                             "--output-dir", str(out)], cwd=ROOT, capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "cifar10_deep_aug_summary.json").read_text())
    assert summary["backend"] == "torch"
    result = subprocess.run([sys.executable, "predict.py", str(out / "cifar10_deep_aug_final.h5"),
                             "--test-index", "0", "--data-dir", str(root)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("test image 0 (true: ")


def test_the_tools_read_a_built_in_set_from_the_folder_the_run_used(tmp_path, monkeypatch, capsys):
    """A checkpoint trained with --data-dir D is tested on D's copy (not a
    download into ~/.keras); with the test set nowhere, predict.py still
    classifies the image files it was given and exits 1."""
    import cv2
    import load_data
    use_synthetic(monkeypatch)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    out = tmp_path / "out"
    simple_cnn.main(["--model", "simple", "--output-dir", str(out), "--data-dir", str(data_dir)] + FAST)
    ckpt = str(out / "cifar10_simple_final.h5")
    asked = []
    real_load = load_data.load
    monkeypatch.setattr(load_data, "load", lambda name, data_dir=None, *a, **k: (asked.append(data_dir),
                                                                                 real_load(name, data_dir, *a, **k))[1])
    model, _ = predict.load_checkpoint(ckpt)
    predict.test_set(ckpt, model)
    assert asked == [str(data_dir)]

    def nowhere(*args, **kwargs):
        raise load_data.DataError("cifar-10-python.tar.gz: not found")
    monkeypatch.setattr(load_data, "load", nowhere)
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    capsys.readouterr()
    assert predict.main([ckpt, str(image), "--test-index", "0"]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{image}: ") and "not found" in captured.err
