"""CIFAR-10 and Fashion-MNIST readers: drop-in replacements for `keras.datasets`.

`load_data()` returns exactly what `keras.datasets.cifar10.load_data()` does
(uint8 images `(N, 32, 32, 3)` RGB channels-last, uint8 labels `(N, 1)`), read
from the official "CIFAR-10 python version" batches. `load_fashion_mnist()`
does the same for the four official Fashion-MNIST idx files.

Where the data is looked for: the `data_dir` argument (the scripts'
`--data-dir`) alone when it is given (an error naming it if the data is not
there); otherwise the environment variable `CIFAR_DATA_DIR`, then
`~/.keras/datasets`, Keras's own cache.
A folder may hold the extracted `cifar-10-batches-py/`, the
`cifar-10-python.tar.gz` archive (extracted once, safely, into the Keras
cache), or a
`fashion-mnist/` folder with the idx `.gz` files. If none holds the data, the
official files are downloaded over HTTPS into `~/.keras/datasets` and checked
against the official MD5 before use. A local copy is never checked against
the official checksum (repacked copies are common and legitimate).

The batches are pickles; they are read with a restricted unpickler that only
builds dicts, lists, strings, numbers and NumPy arrays, so a crafted file
cannot run code. Every file is validated; any problem is one `DataError`
naming the file.

Command line:
  python load_data.py [--dataset cifar10|fashion_mnist] [--data-dir DIR]
                      [--show N] [--out FILE]
"""

import argparse
import sys

import numpy as np

# The machinery lives in the cifarkit package, a module per job: archives
# (where the data is, downloads, safe extraction), datasets (the readers),
# folders (a folder of images); here is the front door.
from cifarkit.archives import (  # noqa: F401 (re-exported)
    CIFAR10_CLASSES, FASHION_MNIST_CLASSES, DataError, find_cifar10, find_cifar100, find_fashion_mnist)
from cifarkit.datasets import (  # noqa: F401 (re-exported)
    DATASETS, SHAPES, label, load, load_cifar100, load_cifar100_class_names, load_class_names, load_data,
    load_fashion_mnist, load_source, shape_of)
from cifarkit.folders import ImageFiles, load_folder, load_folder_source  # noqa: F401 (re-exported)

# --------------------------------------------------------------------------
# Command line: summary and a grid of samples
# --------------------------------------------------------------------------

def summary(x_train, y_train, x_test, y_test, class_names):
    lines = [f"train: {x_train.shape} {x_train.dtype}, labels {y_train.shape}",
             f"test:  {x_test.shape} {x_test.dtype}, labels {y_test.shape}",
             f"{'class':<12} {'train':>6} {'test':>6}"]
    train_counts = np.bincount(y_train.ravel(), minlength=len(class_names))
    test_counts = np.bincount(y_test.ravel(), minlength=len(class_names))
    for i, name in enumerate(class_names):
        lines.append(f"{name:<12} {train_counts[i]:>6} {test_counts[i]:>6}")
    mean, std = channel_stats(x_train)
    lines.append("per-channel mean (pixels/255): " + ", ".join(f"{m:.4f}" for m in mean))
    lines.append("per-channel std  (pixels/255): " + ", ".join(f"{s:.4f}" for s in std))
    return "\n".join(lines)


def channel_stats(images):
    """Exact per-channel mean and std of pixels/255, from each channel's
    histogram of 256 values (fast, and no float copy of the images)."""
    channels = images.reshape(-1, images.shape[-1] if images.ndim == 4 else 1)
    values = np.arange(256) / 255
    mean, std = [], []
    for c in range(channels.shape[1]):
        counts = np.bincount(channels[:, c], minlength=256)
        m = (counts * values).sum() / counts.sum()
        mean.append(m)
        std.append(np.sqrt((counts * (values - m) ** 2).sum() / counts.sum()))
    return np.array(mean), np.array(std)


def sample_grid(images, labels, class_names, n, scale=3, columns=8):
    """A BGR uint8 image: the first `n` images, enlarged, each with its class
    name underneath."""
    import cv2
    n = min(n, len(images))
    h, w = images.shape[1] * scale, images.shape[2] * scale
    cell_w, cell_h = max(w, 96), h + 18
    columns = min(columns, n)
    rows = (n + columns - 1) // columns
    grid = np.full((rows * cell_h, columns * cell_w, 3), 255, np.uint8)
    for i in range(n):
        img = images[i]
        img = cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR) if img.ndim == 2 or img.shape[-1] == 1 \
            else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST)
        r, c = divmod(i, columns)
        x0, y0 = c * cell_w + (cell_w - w) // 2, r * cell_h
        grid[y0:y0 + h, x0:x0 + w] = img
        cv2.putText(grid, class_names[int(np.ravel(labels[i])[0])], (c * cell_w + 2, y0 + h + 13),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return grid


def main(argv=None):
    parser = argparse.ArgumentParser(description="Load and summarise CIFAR-10, CIFAR-100 (fine labels) or Fashion-MNIST.")
    parser.add_argument("--dataset", choices=DATASETS, default="cifar10")
    parser.add_argument("--data-dir", help="folder holding the data (default: $CIFAR_DATA_DIR, then ~/.keras/datasets)")
    parser.add_argument("--show", type=int, metavar="N", default=0,
                        help="write a grid of the first N training images with their class names")
    parser.add_argument("--out", default="samples.png", help="PNG file for --show (default: samples.png)")
    args = parser.parse_args(argv)
    try:
        (x_train, y_train), (x_test, y_test), class_names = load(args.dataset, args.data_dir)
        if args.dataset == "cifar10":
            class_names = load_class_names(args.data_dir)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary(x_train, y_train, x_test, y_test, class_names))
    if args.show > 0:
        import cv2
        if not cv2.imwrite(args.out, sample_grid(x_train, y_train, class_names, args.show)):
            print(f"error: could not write {args.out}", file=sys.stderr)
            return 1
        print(f"wrote {args.out} ({min(args.show, len(x_train))} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
