"""Where features meet: every script, on each built-in data set it claims and
on a folder (in memory and streamed), trains one epoch, resumes for a second,
and its final checkpoint is classified by predict.py and inspected by
inspect_checkpoint.py on the run's own test set, with the run's own figure.

Tiny synthetic data sets and folders, the smallest model of each script: a
seam (a data set a script cannot take, a checkpoint the tools cannot place,
a resume that loses an epoch) fails here in seconds."""

import json

import numpy as np
import pytest

import airbench_cifar
import allconv_cifar
import inspect_checkpoint
import load_data
import predict
import resnet18_fashion_mnist
import resnet_cifar
import simple_cnn
from cifarkit import streaming
import vgg19_cifar
from helpers import use_synthetic

BUILT_IN = ("cifar10", "cifar100", "cifar100_coarse", "fashion_mnist")
SCRIPTS = {  # module, flags for its smallest model, the built-in data sets it claims
    "simple_cnn": (simple_cnn, ["--model", "simple"], BUILT_IN),
    "resnet_cifar": (resnet_cifar, ["--depth", "8", "--recipe", "fast"], BUILT_IN),
    "vgg19_cifar": (vgg19_cifar, ["--config", "A"], BUILT_IN[:3]),  # needs 32x32 images
    "allconv_cifar": (allconv_cifar, [], BUILT_IN),
    "resnet18_fashion_mnist": (resnet18_fashion_mnist, ["--resize", "32"], BUILT_IN),
    "airbench_cifar": (airbench_cifar, ["--widths", "(8, 8, 8)"], BUILT_IN),
}
CASES = [(script, data) for script, (_, _, sets) in SCRIPTS.items() for data in sets + ("folder", "streamed")]
CLASSES = ("bee", "cat", "owl")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three classes of 16 small PNGs each (a colour per class), and a Thumbs.db."""
    import cv2
    root = tmp_path_factory.mktemp("photos") / "photos"
    rng = np.random.default_rng(0)
    for name, colour in zip(CLASSES, rng.integers(30, 226, size=(len(CLASSES), 3))):
        (root / name).mkdir(parents=True)
        for k in range(16):
            image = np.clip(colour + rng.integers(-20, 21, size=(32, 32, 3)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / name / f"{k:02d}.png"), image)
    (root / "cat" / "Thumbs.db").write_bytes(bytes(64))
    return root


@pytest.mark.parametrize("script,data", CASES, ids=[f"{s}-{d}" for s, d in CASES])
def test_train_resume_predict_inspect(script, data, folder, small_sets, tmp_path, monkeypatch, capsys):
    use_synthetic(monkeypatch, 64, 32)  # cifar10 (small_sets gives the other built-in sets)
    module, flags, _ = SCRIPTS[script]
    out = tmp_path / "out"
    dataset = str(folder) if data in ("folder", "streamed") else data
    argv = flags + ["--dataset", dataset, "--batch-size", "16", "--verbose", "0", "--output-dir", str(out)]
    if data == "streamed":
        argv.append("--stream")
    module.main(argv + ["--epochs", "1"])
    shuffled_from = []  # the epoch a streamed training set's shuffling starts at
    original = streaming.FileBatches.__init__

    def spy(self, images, targets, batch_size, shuffle=False, seed=0, workers=2, epoch=0):
        if shuffle:
            shuffled_from.append(epoch)
        original(self, images, targets, batch_size, shuffle, seed, workers, epoch)
    monkeypatch.setattr(streaming.FileBatches, "__init__", spy)
    own = airbench_cifar.AirbenchBatches.__init__  # airbench's own batches, in memory or streamed

    def spy_own(self, *args, epoch=0, **kwargs):
        shuffled_from.append(epoch)
        own(self, *args, epoch=epoch, **kwargs)
    monkeypatch.setattr(airbench_cifar.AirbenchBatches, "__init__", spy_own)
    module.main(argv + ["--epochs", "2", "--resume"])  # a finished run continues for one more epoch
    assert shuffled_from == ([1] if data == "streamed" or module is airbench_cifar else [])  # epoch 2's order
    (path,) = out.glob("*_summary.json")
    summary = json.loads(path.read_text())
    assert summary["epochs_run"] == 2 and summary["epochs_this_session"] == 1
    final = summary["files"]["final"]
    names = list(CLASSES) if data in ("folder", "streamed") else None

    capsys.readouterr()
    assert inspect_checkpoint.main([final, "--json", "--output-dir", str(tmp_path / "inspect")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["test"]["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)
    if names:
        assert report["class_names"] == names

    assert predict.main([final, "--test-index", "0", "--top", "1"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    _, (_, y_test), shown = load_data.load(dataset, image_size=32) if data in BUILT_IN else \
        load_data.load(str(folder), image_size=32)
    assert line.startswith(f"test image 0 (true: {shown[int(np.ravel(y_test)[0])]}): "), line
