"""resnet_cifar.py and resnet18_fashion_mnist.py."""

import csv
import json

import numpy as np
import pytest

import keras

from cifarkit import cli

from cifarkit import preprocessing
import predict
import resnet18_fashion_mnist as R18
import resnet_cifar as R
from cifarkit import schedules
from cifarkit import training
from helpers import final_model_accuracy, synthetic_cifar


@pytest.mark.parametrize("version,depth,params", [
    (1, 20, 274_442), (1, 32, 470_218), (1, 44, 665_994), (1, 56, 861_770), (1, 110, 1_742_762),
    (2, 56, 1_673_738), (2, 110, 3_323_210), (2, 164, 4_972_682)])
def test_parameter_counts(version, depth, params):
    model = R.build_model(version, depth, augment=dict(width_shift_range=0.1, horizontal_flip=True))
    assert model.count_params() == params


@pytest.mark.parametrize("version,depth", [(1, 21), (1, 2), (2, 21), (3, 20)])
def test_bad_depth_is_a_clear_error(version, depth):
    with pytest.raises(cli.UsageError, match=r"depth must be|VERSION must be"):
        R.build_model(version, depth)


@pytest.mark.parametrize("version,depth", [(1, 8), (1, 20), (2, 11)])
def test_each_version_trains_a_step(version, depth):
    (x, y), _ = synthetic_cifar(64, 1)
    model = R.build_model(version, depth, preprocessing.pixel_mean(x), dict(width_shift_range=0.1))
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, training.one_hot(y, 10))
    assert np.isfinite(loss)
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))


def test_seed_schedule_at_its_boundaries():
    schedule = schedules.step_schedule(1e-3, R.RECIPES["seed"]["lr_steps"])
    # As the Keras example: `epoch > 80` (0-based) multiplies by 0.1, and so on.
    expected = {0: 1e-3, 80: 1e-3, 81: 1e-4, 120: 1e-4, 121: 1e-5, 160: 1e-5, 161: 1e-6,
                180: 1e-6, 181: 0.5e-6, 199: 0.5e-6}
    for epoch, lr in expected.items():
        assert schedule(epoch) == pytest.approx(lr), epoch


def test_fast_schedule():
    schedule = schedules.warmup_cosine(0.1, 40, 2)
    assert schedule(0) == pytest.approx(0.05) and schedule(1) == pytest.approx(0.1)
    assert schedule(2) == pytest.approx(0.1)
    assert schedule(21) == pytest.approx(0.05)
    assert 0 < schedule(39) < 0.001
    values = [schedule(e) for e in range(2, 40)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_resnet_script_end_to_end(tmp_path, monkeypatch):
    from helpers import use_synthetic
    use_synthetic(monkeypatch, 128, 64)
    out = tmp_path / "out"
    R.main(["--recipe", "fast", "--epochs", "2", "--batch-size", "32", "--depth", "8",
            "--verbose", "0", "--output-dir", str(out)])
    summary = json.loads((out / "cifar10_ResNet8v1_summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["validation"].startswith("test set")
    assert summary["best_checkpoints"][0].endswith("cifar10_ResNet8v1_model.001.h5")
    # Per-pixel mean subtraction travels in the checkpoint.
    model = keras.models.load_model(summary["files"]["final"], compile=False)
    assert preprocessing.statistics(model.get_layer("subtract_pixel_mean"))[0].shape == (32, 32, 3)


def resnet18_expected_params(in_channels, stem_kernel):
    conv = lambda k, cin, cout: k * k * cin * cout + cout  # noqa: E731 (biases, as the seed)
    bn = lambda c: 4 * c  # noqa: E731 (gamma, beta, moving mean and variance)
    total = conv(stem_kernel, in_channels, 64) + bn(64)
    cin = 64
    for filters in R18.STAGES:
        for block in range(2):
            total += conv(3, cin, filters) + conv(3, filters, filters) + 2 * bn(filters)
            if cin != filters:
                total += conv(1, cin, filters)
            cin = filters
    return total + 512 * 10 + 10


def test_resnet18_parameter_counts():
    assert R18.build_model("imagenet", (28, 28, 1)).count_params() == resnet18_expected_params(1, 7) == 11_186_186
    assert R18.build_model("cifar", (32, 32, 3)).count_params() == resnet18_expected_params(3, 3)


def test_resnet18_resizes_inside_the_model():
    model = R18.build_model("imagenet", (28, 28, 1), resize=96)
    assert model.get_layer("resize").output.shape[1:3] == (96, 96)
    assert model.inputs[0].shape[1:] == (28, 28, 1)


def test_resnet18_defaults_decay_the_rate_and_mirror(tmp_path, monkeypatch):
    """The default recipe: a cosine from LEARNING_RATE epoch by epoch and a
    random mirror in the model; `--schedule constant --no-horizontal-flip`
    is the seed's (constant rate, no augmentation layer)."""
    from cifarkit import augment, checkpoints
    from helpers import use_synthetic
    use_synthetic(monkeypatch, 32, 16)
    seen = []
    monkeypatch.setattr(checkpoints, "save_h5", lambda model, *a, **k: seen.append(model))
    common = ["--dataset", "cifar10", "--resize", "32", "--epochs", "3", "--batch-size", "16", "--verbose", "0"]
    R18.main(common + ["--output-dir", str(tmp_path / "default")])
    with open(tmp_path / "default" / "cifar10_resnet18_history.csv", newline="") as f:
        rates = [float(r["learning_rate"]) for r in csv.DictReader(f)]
    R18.main(common + ["--schedule", "constant", "--no-horizontal-flip", "--output-dir", str(tmp_path / "seed")])
    cosine = schedules.warmup_cosine(R18.LEARNING_RATE, 3, 0)
    assert rates == pytest.approx([cosine(e) for e in range(3)])
    assert rates[0] == pytest.approx(R18.LEARNING_RATE) and rates[2] < R18.LEARNING_RATE / 3
    default_model, seed_model = seen[0], seen[-1]
    mirrors = [layer for layer in default_model.layers if isinstance(layer, augment.RandomAffine)]
    assert len(mirrors) == 1 and mirrors[0].horizontal_flip and not mirrors[0].resamples
    assert not any(isinstance(layer, augment.RandomAffine) for layer in seed_model.layers)
    optimizer_rate = float(keras.ops.convert_to_numpy(seed_model.optimizer.learning_rate))
    assert optimizer_rate == pytest.approx(R18.LEARNING_RATE)


def test_resnet18_on_real_fashion_mnist(short_test_set, tmp_path, capsys):
    """End to end on a 300-image real subset, then predict.py on its checkpoint."""
    real_data = short_test_set
    import cv2
    import load_data
    out = tmp_path / "out"
    R18.main(["--data-dir", real_data, "--subset", "300", "--epochs", "1", "--resize", "48",
              "--val-split", "0.2", "--verbose", "0", "--output-dir", str(out)])
    summary = json.loads((out / "fashion_mnist_resnet18_summary.json").read_text())
    assert summary["train_images"] == 240
    _, (x_test, y_test), _ = load_data.load("fashion_mnist", real_data)
    assert summary["test_accuracy"] == pytest.approx(final_model_accuracy(summary, x_test, y_test), abs=1e-6)
    ckpt = str(out / "fashion_mnist_resnet18_final.h5")
    model, names = predict.load_checkpoint(ckpt)
    assert names == list(load_data.FASHION_MNIST_CLASSES)
    _, (x_test, _) = load_data.load_fashion_mnist(real_data)
    png = str(tmp_path / "item.png")
    cv2.imwrite(png, x_test[0])
    expected = names[int(model.predict(x_test[:1, :, :, None], verbose=0).argmax())]
    capsys.readouterr()
    assert predict.main([ckpt, png, "--test-index", "0", "--data-dir", real_data, "--top", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"{png}: {expected} ")
    assert lines[1].startswith("test image 0 (true: ") and f": {expected} " in lines[1]
