"""Classify images with a checkpoint of the collection.

    python predict.py CHECKPOINT IMAGE [IMAGE ...] [--top K]
    python predict.py CHECKPOINT --test-index I [--dataset NAME_OR_FOLDER] [--data-dir DIR]

Images of any size and any format OpenCV reads: BGR is converted to RGB,
colour or grayscale to what the model takes, and the image is resized with
area interpolation to the model's input size. Normalisation is inside the
checkpoint, so raw pixels go in. An unreadable file is reported on one line
and the others are still classified; the exit status is then 1.

`--test-index I` takes image I of the test set the checkpoint was tested on,
from its run metadata (`test_set`): a built-in data set's, or the test split
of the folder it was trained on, made again exactly as training made it
(`--dataset` or `--data-dir` say where a folder has moved to). A data set
that does not fit the checkpoint is one line, exit status 1.
"""

from cifarkit import quiet  # noqa: F401 (first: TensorFlow's start-up lines only when asked for)
import argparse
import os
import sys

import numpy as np

import load_data
from cifarkit import checkpoints
from cifarkit import folders
from cifarkit import legacy  # noqa: F401 (opens checkpoints written before the collection used Keras's own layers)


def load_checkpoint(path):
    """(model, class names). Raises ValueError with a one-line reason."""
    import keras
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such checkpoint")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:
        raise ValueError(f"{path}: not a checkpoint this tool can load "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    shape = model.inputs[0].shape if model.inputs else None
    if shape is None or len(shape) != 4 or shape[-1] not in (1, 3):
        raise ValueError(f"{path}: the model does not take images (input shape {shape})")
    try:
        names, _ = checkpoints.read_run(path)
    except (OSError, ValueError):
        names = None
    n_out = model.outputs[0].shape[-1]
    if not names or len(names) != n_out:
        default = load_data.FASHION_MNIST_CLASSES if shape[-1] == 1 else load_data.CIFAR10_CLASSES
        names = list(default) if n_out == len(default) else [str(i) for i in range(n_out)]
    return model, names


def dataset_of(run, model):
    """The data set a checkpoint was trained on, from its stored run
    (`checkpoints.read_run`): a built-in set's name or a folder's path; for
    older checkpoints (no run), Fashion-MNIST for grayscale input and CIFAR-10
    otherwise."""
    if run and (run.get("data") or {}).get("dataset"):
        return run["data"]["dataset"]
    if run and run.get("dataset"):
        return run["dataset"]
    return "fashion_mnist" if model.inputs[0].shape[-1] == 1 else "cifar10"


def _listed(names, limit=4):
    names = list(names)
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _check_classes(what, names, stored, n_out):
    """A DataError unless the data's classes are the checkpoint's: as many
    as it predicts, and the names it stores (when it stores them)."""
    if len(names) != n_out:
        raise load_data.DataError(f"{what}: {len(names)} classes ({_listed(names)}), but the checkpoint "
                                  f"predicts {n_out}; give the data set it was trained on (--dataset)")
    if stored is not None and list(stored) != list(names):
        extra, lacking = [n for n in names if n not in stored], [n for n in stored if n not in names]
        detail = "the same names in another order" if not extra and not lacking else "; ".join(
            part for part in (extra and f"{_listed(extra)} not among the checkpoint's",
                              lacking and f"the checkpoint's {_listed(lacking)} missing") if part)
        raise load_data.DataError(f"{what}: its classes are not the checkpoint's ({detail}); give the data "
                                  f"set it was trained on (--dataset)")


def _dims(shape):
    return "x".join(str(d) for d in shape)


def test_set(path, model, dataset=None, data_dir=None, stream=None):
    """The test set a checkpoint is evaluated on: `(x_test, y_test, about)`,
    x_test an array or, for a folder whose test split would not fit in half
    the memory free (or with `stream`), load_data.ImageFiles read batch by
    batch; `about`: {"dataset": name or the folder's path, "test_split": how}.

    Which: `dataset` when given (a built-in set or a folder), else what the
    checkpoint's run metadata names (`run["data"]`, written by
    training.Run; older checkpoints: `run["dataset"]`; none: CIFAR-10, or
    Fashion-MNIST for grayscale input). A folder's test split is made again
    exactly as training made it (its test/ folder, or the held-out fraction
    and seed stored), at the stored image size and colour; a folder that
    moved is found with `dataset`, or under `data_dir` (its old name there, or
    `data_dir` itself). Anything that does not fit the checkpoint (image
    shape, class count or names, how the split is made, a missing folder) is
    a load_data.DataError of one line, before any image is read."""
    try:
        stored_names, run = checkpoints.read_run(path)
    except (OSError, ValueError):
        stored_names, run = None, None
    run = run or {}
    source = run.get("data") or {}
    shape, n_out = tuple(model.inputs[0].shape[1:]), int(model.outputs[0].shape[-1])
    stored = source.get("dataset") or run.get("dataset")
    folder_run = stored is not None and stored not in load_data.DATASETS
    if dataset is None and folder_run and data_dir and not os.path.isdir(stored):  # moved: --data-dir says where to
        inside = os.path.join(data_dir, os.path.basename(os.path.normpath(stored)))
        dataset, data_dir = (inside if os.path.isdir(inside) else data_dir), None
    name = dataset or dataset_of(run, model)

    if name in load_data.DATASETS:
        image_shape, count = load_data.SHAPES[name]
        if any(m is not None and m != d for m, d in zip(shape, image_shape)) or len(shape) != len(image_shape):
            raise load_data.DataError(f"{name}: its images are {_dims(image_shape)}, but the checkpoint takes "
                                      f"{_dims(shape)}; give the data set it was trained on (--dataset)")
        if count != n_out:
            raise load_data.DataError(f"{name}: {count} classes, but the checkpoint predicts {n_out}; give the "
                                      f"data set it was trained on (--dataset)")
        if data_dir is None:  # the folder the run read it from, while it is there (not a download)
            then = (run.get("hyperparameters") or {}).get("data_dir")
            data_dir = then if then and os.path.isdir(then) else None
        _, (x, y), names = load_data.load(name, data_dir)
        _check_classes(name, names, stored_names, n_out)
        return x, y, {"dataset": name, "test_split": "its own test set"}

    if not os.path.isdir(name):
        if dataset is None:
            raise load_data.DataError(f"{name}: the folder this checkpoint was trained on is not there; if it "
                                      f"moved, give its new place with --dataset FOLDER")
        raise load_data.DataError(f"{name}: neither one of {', '.join(load_data.DATASETS)} nor a folder")
    if not folder_run:  # a folder for a checkpoint of a built-in set (or of nothing stored)
        source = {}
    size = int(source.get("image_size", shape[0]))
    color = source.get("color", "rgb" if shape[-1] == 3 else "grayscale")
    channels = 3 if color == "rgb" else 1
    if (size, size, channels) != shape:
        raise load_data.DataError(f"{path}: its run read {_dims((size, size, channels))} images, but the model "
                                  f"takes {_dims(shape)}")
    split = folders.FolderSplit(name, source.get("test_fraction", 0.2), source.get("split_seed", 0))
    if source.get("test_split") and source["test_split"] != split.test_split:
        then = "its test/ folder" if source["test_split"] == "test/" else "a held-out share of each class"
        raise load_data.DataError(f"{name}: its test set would be {split.how()}, but the checkpoint was "
                                  f"tested on {then}")
    _check_classes(name, split.classes, stored_names, n_out)
    if source.get("test_files_sha256") and source["test_files_sha256"] != split.test_digest():
        print(f"note: {name}: its test split is not the one the run was tested on ({len(split.test[0])} "
              f"images now, {source.get('test_images', '?')} then): the figures are not the run's",
              file=sys.stderr)
    if stream is None:
        stream = folders.stream_needed(len(split.test[0]), size, channels, name, file=sys.stderr)
    x, y = split.read("test", size, color, stream=stream, check=False)
    return x, y, {"dataset": split.root, "test_split": split.how()}


def read_image(path, height, width, channels):
    """An image file read as training and the inspector read it (the same
    reader, so a phone photo's EXIF orientation is applied here too)."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    if height != width:
        raise ValueError(f"the checkpoint takes {height}x{width} images; the collection's models take square ones")
    try:
        return folders.read_image_file(path, height, channels)
    except load_data.DataError:
        raise ValueError(f"{path}: not an image OpenCV can read") from None


def top_k(probabilities, names, k):
    order = np.argsort(probabilities)[::-1][:k]
    return [(names[i], float(probabilities[i])) for i in order]


def main(argv=None):
    parser = argparse.ArgumentParser(description="Classify images with a trained checkpoint.")
    parser.add_argument("checkpoint", help=".h5 checkpoint written by a script of the collection")
    parser.add_argument("images", nargs="*", help="image files (any format OpenCV reads)")
    parser.add_argument("--top", type=int, default=3, metavar="K", help="how many classes to show (default: 3)")
    parser.add_argument("--test-index", type=int, action="append", metavar="I",
                        help="classify test image I of the data set and show its true label (repeatable)")
    parser.add_argument("--dataset", metavar="NAME_OR_FOLDER",
                        help="--test-index: the data set or folder (default: the one the checkpoint was trained on)")
    parser.add_argument("--data-dir", help="--test-index: the folder holding a built-in data set, or the one a "
                                           "checkpoint's own folder has moved into")
    args = parser.parse_args(argv)
    if not args.images and not args.test_index:
        parser.error("give at least one IMAGE or --test-index I")
    if args.top < 1:
        parser.error("--top must be at least 1")

    try:
        model, names = load_checkpoint(args.checkpoint)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    _, height, width, channels = model.inputs[0].shape
    k = min(args.top, len(names))

    batch, labels, failed = [], [], 0
    for path in args.images:
        try:
            batch.append(read_image(path, height, width, channels))
            labels.append((path, None))
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
    if args.test_index:
        try:  # a folder's images stay on disk: only the ones asked for are read
            x_test, y_test, _ = test_set(args.checkpoint, model, args.dataset, args.data_dir, stream=True)
        except (ValueError, load_data.DataError) as e:
            print(f"error: {e}", file=sys.stderr)
            failed, x_test = failed + len(args.test_index), None  # the image files are still classified
        for i in args.test_index if x_test is not None else []:
            if not 0 <= i < len(x_test):
                print(f"error: --test-index {i} is outside 0..{len(x_test) - 1}", file=sys.stderr)
                failed += 1
                continue
            try:
                image = x_test.read([i])[0] if isinstance(x_test, load_data.ImageFiles) else x_test[i]
            except load_data.DataError as e:
                print(f"error: {e}", file=sys.stderr)
                failed += 1
                continue
            batch.append(image)
            labels.append((f"test image {i}", names[int(np.ravel(y_test[i])[0])]))

    if batch:
        probabilities = model.predict(np.stack(batch), verbose=0)
        for (what, truth), p in zip(labels, probabilities):
            ranked = top_k(p, names, k)
            shown = ", ".join(f"{name} {prob:.1%}" for name, prob in ranked)
            truth_note = f" (true: {truth})" if truth else ""
            print(f"{what}{truth_note}: {shown}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
