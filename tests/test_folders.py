"""--dataset FOLDER: every script on a folder of real PNG images, one subfolder
per class; and each bad folder is one clear error naming the path."""

import json

import numpy as np
import pytest

import allconv_cifar
import load_data
import predict
import resnet18_fashion_mnist
import resnet_cifar
import simple_cnn
import training
import vgg19_cifar

CLASSES = {3: "cat", 5: "dog", 8: "ship"}  # CIFAR-10 label: the folder's name


@pytest.fixture(scope="module")
def real_test_images(tmp_path_factory):
    import os
    from conftest import REAL_DATA
    if not os.path.isfile(os.path.join(REAL_DATA, "cifar-10-python.tar.gz")):
        if os.environ.get("CI"):
            pytest.fail(f"real data sets not found at {REAL_DATA}")
        pytest.skip("real data sets not found")
    home = tmp_path_factory.mktemp("home")
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)  # the archive is extracted into this HOME's cache
    try:
        _, (x, y) = load_data.load_data(REAL_DATA)
    finally:
        os.environ["HOME"] = old
    return x, y.ravel()


def write_folder(root, x, y, per_class, start=0):
    import cv2
    for label, name in CLASSES.items():
        (root / name).mkdir(parents=True)
        for k, i in enumerate(np.flatnonzero(y == label)[start:start + per_class]):
            cv2.imwrite(str(root / name / f"{k}.png"), x[i][:, :, ::-1])  # OpenCV writes BGR


@pytest.fixture(scope="module")
def folder(real_test_images, tmp_path_factory):
    """train/ (16 images a class) and test/ (8 a class) of real CIFAR-10 PNGs."""
    x, y = real_test_images
    root = tmp_path_factory.mktemp("photos")
    write_folder(root / "train", x, y, 16)
    write_folder(root / "test", x, y, 8, start=16)
    return root


SCRIPTS = [
    (simple_cnn, ["--model", "deep_aug"], "deep_aug"),
    (resnet_cifar, ["--recipe", "fast", "--fast-epochs", "1", "--fast-batch-size", "16", "--depth", "8"], "ResNet8v1"),
    (vgg19_cifar, ["--config", "A"], "VGG11"),
    (allconv_cifar, [], "allconv"),
    (resnet18_fashion_mnist, ["--resize", "32"], "resnet18"),
]


@pytest.mark.parametrize("module,flags,model", SCRIPTS, ids=[s[2] for s in SCRIPTS])
def test_each_script_trains_on_a_folder_and_names_its_classes(module, flags, model, folder, tmp_path, capsys):
    out = tmp_path / "out"
    module.main(flags + ["--dataset", str(folder), "--epochs", "1", "--batch-size", "16", "--val-split", "0", "--verbose", "0",
                         "--output-dir", str(out)])
    summary = json.loads((out / f"{folder.name}_{model}_summary.json").read_text())
    assert summary["train_images"] == 48
    names, run = training.read_run(summary["files"]["final"])
    assert names == ["cat", "dog", "ship"] and run["dataset"] == str(folder)
    capsys.readouterr()
    assert predict.main([summary["files"]["final"], str(folder / "test" / "ship" / "0.png"), "--top", "3"]) == 0
    shown = capsys.readouterr().out
    assert all(name in shown for name in ("cat", "dog", "ship")) and "airplane" not in shown


def test_a_folder_without_test_holds_out_a_share_of_each_class(real_test_images, tmp_path):
    x, y = real_test_images
    write_folder(tmp_path / "data", x, y, 10)
    (x_train, y_train), (x_test, y_test), names = load_data.load_folder(str(tmp_path / "data"))
    assert names == ("cat", "dog", "ship")
    assert len(x_train) == 24 and len(x_test) == 6 and np.bincount(y_test.ravel()).tolist() == [2, 2, 2]
    assert len(set(y_train.ravel()[:6])) > 1  # shuffled, so --subset takes every class
    # The pixels are the images written, in RGB.
    first_cat = x[np.flatnonzero(y == 3)[0]]
    assert any(np.array_equal(img, first_cat) for img in np.concatenate([x_train, x_test]))


def test_size_and_grayscale_as_asked(folder, tmp_path):
    out = tmp_path / "out"
    simple_cnn.main(["--model", "simple", "--dataset", str(folder), "--image-size", "24", "--color", "grayscale",
                     "--epochs", "1", "--verbose", "0", "--output-dir", str(out)])
    model, _ = predict.load_checkpoint(str(out / f"{folder.name}_simple_final.h5"))
    assert tuple(model.inputs[0].shape[1:]) == (24, 24, 1)


@pytest.mark.parametrize("damage,match", [
    ("empty_class", r"dog: empty class folder"),
    ("one_class", r"1 class folder\(s\)"),
    ("not_an_image", r"notes.txt: not an image OpenCV can read"),
    ("missing_in_test", r"test: its classes differ .*\(ship in one only\)"),
])
def test_a_bad_folder_is_one_error_naming_the_path(damage, match, real_test_images, tmp_path):
    import shutil
    x, y = real_test_images
    root = tmp_path / "data"
    write_folder(root / "train", x, y, 4)
    write_folder(root / "test", x, y, 2, start=4)
    if damage == "empty_class":
        shutil.rmtree(root / "train" / "dog")
        (root / "train" / "dog").mkdir()
    elif damage == "one_class":
        for name in ("dog", "ship"):
            shutil.rmtree(root / "train" / name)
    elif damage == "not_an_image":
        (root / "train" / "cat" / "notes.txt").write_text("not a picture")
    else:
        shutil.rmtree(root / "test" / "ship")
    with pytest.raises(load_data.DataError, match=match) as error:
        load_data.load(str(root))
    assert "\n" not in str(error.value)


def test_dataset_that_is_neither_a_set_nor_a_folder_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        simple_cnn.main(["--dataset", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path)])
    assert "neither one of cifar10" in capsys.readouterr().err
