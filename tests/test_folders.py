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
from cifarkit import preprocessing
from cifarkit import folders
from cifarkit import checkpoints
import vgg19_cifar
from helpers import final_model_accuracy

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
    (resnet_cifar, ["--recipe", "fast", "--epochs", "1", "--batch-size", "16", "--depth", "8"], "ResNet8v1"),
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
    names, run = checkpoints.read_run(summary["files"]["final"])
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
    ("undecodable", r"cat/broken.png: not an image OpenCV can read; remove it"),
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
    elif damage == "undecodable":  # an image by its name; other files (notes.txt) are left alone
        (root / "train" / "cat" / "broken.png").write_bytes(b"not a picture")
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


# --------------------------------------------------------------------------
# Folders larger than memory: streamed from disk
# --------------------------------------------------------------------------

@pytest.fixture
def reads(monkeypatch):
    """Every ImageFiles.read: how many images each call asked for."""
    sizes = []
    original = load_data.ImageFiles.read

    def read(self, indices):
        sizes.append(len(indices))
        return original(self, indices)
    monkeypatch.setattr(load_data.ImageFiles, "read", read)
    return sizes


def test_a_streamed_folder_reads_nothing_until_asked_then_the_same_pixels(folder, reads):
    (x_mem, y_mem), (xt_mem, _), names = load_data.load_folder(str(folder))
    reads.clear()
    (x, y), (xt, yt), streamed_names = load_data.load_folder(str(folder), stream=True)
    assert isinstance(x, load_data.ImageFiles) and reads == []  # nothing read yet
    assert names == streamed_names and x.shape == x_mem.shape and np.array_equal(y, y_mem)
    assert isinstance(x[:10], load_data.ImageFiles) and len(x[-5:]) == 5 and reads == []
    np.testing.assert_array_equal(np.concatenate(list(folders.chunks(x, 5))), x_mem)
    assert max(reads) == 5  # a pass holds one chunk at a time
    np.testing.assert_allclose(folders.pixel_mean(x), x_mem.astype("float64").mean(axis=0))
    np.testing.assert_array_equal(xt.read(range(len(xt))), xt_mem)


def test_file_batches_cover_every_image_once_an_epoch_in_a_new_order(folder, reads):
    from cifarkit import streaming
    (x, y), _, _ = load_data.load_folder(str(folder), stream=True)
    targets = np.arange(len(x))  # each target names its image
    batches = streaming.FileBatches(x, targets, batch_size=10, shuffle=True, seed=1)
    assert len(batches) == 5  # 48 images: four of 10, one of 8

    def epoch():
        seen = [batches[i] for i in range(len(batches))]
        for images, t in seen:
            np.testing.assert_array_equal(images, x.read(t))
        return np.concatenate([t for _, t in seen])
    first = epoch()
    batches.on_epoch_end()
    second = epoch()
    assert sorted(first) == sorted(second) == list(range(48))
    assert list(first) != list(second)
    assert max(reads) <= 10


def test_training_streams_a_folder_and_takes_its_mean_in_one_pass(folder, reads, tmp_path, monkeypatch):
    """ResNet (per-pixel mean inside the model) on a streamed folder: the mean
    is the folder's, the run is a normal run, and no read holds the training set."""
    (x_mem, _), (x_test, y_test), _ = load_data.load_folder(str(folder))
    reads.clear()
    monkeypatch.setattr(folders, "CHUNK", 20)
    out = tmp_path / "out"
    resnet_cifar.main(["--dataset", str(folder), "--stream", "--recipe", "fast", "--epochs", "2",
                       "--batch-size", "16", "--depth", "8", "--val-split", "0", "--verbose", "0",
                       "--output-dir", str(out)])
    summary = json.loads((out / f"{folder.name}_ResNet8v1_summary.json").read_text())
    assert summary["train_images"] == 48 and summary["epochs_run"] == 2
    assert summary["test_accuracy"] == pytest.approx(final_model_accuracy(summary, x_test, y_test), abs=1e-6)
    model, names = predict.load_checkpoint(summary["files"]["final"])
    assert names == ["cat", "dog", "ship"]
    mean, _ = preprocessing.statistics(model.get_layer("subtract_pixel_mean"))
    np.testing.assert_allclose(mean, x_mem.astype("float64").mean(axis=0), rtol=1e-5)
    assert max(reads) < 48 and sum(reads) >= 3 * 48  # the mean pass, then two epochs of batches


def test_a_folder_too_big_for_free_memory_is_streamed(folder, monkeypatch, capsys):
    monkeypatch.setattr(folders, "memory_available", lambda: 100_000)  # 72 images of 3 KiB need 221 KB
    (x, _), (xt, _), _ = load_data.load_folder(str(folder))
    assert isinstance(x, load_data.ImageFiles) and isinstance(xt, load_data.ImageFiles)
    assert "streaming them from disk" in capsys.readouterr().out
    monkeypatch.setattr(folders, "memory_available", lambda: 10 ** 12)
    (x, _), _, _ = load_data.load_folder(str(folder))
    assert isinstance(x, np.ndarray)


def test_stream_is_for_folders_only(capsys):
    with pytest.raises(SystemExit) as e:
        simple_cnn.main(["--dataset", "cifar10", "--stream"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--stream" in err[0]


def _with_exif_orientation(jpeg, orientation):
    """A JPEG's bytes with an EXIF block that holds only the orientation tag
    (0x0112), as a phone writes it: the pixels stay stored unrotated."""
    import struct
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) \
        + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def test_predict_reads_a_phone_photo_as_training_does(tmp_path):
    """A JPEG tagged 'rotate 90 degrees' (almost every phone photo) is turned
    upright by the reader training and the inspector use; predict.py read it
    sideways and scored a folder the inspector found 100% right at chance."""
    import cv2
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :20] = (0, 0, 255)  # left half red (BGR), right half black
    ok, jpeg = cv2.imencode(".jpg", wide, [cv2.IMWRITE_JPEG_QUALITY, 100])
    path = tmp_path / "phone.jpg"
    path.write_bytes(_with_exif_orientation(jpeg.tobytes(), 6))  # 6: rotate 90 clockwise to view
    trained = folders.read_image_file(str(path), 32, 3)
    np.testing.assert_array_equal(predict.read_image(str(path), 32, 32, 3), trained)
    # upright, the red half is on top: the tag was applied, not ignored
    assert trained[:12, :, 0].mean() > 200 and trained[20:, :, 0].mean() < 50
