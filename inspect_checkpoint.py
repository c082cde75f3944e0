"""What a checkpoint is, and what it gets wrong on the test set.

    python3 inspect_checkpoint.py saved_models/cifar10_ResNet20v1_final.h5
    python3 inspect_checkpoint.py A.h5 --compare B.h5          # class by class, side by side
    python3 inspect_checkpoint.py A.h5 --json > report.json     # for machines
    python3 inspect_checkpoint.py A.h5 --export serving/        # TensorFlow SavedModel for serving

Prints the model (name, parameters, input shape), the run stored in the file
(script, dataset, hyperparameters, epoch, metrics), and one pass over the test
set the checkpoint was tested on: accuracy, loss, and per-class precision,
recall and F1. Writes beside the checkpoint (or into --output-dir) a labelled
confusion matrix (`<name>_confusion.png`) and a grid of the most confident
mistakes (`<name>_mistakes.png`).

The test set comes from the checkpoint's run metadata (predict.test_set): a
built-in data set's, or the test split of the folder it was trained on, made
again exactly as training made it, so the accuracy is the run's own;
`--dataset FOLDER` (or `--data-dir` its new parent) finds a folder that
moved. A data set that does not fit the checkpoint is one line, exit status 1.
"""

from cifarkit import quiet  # noqa: F401 (first: TensorFlow's start-up lines only when asked for)
import argparse
import json
import os
import sys

import numpy as np

import load_data
import predict
from cifarkit import checkpoints
from cifarkit import legacy  # noqa: F401 (opens checkpoints written before the collection used Keras's own layers)
from cifarkit import streaming

def confusion_matrix(y_true, y_pred, n):
    """Rows: true class; columns: predicted class."""
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def per_class(matrix):
    """Precision, recall and F1 of every class, from a confusion matrix."""
    hits = np.diag(matrix).astype("float64")
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return precision, recall, f1


def evaluate(model, x, y, batch_size=256):
    """(probabilities, report) for one pass over (x, y); x an array, or
    load_data.ImageFiles read batch by batch (streaming.FileBatches)."""
    if streaming.streamed(x):
        probabilities = model.predict(streaming.FileBatches(x, np.zeros(len(x)), batch_size), verbose=0)
    else:
        probabilities = model.predict(x, batch_size=batch_size, verbose=0)
    y = np.ravel(y).astype(np.int64)
    predicted = probabilities.argmax(axis=1)
    n = probabilities.shape[1]
    matrix = confusion_matrix(y, predicted, n)
    precision, recall, f1 = per_class(matrix)
    picked = np.clip(probabilities[np.arange(len(y)), y], 1e-7, 1.0)
    return probabilities, {
        "images": int(len(y)),
        "accuracy": float((predicted == y).mean()),
        "loss": float(-np.log(picked).mean()),  # cross-entropy, as the scripts train with
        "precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
        "confusion_matrix": matrix.tolist(),
    }


def plot_confusion(matrix, names, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    matrix = np.asarray(matrix)
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * n, 0.8 + 0.55 * n))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    limit = matrix.max() / 2 if matrix.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] > limit else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confident_mistakes(probabilities, y, count):
    """Indices of the `count` wrong predictions made with the most confidence."""
    y = np.ravel(y)
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y)
    return wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:count]


def plot_mistakes(x, y, probabilities, indices, names, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    columns = 8
    rows = max(1, -(-len(indices) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.0 * columns, 2.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), indices):
        image = x[i]
        ax.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
        p = probabilities[i]
        ax.set_title(f"true {names[int(np.ravel(y)[i])]}\npred {names[int(p.argmax())]} {p.max():.0%}",
                     fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def inspect(path, data_dir=None, output_dir=None, mistakes=32, dataset=None):
    """Everything the command prints and writes for one checkpoint, as a dict.
    `dataset`/`data_dir`: see predict.test_set."""
    model, names = predict.load_checkpoint(path)
    _, run = checkpoints.read_run(path)
    x, y_test, about = predict.test_set(path, model, dataset, data_dir)
    probabilities, report = evaluate(model, x, y_test)
    stem = os.path.splitext(os.path.basename(path))[0]
    folder = output_dir or os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    title = f"{model.name} on the {load_data.label(about['dataset'])} test set: accuracy {report['accuracy']:.2%}"
    shown = confident_mistakes(probabilities, y_test, mistakes)
    images = x.read(shown) if streaming.streamed(x) else x[shown]
    files = {
        "confusion_png": plot_confusion(report["confusion_matrix"], names,
                                        os.path.join(folder, f"{stem}_confusion.png"), title),
        "mistakes_png": plot_mistakes(images, np.ravel(y_test)[shown], probabilities[shown], range(len(shown)),
                                      names, os.path.join(folder, f"{stem}_mistakes.png"),
                                      f"{model.name}: the {mistakes} most confident mistakes"),
    }
    return {
        "checkpoint": path, "model": model.name, "parameters": int(model.count_params()),
        "input_shape": list(model.inputs[0].shape[1:]), "class_names": names, "dataset": about["dataset"],
        "test_split": about["test_split"], "run": run, "test": report, "files": files,
    }, model


def print_report(info):
    print(f"{info['checkpoint']}: {info['model']}, {info['parameters']:,} parameters, "
          f"input {tuple(info['input_shape'])} uint8")
    run = info["run"]
    if run:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted((run.get("metrics") or {}).items()))
        print(f"run: {run.get('script', '?')} on {run.get('dataset', '?')}, {run.get('checkpoint', '')} "
              f"checkpoint after epoch {run.get('epoch', '?')}; {metrics}")
        hyper = run.get("hyperparameters") or {}
        print("hyperparameters: " + ", ".join(f"{k}={v}" for k, v in sorted(hyper.items())))
    else:
        print("run: not stored in this checkpoint (written before checkpoints carried their run)")
    test = info["test"]
    print(f"test set ({info['dataset']}: {info['test_split']}, {test['images']:,} images): accuracy "
          f"{test['accuracy']:.4f}, loss {test['loss']:.4f}")
    width = max(len(n) for n in info["class_names"])
    print(f"{'class':{width}s}  precision  recall     f1")
    for i, name in enumerate(info["class_names"]):
        print(f"{name:{width}s}  {test['precision'][i]:9.4f}  {test['recall'][i]:6.4f}  {test['f1'][i]:6.4f}")
    for key, path in info["files"].items():
        print(f"wrote {path}")


def print_comparison(a, b):
    print(f"{'class':12s} {'recall A':>9s} {'recall B':>9s} {'B - A':>7s}   {'f1 A':>6s} {'f1 B':>6s}")
    for i, name in enumerate(a["class_names"]):
        ra, rb = a["test"]["recall"][i], b["test"]["recall"][i]
        print(f"{name:12s} {ra:9.4f} {rb:9.4f} {rb - ra:+7.4f}   {a['test']['f1'][i]:6.4f} {b['test']['f1'][i]:6.4f}")
    ta, tb = a["test"]["accuracy"], b["test"]["accuracy"]
    print(f"{'accuracy':12s} {ta:9.4f} {tb:9.4f} {tb - ta:+7.4f}")
    print(f"A: {a['checkpoint']}\nB: {b['checkpoint']}")


def export(model, folder, x):
    """A TensorFlow SavedModel for serving (Keras's own model.export); returns
    the largest difference between its predictions and the model's on `x`."""
    model.export(folder, format="tf_saved_model", verbose=False)
    import tensorflow as tf  # a SavedModel is TensorFlow's own format: reloading it needs TensorFlow
    served = tf.saved_model.load(folder)
    out = served.serve(tf.constant(x.astype("float32")))
    return float(np.abs(np.asarray(out) - model.predict(x, verbose=0)).max())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:7]))
    parser.add_argument("checkpoint", help=".h5 checkpoint written by a script of the collection")
    parser.add_argument("--compare", metavar="OTHER.h5", help="a second checkpoint, class by class beside the first")
    parser.add_argument("--dataset", metavar="NAME_OR_FOLDER",
                        help="the data set or folder to test on (default: the one the checkpoint was trained on)")
    parser.add_argument("--data-dir", help="folder holding a built-in data set (as the scripts' --data-dir), or "
                                           "the one a checkpoint's own folder has moved into")
    parser.add_argument("--output-dir", help="where the PNGs go (default: beside the checkpoint)")
    parser.add_argument("--mistakes", type=int, default=32, metavar="N", help="mistakes to show in the grid")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    parser.add_argument("--export", metavar="DIR", help="also export a TensorFlow SavedModel there (needs TensorFlow)")
    args = parser.parse_args(argv)
    if args.mistakes < 1:
        parser.error(f"--mistakes must be at least 1, got {args.mistakes}")
    try:
        first, model = inspect(args.checkpoint, args.data_dir, args.output_dir, args.mistakes, args.dataset)
        second = inspect(args.compare, args.data_dir, args.output_dir, args.mistakes,
                         args.dataset)[0] if args.compare else None
    except (ValueError, load_data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if second and second["class_names"] != first["class_names"]:
        print(f"error: {args.compare} has other classes than {args.checkpoint}; nothing to compare",
              file=sys.stderr)
        return 1
    if args.export:
        x_test, _, _ = predict.test_set(args.checkpoint, model, args.dataset, args.data_dir, stream=True)
        sample = x_test.read(range(min(64, len(x_test)))) if streaming.streamed(x_test) else x_test[:64]
        first["export"] = {"folder": args.export, "max_difference": export(model, args.export, sample)}
    if args.json:
        print(json.dumps({"checkpoint": first, "compare": second} if second else first, indent=2, default=str))
        return 0
    print_report(first)
    if second:
        print()
        print_comparison(first, second)
    if args.export:
        print(f"exported a TensorFlow SavedModel to {args.export} (its predictions within "
              f"{first['export']['max_difference']:.1e} of the checkpoint's)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
