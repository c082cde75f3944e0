"""Real folders and the checkpoints trained on them (issue 20).

A folder with litter (Thumbs.db, desktop.ini, .DS_Store, a README) trains, and
what was left alone is counted; an image OpenCV cannot decode stops the load
before training, naming it; a folder-trained checkpoint knows its data, so
inspect_checkpoint.py and predict.py --test-index use that folder's own test
split (the run's own test accuracy and class names), find a folder that moved
with --dataset or --data-dir, and say in one line what does not fit.

Synthetic PNG/JPEG folders of a few dozen small images (each class its own
colour, every image its own size): no real data needed, nothing downloaded.
"""

import json
import shutil

import numpy as np
import pytest

import inspect_checkpoint
import load_data
import predict
import simple_cnn
from cifarkit import folders
from cifarkit import checkpoints

NAMES_3 = ("bee", "cat", "owl")
NAMES_10 = ("ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen", "owl", "yak")
SIZE = 12  # --image-size: small, so each training takes seconds


def write_images(folder, n, colour, rng):
    import cv2
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        h, w = rng.integers(14, 30, size=2)
        image = np.clip(colour + rng.integers(-25, 26, size=(h, w, 3)), 0, 255).astype(np.uint8)
        assert cv2.imwrite(str(folder / f"img{k:02d}.{'png' if k % 3 else 'jpg'}"), image)


def make_folder(root, names, layout, per_class, seed=0):
    """`layout` "split" (train/ and test/, per_class = (train, test)) or
    "flat" (one subfolder per class, per_class images in each), with litter.
    Returns how many entries training must leave alone and count."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(20, 236, size=(len(names), 3))
    if layout == "split":
        for name, colour in zip(names, colours):
            write_images(root / "train" / name, per_class[0], colour, rng)
            write_images(root / "test" / name, per_class[1], colour, rng)
        class_dirs, other_dirs = [root / "train" / n for n in names], [root / "test" / names[0]]
    else:
        for name, colour in zip(names, colours):
            write_images(root / name, per_class, colour, rng)
        class_dirs, other_dirs = [root / n for n in names], [root / names[0]]
    # Counted: a README beside the classes, a Thumbs.db in every class, a desktop.ini, a notes file.
    (root / "README.md").write_text("where these photos come from\n")
    for d in class_dirs:
        (d / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(60))
    (other_dirs[0] / "desktop.ini").write_text("[.ShellClassInfo]\n")
    (class_dirs[-1] / "notes.txt").write_text("not a picture")
    # Not even counted: hidden files and folders (one of them full of images).
    (root / ".DS_Store").write_bytes(bytes(32))
    (class_dirs[0] / ".DS_Store").write_bytes(bytes(32))
    write_images(root / ".thumbnails", 2, colours[0], rng)
    return 1 + len(class_dirs) + 1 + 1


# Colour and grayscale, 3 classes and exactly 10 (the count that used to be
# mistaken for CIFAR-10 or Fashion-MNIST), a test/ folder and a held-out share.
CASES = {
    "rgb-3-test_folder": ("rgb", NAMES_3, "split", (12, 4)),
    "rgb-10-held_out": ("rgb", NAMES_10, "flat", 5),
    "gray-3-held_out": ("grayscale", NAMES_3, "flat", 10),
    "gray-10-test_folder": ("grayscale", NAMES_10, "split", (4, 2)),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each case trained for one epoch by simple_cnn.py: {case: (folder, summary, stdout, litter)}."""
    import contextlib
    import io
    done = {}
    for case, (color, names, layout, per_class) in CASES.items():
        base = tmp_path_factory.mktemp(case)
        folder = base / "photos"
        litter = make_folder(folder, names, layout, per_class)
        out = base / "out"
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            simple_cnn.main(["--model", "simple", "--dataset", str(folder), "--image-size", str(SIZE),
                             "--color", color, "--epochs", "1", "--batch-size", "16", "--verbose", "0",
                             "--output-dir", str(out)])
        summary = json.loads((out / "photos_simple_summary.json").read_text())
        done[case] = (folder, summary, printed.getvalue(), litter)
    return done


def report_of(capsys, *argv):
    capsys.readouterr()
    assert inspect_checkpoint.main(list(argv) + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def one_line_error(capsys, code):
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""  # no figure, no report
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err
    return captured.err


# --------------------------------------------------------------------------
# Real folders: litter and undecodable images
# --------------------------------------------------------------------------

def test_a_folder_with_litter_trains_and_counts_what_it_left_alone(runs):
    """The old reader stopped at the first Thumbs.db ("not an image OpenCV can read")."""
    for case, (folder, summary, printed, litter) in runs.items():
        data = summary["data"]
        assert data["files_left_alone"] == litter, case
        assert "README.md" in data["left_alone"] and not any(".DS_Store" in p or ".thumbnails" in p
                                                             for p in data["left_alone"])
        line = next(text for text in printed.splitlines() if text.startswith(str(folder)))
        assert f"{litter} other files left alone (" in line and "Thumbs.db x" in line, line
        assert data["class_names"] == list(CASES[case][1]) and summary["epochs_run"] == 1


def test_an_undecodable_image_stops_the_load_naming_it_before_training(tmp_path, capsys):
    """Streamed, the old reader found a broken image only when training reached it (hours in)."""
    make_folder(tmp_path / "photos", NAMES_3, "flat", 5)
    (tmp_path / "photos" / "cat" / "broken.png").write_bytes(b"\x89PNG garbage, not an image" * 3)
    (tmp_path / "photos" / "owl" / "empty.jpg").write_bytes(b"")
    for stream in (True, False):
        with pytest.raises(load_data.DataError, match=r"cat/broken.png: not an image OpenCV can read "
                                                      r"\(and 1 more: owl/empty.jpg\)") as error:
            load_data.load_folder(str(tmp_path / "photos"), SIZE, stream=stream)
        assert "\n" not in str(error.value)
    # The same through a script: one line, exit status 1, nothing trained or written.
    from cifarkit import cli
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        cli.run(lambda: simple_cnn.main(["--model", "simple", "--dataset", str(tmp_path / "photos"), "--stream",
                                         "--image-size", str(SIZE), "--epochs", "1", "--verbose", "0",
                                         "--output-dir", str(out)]))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 1 and len(err) == 1 and "broken.png: not an image OpenCV can read" in err[0]
    assert not out.exists() or not any(p.suffix in (".h5", ".csv") for p in out.rglob("*"))


# --------------------------------------------------------------------------
# A checkpoint knows its data
# --------------------------------------------------------------------------

@pytest.mark.parametrize("case", list(CASES))
def test_inspect_tests_a_folder_checkpoint_on_its_own_test_split(case, runs, capsys):
    """The old inspector fell back by input shape: CIFAR-10 or Fashion-MNIST (downloading it)."""
    folder, summary, _, _ = runs[case]
    color, names, layout, _ = CASES[case]
    final = summary["files"]["final"]
    report = report_of(capsys, final)
    assert report["test"]["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)
    assert report["test"]["loss"] == pytest.approx(summary["test_loss"], rel=1e-4)
    assert report["dataset"] == str(folder) and report["class_names"] == list(names)
    assert len(report["test"]["confusion_matrix"]) == len(names)
    # What the checkpoint stores of its data.
    stored_names, run = checkpoints.read_run(final)
    assert stored_names == list(names) and run["dataset"] == str(folder)
    data = run["data"]
    assert data["test_split"] == ("test/" if layout == "split" else "held out")
    assert data["color"] == color and data["image_shape"] == [SIZE, SIZE, 3 if color == "rgb" else 1]
    assert data["test_images"] == report["test"]["images"] and data["class_names"] == list(names)


def test_predict_test_index_classifies_the_folders_own_test_image(runs, capsys):
    """The old predict.py read CIFAR-10's or Fashion-MNIST's test image I."""
    folder, summary, _, _ = runs["gray-3-held_out"]
    final = summary["files"]["final"]
    _, (x, y), _ = load_data.load_folder(str(folder), SIZE, "grayscale")
    model, names = predict.load_checkpoint(final)
    expected = model.predict(x, verbose=0).argmax(axis=1)
    capsys.readouterr()
    assert predict.main([final, "--test-index", "0", "--test-index", str(len(y) - 1), "--top", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    for line, i in zip(lines, (0, len(y) - 1)):
        assert line.startswith(f"test image {i} (true: {names[int(y[i, 0])]}): {names[expected[i]]} "), line
    assert len(lines) == 2


def test_a_moved_folder_is_found_with_dataset_or_data_dir(runs, tmp_path, capsys):
    folder, summary, _, _ = runs["rgb-10-held_out"]
    final = summary["files"]["final"]
    moved = tmp_path / "elsewhere" / "photos"
    shutil.move(str(folder), str(moved))
    try:
        err = one_line_error(capsys, inspect_checkpoint.main([final]))
        assert str(folder) in err and "--dataset" in err
        one_line_error(capsys, predict.main([final, "--test-index", "0"]))
        for flags in (["--dataset", str(moved)], ["--data-dir", str(moved.parent)]):
            report = report_of(capsys, final, *flags)
            assert report["dataset"] == str(moved) and report["class_names"] == list(NAMES_10)
            assert report["test"]["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)
        assert predict.main([final, "--test-index", "3", "--dataset", str(moved)]) == 0
        assert "(true: " in capsys.readouterr().out
    finally:
        shutil.move(str(moved), str(folder))


def test_a_large_folders_test_split_is_streamed(runs, monkeypatch, capsys):
    folder, summary, _, _ = runs["rgb-3-test_folder"]
    reads = []
    original = load_data.ImageFiles.read
    monkeypatch.setattr(load_data.ImageFiles, "read", lambda self, i: reads.append(len(i)) or original(self, i))
    monkeypatch.setattr(folders, "memory_available", lambda: 1000)  # nothing fits
    report = report_of(capsys, summary["files"]["final"], "--output-dir", str(folder.parent / "png"))
    assert report["test"]["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)
    assert reads and sum(reads) >= report["test"]["images"]  # read from disk batch by batch


def test_an_older_folder_checkpoint_without_data_metadata_still_uses_its_folder(runs, tmp_path, capsys):
    folder, summary, _, _ = runs["gray-10-test_folder"]
    old = str(tmp_path / "old.h5")
    shutil.copy(summary["files"]["final"], old)
    _, run = checkpoints.read_run(old)
    checkpoints.write_run(old, {k: v for k, v in run.items() if k != "data"})
    report = report_of(capsys, old)
    assert report["dataset"] == str(folder) and report["class_names"] == list(NAMES_10)
    assert report["test"]["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)


def renamed_class(folder, tmp_path):
    copy = tmp_path / "renamed"
    shutil.copytree(folder, copy)
    for part in ("train", "test"):
        (copy / part / "owl").rename(copy / part / "emu")
    return copy


def extra_class(folder, tmp_path):
    copy = tmp_path / "extra"
    shutil.copytree(folder, copy)
    for part in ("train", "test"):
        shutil.copytree(copy / part / "owl", copy / part / "pig")
    return copy


@pytest.mark.parametrize("make,expected", [
    (renamed_class, r"renamed: its classes are not the checkpoint's \(emu not among the checkpoint's; "
                    r"the checkpoint's owl missing\)"),
    (extra_class, r"extra: 4 classes \(bee, cat, owl, pig\), but the checkpoint predicts 3"),
    (lambda folder, tmp_path: "cifar10", r"cifar10: its images are 32x32x3, but the checkpoint takes 12x12x3"),
    (lambda folder, tmp_path: "fashion_mnist", r"fashion_mnist: its images are 28x28x1, but the checkpoint "
                                               r"takes 12x12x3"),
], ids=["class_names", "class_count", "cifar10_shape", "fashion_shape"])
def test_a_data_set_that_does_not_fit_the_checkpoint_is_one_line(make, expected, runs, tmp_path, capsys):
    import re
    folder, summary, _, _ = runs["rgb-3-test_folder"]
    other = str(make(folder, tmp_path))
    capsys.readouterr()
    assert re.search(expected, one_line_error(capsys, inspect_checkpoint.main(
        [summary["files"]["final"], "--dataset", other])))
    assert re.search(expected, one_line_error(capsys, predict.main(
        [summary["files"]["final"], "--test-index", "0", "--dataset", other])))


def test_resume_takes_the_folder_however_spelled_and_refuses_a_changed_test_split(tmp_path, monkeypatch):
    """--resume compares the data, not how its path was typed: the same
    folder given with a trailing slash or relatively resumes; images added
    to a class draw the held-out split again (the model has trained on some
    of the new test images), and that is refused, not a contaminated figure."""
    from cifarkit.cli import UsageError
    folder = tmp_path / "photos"
    make_folder(folder, NAMES_3, "flat", 10)
    args = ["--model", "simple", "--image-size", str(SIZE), "--batch-size", "16", "--verbose", "0",
            "--output-dir", str(tmp_path / "out")]
    assert simple_cnn.main(args + ["--dataset", str(folder), "--epochs", "1"]) == 0
    monkeypatch.chdir(tmp_path)
    assert simple_cnn.main(args + ["--dataset", "photos/", "--epochs", "2", "--resume"]) == 0
    shutil.move(str(folder), str(tmp_path / "moved"))  # the same files elsewhere: resumes too
    assert simple_cnn.main(args + ["--dataset", "moved", "--epochs", "3", "--resume"]) == 0
    shutil.move(str(tmp_path / "moved"), str(folder))
    import cv2
    before = folders.FolderSplit(str(folder)).test_digest()
    for k in range(3):  # 13 bees: 3 held out, not 2
        assert cv2.imwrite(str(folder / "bee" / f"new{k}.png"), np.full((20, 20, 3), 90, np.uint8))
    assert folders.FolderSplit(str(folder)).test_digest() != before  # the split is drawn again
    with pytest.raises(UsageError, match=r"photos: its test split is not the one the run .* was made with "
                                         r"\(6 test images then, 7 now"):
        simple_cnn.main(args + ["--dataset", str(folder), "--epochs", "4", "--resume"])
