"""Classify images with a checkpoint of the collection.

    python predict.py CHECKPOINT IMAGE [IMAGE ...] [--top K]
    python predict.py CHECKPOINT --test-index I [--data-dir DIR]

Images of any size and any format OpenCV reads: BGR is converted to RGB,
colour or grayscale to what the model takes, and the image is resized with
area interpolation to the model's input size. Normalisation is inside the
checkpoint, so raw pixels go in. An unreadable file is reported on one line
and the others are still classified; the exit status is then 1.
"""

import quiet  # noqa: F401 (first: TensorFlow's start-up lines only when asked for)
import argparse
import os
import sys

import numpy as np

import legacy  # noqa: F401 (opens checkpoints written before the collection used Keras's own layers)
import load_data
import training


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
        names, _ = training.read_run(path)
    except (OSError, ValueError):
        names = None
    n_out = model.outputs[0].shape[-1]
    if not names or len(names) != n_out:
        default = load_data.FASHION_MNIST_CLASSES if shape[-1] == 1 else load_data.CIFAR10_CLASSES
        names = list(default) if n_out == len(default) else [str(i) for i in range(n_out)]
    return model, names


def dataset_of(run, model):
    """The data set a checkpoint was trained on, from its stored run
    (`training.read_run`); for older checkpoints (no run), Fashion-MNIST for
    grayscale input and CIFAR-10 otherwise."""
    if run and run.get("dataset") in load_data.DATASETS:
        return run["dataset"]
    return "fashion_mnist" if model.inputs[0].shape[-1] == 1 else "cifar10"


def to_model_input(image, height, width, channels):
    """An image as OpenCV read it (BGR, BGRA or grayscale, uint8 or 16-bit)
    to uint8 (height, width, channels), RGB when colour."""
    import cv2
    if image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(1, np.iinfo(image.dtype).max))
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if channels == 3:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.shape[2] == 1 \
            else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return image.reshape(height, width, channels)


def read_image(path, height, width, channels):
    import cv2
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{path}: not an image OpenCV can read")
    return to_model_input(image, height, width, channels)


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
    parser.add_argument("--data-dir", help="data folder for --test-index")
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
        try:
            dataset = dataset_of(training.read_run(args.checkpoint)[1], model)
            _, (x_test, y_test), _ = load_data.load(dataset, args.data_dir)
        except load_data.DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        for i in args.test_index:
            if not 0 <= i < len(x_test):
                print(f"error: --test-index {i} is outside 0..{len(x_test) - 1}", file=sys.stderr)
                failed += 1
                continue
            image = x_test[i]
            if image.ndim == 2:
                image = image[:, :, None]
            if image.shape != (height, width, channels):
                image = to_model_input(image[:, :, ::-1] if channels == 3 else image, height, width, channels)
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
