"""inspect_checkpoint.py on small trained models and the real test sets."""

import importlib.util
import json

import numpy as np
import pytest

import keras

import inspect_checkpoint as I
import load_data
import simple_cnn
from cifarkit import preprocessing
from cifarkit import checkpoints


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A simple_cnn trained for one epoch on 512 real images: (output folder, summary)."""
    import os
    from conftest import REAL_DATA
    if not os.path.isfile(os.path.join(REAL_DATA, "cifar-10-python.tar.gz")):
        pytest.skip("real data sets not found")  # the real_data fixture fails instead, in CI
    out = tmp_path_factory.mktemp("inspect")
    simple_cnn.main(["--model", "simple", "--subset", "512", "--epochs", "1", "--val-split", "0",
                     "--data-dir", REAL_DATA, "--verbose", "0", "--output-dir", str(out)])
    return out, json.loads((out / "cifar10_simple_summary.json").read_text())


def run_json(capsys, *argv):
    assert I.main(list(argv) + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_confusion_matrix_and_scores_match_the_models_own_predictions(trained, real_data, capsys):
    out, summary = trained
    path = str(out / "cifar10_simple_final.h5")
    report = run_json(capsys, path, "--data-dir", real_data)
    _, (x_test, y_test) = load_data.load_data(real_data)
    predicted = keras.models.load_model(path, compile=False).predict(x_test, verbose=0).argmax(axis=1)
    y = y_test.ravel()
    matrix = np.array(report["test"]["confusion_matrix"])
    for true in range(10):
        for guess in range(10):
            assert matrix[true, guess] == np.sum((y == true) & (predicted == guess))
    assert report["test"]["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-4)
    assert report["test"]["loss"] == pytest.approx(summary["test_loss"], rel=1e-3)
    cat = 3
    assert report["test"]["recall"][cat] == pytest.approx(np.mean(predicted[y == cat] == cat))
    assert report["test"]["precision"][cat] == pytest.approx(np.mean(y[predicted == cat] == cat))
    assert report["class_names"] == list(load_data.CIFAR10_CLASSES) and report["dataset"] == "cifar10"
    assert report["run"]["script"] and report["run"]["epoch"] == 1
    for key in ("confusion_png", "mistakes_png"):
        import cv2
        image = cv2.imread(report["files"][key])
        assert image is not None and image.shape[0] > 100, key


def test_most_confident_mistakes_come_first():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    y = np.array([1, 1, 1, 0])  # wrong: 0 (0.9 sure), 2 (0.6), 3 (0.7)
    assert I.confident_mistakes(probabilities, y, 2).tolist() == [0, 3]


def test_compare_and_the_text_report(trained, real_data, capsys):
    out, summary = trained
    best = summary["best_checkpoints"][-1]
    assert I.main([str(out / "cifar10_simple_final.h5"), "--compare", best, "--data-dir", real_data]) == 0
    text = capsys.readouterr().out
    assert "precision" in text and "recall A" in text and "B - A" in text
    assert all(name in text for name in load_data.CIFAR10_CLASSES)


def test_fashion_mnist_checkpoint_is_inspected_on_fashion_mnist(tmp_path, real_data, capsys):
    model = keras.Sequential([keras.Input((28, 28, 1)), preprocessing.rescale(), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    path = str(tmp_path / "fm.h5")
    checkpoints.save_h5(model, path, load_data.FASHION_MNIST_CLASSES, {"dataset": "fashion_mnist"})
    report = run_json(capsys, path, "--data-dir", real_data, "--output-dir", str(tmp_path / "png"))
    assert report["dataset"] == "fashion_mnist" and report["test"]["images"] == 10000
    assert report["class_names"][0] == load_data.FASHION_MNIST_CLASSES[0]
    assert (tmp_path / "png" / "fm_confusion.png").is_file()


@pytest.mark.skipif(not importlib.util.find_spec("tensorflow"), reason="export needs TensorFlow")
def test_export_for_serving_gives_the_same_predictions(trained, real_data, tmp_path, capsys):
    out, _ = trained
    report = run_json(capsys, str(out / "cifar10_simple_final.h5"), "--data-dir", real_data,
                      "--export", str(tmp_path / "served"))
    assert (tmp_path / "served" / "saved_model.pb").is_file()
    assert report["export"]["max_difference"] < 1e-5


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert I.main([str(tmp_path / "nothing.h5")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nothing.h5" in err and "\n" not in err
