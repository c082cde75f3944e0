"""A run's history: its CSV rows, the images/s in them, its plot.

`Throughput` times the training part of each epoch into the history's
`train_seconds` column, so a resumed run's speed counts every session;
`read_history` reads the complete rows (a row cut short by a kill is left
out); `trim_history` keeps the rows of backed-up epochs for --resume;
`plot_history` draws accuracy and loss, training against validation.
"""

import csv
import os
import time

import keras

from cifarkit import backup


class Throughput(keras.callbacks.Callback):
    """Training images/s, timing only the training part of each epoch."""

    def __init__(self, n_images):
        super().__init__()
        self.n_images, self.epoch_seconds, self.train_end = n_images, [], None

    def on_train_end(self, logs=None):
        self.train_end = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._train_end = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        if self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        end = self._train_end or time.perf_counter()
        self.epoch_seconds.append(end - self._start)
        if logs is not None:  # into the history, so a resumed run's speed counts every session
            logs["train_seconds"] = self.epoch_seconds[-1]

    def images_per_second(self):
        return steady_rate(self.n_images, self.epoch_seconds)


def steady_rate(n_images, epoch_seconds):
    """Images/s over the epochs, leaving out the first (compilation) when
    there are others; None without any."""
    steady = epoch_seconds[1:] or epoch_seconds
    return n_images * len(steady) / sum(steady) if steady else None


def read_history(csv_path):
    """The history's complete rows (a row cut short by a kill is left out)."""
    if not os.path.isfile(csv_path):
        return []
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        return [r for r in reader if None not in r.values() and (r.get("epoch") or "").isdigit()]


def trim_history(csv_path, epochs_done):
    """Keep the history rows of finished, backed-up epochs only, so a resumed
    run neither loses nor repeats an epoch. Returns the rows kept."""
    rows = read_history(csv_path)
    kept = [r for r in rows if int(r["epoch"]) < epochs_done]
    if os.path.isfile(csv_path):
        with open(csv_path, newline="") as f:
            fields = next(csv.reader(f), None)
        if fields and "train_seconds" not in fields:  # a history from before Throughput logged it:
            fields = ["epoch"] + sorted(set(fields[1:]) | {"train_seconds"})  # CSVLogger's order from now on
        with backup.atomic_path(csv_path) as partial, open(partial, "w", newline="") as f:
            if fields:
                writer = csv.DictWriter(f, fieldnames=fields, restval="")
                writer.writeheader()
                writer.writerows(kept)
    return kept


def images_per_second(rows, n_images):
    """Training images/s over the history's epochs (every session of a
    resumed run); None for a history without timings."""
    return steady_rate(n_images, [float(r["train_seconds"]) for r in rows if r.get("train_seconds")])


def plot_history(csv_path, png_path, title):
    """Accuracy and loss curves, training against validation."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for key, label in ((metric, "training"), ("val_" + metric, "validation")):
            if key in rows[0]:
                ax.plot(epochs, [float(r[key]) for r in rows], marker=".", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with backup.atomic_path(png_path) as partial:
        fig.savefig(partial, dpi=100)
    plt.close(fig)
    return png_path
