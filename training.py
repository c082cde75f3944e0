"""Training plumbing shared by every script of the collection.

A script keeps its hyperparameters, its model and its optimizer; this module
gives it the rest, the same way for all of them:

- `setup`: seeds, mixed precision and the devices (the command line itself
  is `cli.py`'s);
- preprocessing inside the model (`standardize`, Keras's own layers) and
  ImageDataGenerator-style augmentation (`preprocess`, with augment.py's
  fused layer, left out of saved checkpoints), so a checkpoint takes raw
  uint8 pixels and training augments batched on the accelerator;
- `prepare_data`: the data set (`--dataset`), subset and validation split;
- `train`: fit with schedule, resumption, best/final `.h5` checkpoints, CSV
  history, plot, TensorBoard logs and a JSON summary; then the test score.
"""

import csv
import glob
import importlib.util
import json
import os
import platform
import shutil
import sys
import time

import numpy as np

import keras
from keras import layers

import augment
import backup
import hardware
import load_data
import schedules
import streaming
from cli import UsageError


def setup(args):
    """Seed everything (weights, shuffling, augmentation) and choose the
    devices. Returns the context to build and compile the model in; the
    number of data-parallel replicas is kept as `args.replicas`, and the
    multi-worker strategy, when TF_CONFIG asks for one, as `args.multi_worker`."""
    args.multi_worker = None
    if os.environ.get("TF_CONFIG"):  # before TensorFlow does anything else
        import multiworker
        if args.resume:
            raise UsageError("--resume is not available in multi-worker training (TF_CONFIG is set)")
        try:
            args.multi_worker = multiworker.strategy_from_environment()
        except ValueError as e:
            raise UsageError(str(e)) from None
    keras.utils.set_random_seed(args.seed)
    keras.mixed_precision.set_global_policy(
        mixed_precision_policy() if getattr(args, "mixed_precision", False) else "float32")
    if args.multi_worker is not None:
        args.replicas = args.multi_worker.num_replicas_in_sync
        print(f"Global batch = batch x {args.replicas}, learning rate x {args.replicas} (linear scaling rule)")
        return args.multi_worker.scope()
    scope, args.replicas = data_parallel(args.devices)
    if args.replicas > 1:
        print(f"Data-parallel training on {args.replicas} replicas: global batch = batch x "
              f"{args.replicas}, learning rate x {args.replicas} (linear scaling rule)")
    return scope


def mixed_precision_policy():
    """float16 where it is fast (GPUs, with loss scaling that compile() adds
    by itself), bfloat16 on CPUs and TPUs, which have no float16 units."""
    gpu = _torch_cuda() if keras.backend.backend() == "torch" else \
        any(d.lower().startswith("gpu") or "cuda" in d.lower() for d in accelerators())
    return "mixed_float16" if gpu else "mixed_bfloat16"


def _torch_cuda():
    import torch
    return torch.cuda.is_available()


# --------------------------------------------------------------------------
# Data-parallel training: each backend's own engine
# --------------------------------------------------------------------------

def accelerators():
    """The visible GPUs/TPUs (none: an empty list)."""
    return [d for d in keras.distribution.list_devices() if not d.lower().startswith("cpu")] \
        if keras.backend.backend() in ("jax", "tensorflow") else []


def data_parallel(devices=0):
    """(context to build and compile in, number of replicas).

    - `devices` > 1, or 0 with several accelerators visible: synchronous
      data parallelism over that many local devices, with
      tf.distribute.MirroredStrategy under TensorFlow and
      keras.distribution.DataParallel under JAX;
    - otherwise one device and a do-nothing context."""
    import contextlib
    backend = keras.backend.backend()
    if devices == 0:
        devices = len(accelerators())
    if devices <= 1:
        return contextlib.nullcontext(), 1
    if backend == "tensorflow":
        strategy = _tf_strategy(devices)
        return strategy.scope(), strategy.num_replicas_in_sync
    if backend == "jax":
        available = accelerators() or keras.distribution.list_devices()
        if len(available) < devices:
            raise UsageError(f"--devices {devices}: only {len(available)} device(s) visible")
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=available[:devices]))
        return contextlib.nullcontext(), devices
    raise UsageError(f"--devices {devices}: data-parallel training needs the tensorflow or jax "
                     f"backend, not {backend}")


def _tf_strategy(devices):
    """TensorFlow's own MirroredStrategy: the one TensorFlow-only corner of
    the collection."""
    import tensorflow as tf
    names = [d.name for d in tf.config.list_logical_devices("GPU")] or \
        [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(names) < devices:
        raise UsageError(f"--devices {devices}: only {len(names)} device(s) visible")
    return tf.distribute.MirroredStrategy(devices=names[:devices])


# --------------------------------------------------------------------------
# Preprocessing and augmentation inside the model
# --------------------------------------------------------------------------

def standardize(mean, std, name):
    """(x - mean) / std on raw pixels with Keras's own layers and fixed
    statistics, so plain `keras.models.load_model` opens the checkpoint:
    `Rescaling` for a scalar mean and std, `Normalization` over the last axis
    for per-channel statistics, and for per-pixel ones a small `Sequential`
    that flattens, normalises and reshapes back (Keras's .h5 loader drops a
    `Normalization` over several axes). Computed in float32 whatever the
    policy (--mixed-precision)."""
    mean, std = np.asarray(mean, "float64"), np.asarray(std, "float64")
    if np.any(std <= 0):
        raise ValueError(f"{name}: std must be positive")
    if mean.ndim == 0 and std.ndim == 0:
        return layers.Rescaling(1.0 / float(std), offset=-float(mean) / float(std), name=name, dtype="float32")
    variance = np.broadcast_to(std, mean.shape) ** 2
    if mean.ndim == 1:
        return layers.Normalization(mean=mean.astype("float32"), variance=variance.astype("float32"),
                                    name=name, dtype="float32")
    return keras.Sequential([
        layers.Reshape((mean.size,), dtype="float32", name=f"{name}_flatten"),
        layers.Normalization(mean=mean.ravel().astype("float32"), variance=variance.ravel().astype("float32"),
                             dtype="float32", name=f"{name}_normalize"),
        layers.Reshape(mean.shape, dtype="float32", name=f"{name}_reshape")], name=name)


def statistics(layer):
    """(mean, std) of a layer made by `standardize`, in the image's shape."""
    if isinstance(layer, layers.Rescaling):
        config = layer.get_config()
        return -config["offset"] / config["scale"], 1.0 / config["scale"]
    normalize = layer if isinstance(layer, layers.Normalization) else layer.layers[1]
    config = normalize.get_config()
    shape = layer.layers[2].get_config()["target_shape"] if isinstance(layer, keras.Sequential) else (-1,)
    return (np.reshape(config["mean"], shape), np.sqrt(np.reshape(config["variance"], shape)))


def rescale():
    """Pixels to [0, 1]."""
    return standardize(0.0, 255.0, name="rescale")


def pixel_mean(x_train):
    """Pixels to [0, 1] minus the training set's per-pixel mean (the Keras
    ResNet example's `subtract_pixel_mean`)."""
    return standardize(load_data.pixel_mean(x_train), 255.0, name="subtract_pixel_mean")


def channel_mean(mean, std=1.0):
    """Per-channel mean subtraction (and optional division) on raw pixels."""
    return standardize(np.asarray(mean, "float64"), std, name="subtract_channel_mean")


def preprocess(inputs, normalization, knobs=None):
    """Normalise, then augment with ImageDataGenerator's `knobs` (a dict, see
    augment.augmentation; None: no augmentation), as the seeds did: their
    generator saw normalised images, so a constant fill of 0 is the mean
    colour after a mean subtraction (ResNet, VGG) and black after a plain ÷255."""
    x = normalization(inputs) if normalization is not None else inputs
    for layer in augment.augmentation(**(knobs or {})):
        x = layer(x)
    return x


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

class Data(tuple):
    """prepare_data()'s five items, unpacked as a tuple: (train, validation,
    test, how validation is done, class names); and `source`, what the data
    is (load_data.load_source's description: the data set's name or the
    folder's absolute path, image shape, class names, how the test split was
    made), which `train` stores in every checkpoint's run metadata."""

    def __new__(cls, items, source=None):
        data = super().__new__(cls, items)
        data.source = source
        return data


def prepare_data(args):
    """Load `--dataset` (images always (N, height, width, channels); a folder
    too large for memory, or with --stream, as load_data.ImageFiles read
    batch by batch), take `--subset`, split off `--val-split` of the
    training images. Returns a Data: (train, validation, test, how
    validation is done, class names), with `.source` saying what the data is."""
    (x_train, y_train), (x_test, y_test), class_names, source = load_data.load_source(
        args.dataset, args.data_dir, args.image_size, args.color, stream=getattr(args, "stream", None))
    if args.subset:
        x_train, y_train = x_train[:args.subset], y_train[:args.subset]
    val_split = getattr(args, "val_split", 0.0)
    if val_split:
        n_val = int(round(len(x_train) * val_split))
        if n_val < 1 or n_val >= len(x_train):
            raise UsageError(f"--val-split {val_split} leaves no training or no validation images")
        val = (x_train[-n_val:], y_train[-n_val:])
        x_train, y_train = x_train[:-n_val], y_train[:-n_val]
        how = f"held-out last {val_split:.0%} of the training images ({n_val})"
    else:
        val = (x_test, y_test)
        how = "test set (as the seed does)"
    return Data(((x_train, y_train), val, (x_test, y_test), how, tuple(class_names)), source)


def run_name(args, model_name):
    """What a run's files are named after: its data set (or folder), then its model."""
    return f"{load_data.label(args.dataset)}_{model_name}"


def one_hot(y, num_classes):
    return keras.utils.to_categorical(np.ravel(y), num_classes)


# --------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------

def save_h5(model, path, class_names, run=None):
    """An .h5 checkpoint (no optimizer state: resumption has its own) with the
    class names, and the run it comes from (`run`: script, dataset,
    hyperparameters, epoch, metrics), stored as JSON attributes beside the
    model, so h5py alone reads them."""
    import logging
    import h5py
    absl = logging.getLogger("absl")  # silence Keras's "HDF5 is legacy" notice
    level = absl.level
    absl.setLevel(logging.ERROR)
    with backup.atomic_path(path) as partial:  # a kill leaves the previous checkpoint whole
        try:
            augment.for_saving(model).save(partial, include_optimizer=False)
        finally:
            absl.setLevel(level)
        with h5py.File(partial, "a") as f:
            f.attrs["class_names"] = json.dumps(list(class_names))
            if run is not None:
                f.attrs["run"] = json.dumps(run, default=str)


def write_run(path, run):
    """Store (or replace) the run metadata of a checkpoint, in a copy renamed
    into place (a kill leaves the checkpoint whole)."""
    import h5py
    with backup.atomic_path(path) as partial:
        shutil.copy2(path, partial)
        with h5py.File(partial, "a") as f:
            f.attrs["run"] = json.dumps(run, default=str)


def read_run(path):
    """(class names, run metadata) stored in a checkpoint; None where absent."""
    import h5py
    with h5py.File(path, "r") as f:
        names, run = f.attrs.get("class_names"), f.attrs.get("run")
    return (json.loads(names) if names is not None else None), (json.loads(run) if run is not None else None)


def _metrics(logs):
    return {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model when `monitor` improves, to a path that may contain
    `{epoch:03d}` (the seeds' naming). Watches 'val_accuracy', the name Keras
    logs (the seeds watched 'val_acc', which never appears). `run`: the
    metadata stored in each checkpoint, to which the epoch and metrics are added."""

    def __init__(self, path_template, class_names, monitor="val_accuracy", best=-np.inf, run=None):
        super().__init__()
        self.path_template, self.class_names, self.run = path_template, class_names, run or {}
        self.monitor, self.best, self.saved = monitor, best, []

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise UsageError(f"cannot checkpoint on {self.monitor!r}: Keras logged only {sorted(logs or {})}")
        if value > self.best:
            self.best = float(value)
            path = self.path_template.format(epoch=epoch + 1)
            save_h5(self.model, path, self.class_names,
                    dict(self.run, checkpoint="best", epoch=epoch + 1, metrics=_metrics(logs)))
            self.saved.append(path)


class Throughput(keras.callbacks.Callback):
    """Training images/s, timing only the training part of each epoch."""

    def __init__(self, n_images):
        super().__init__()
        self.n_images, self.epoch_seconds = n_images, []

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


def _trim_history(csv_path, epochs_done):
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


# Settings that say where files are or how a run is shown: they may change on --resume.
PLUMBING = {"resume", "fresh", "verbose", "output_dir", "data_dir", "multi_worker", "replicas"}
# What --resume may change: more epochs continue a run (the schedule is then defined over the new length).
EXTENDABLE = {"epochs"}


def _differences(before, now):
    """(name, recorded value, value now) of the settings that differ. Only
    names both know count, and not those the run does not use (None now); a
    run recorded before resnet_cifar.py's recipes became dicts (fast_epochs,
    ...) is compared under today's names."""
    before = _today_names(before)
    keys = sorted((set(before) & set(now)) - PLUMBING)
    return [(k, before[k], now[k]) for k in keys if now[k] is not None and
            json.dumps(before[k], default=str) != json.dumps(now[k], default=str)]


def _finished_epochs(summary_path):
    """The epochs of the finished run whose summary this is (None: none)."""
    try:
        with open(summary_path) as f:
            return int(json.load(f)["epochs_run"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _today_names(record):
    """A run's recorded settings under today's names: resnet_cifar.py's fast
    recipe recorded its own values as fast_epochs, fast_batch_size, ... before
    its recipes became dicts (2026-11-29)."""
    if record.get("recipe") != "fast":
        return record
    return dict(record, **{k[len("fast_"):]: v for k, v in record.items() if k.startswith("fast_")})


def _start_or_resume(args, paths, name, epochs, hyperparameters):
    """Refuse to lose a run: a fresh start into a folder holding this run's
    backup or history needs --fresh; --resume needs the same settings as the
    backup was made with (more epochs continue a run, even a finished one),
    and says so when the run has finished. Records the settings in the
    backup. Returns the best val_accuracy so far."""
    out, folder = os.path.dirname(paths["history"]) or ".", paths["backup"]
    record = os.path.join(folder, "run.json")
    for partial in glob.glob(os.path.join(out, ".partial-*")) + glob.glob(os.path.join(folder, ".partial-*")):
        if not backup.writer_alive(partial):  # what a killed run was writing when it died
            os.remove(partial)
    now = json.loads(json.dumps(hyperparameters, default=str))
    state = backup.read_state(folder) if args.resume else None
    if state is not None:
        before = {}
        if os.path.isfile(record):
            with open(record) as f:
                before = json.load(f)
        changed = [c for c in _differences(before, now) if c[0] not in EXTENDABLE] if before else []
        if changed:
            listed = ", ".join(f"--{k.replace('_', '-')} {b!r} (now {n!r})" for k, b, n in changed)
            raise UsageError(f"--resume: the run in {out} was made with {listed}; resume with the same "
                             f"values, or start afresh with --fresh")
        done = int(state["epoch"])
        if epochs < done:
            raise UsageError(f"--resume: {name} in {out} has trained {done} epochs, more than the {epochs} "
                             f"asked for; resume with {done} or more epochs, or start afresh with --fresh")
        if epochs == done and _finished_epochs(paths["summary"]) == done:
            raise UsageError(f"--resume: {name} in {out} has finished its {done} epochs (summary "
                             f"{paths['summary']}); continue it with more epochs (--resume --epochs N), or "
                             f"start it again with --fresh")
        kept = _trim_history(paths["history"], done)
        best_so_far = max((float(r["val_accuracy"]) for r in kept if r.get("val_accuracy")), default=-np.inf)
        if epochs == done:
            print(f"Finishing {name}: its {done} epochs are trained; evaluating and writing its files")
        elif _finished_epochs(paths["summary"]) == done or _today_names(before).get("epochs") not in (None, epochs):
            print(f"Continuing {name} from epoch {done} to {epochs}; its schedule is now defined over "
                  f"{epochs} epochs")
        else:
            print(f"Resuming {name} after epoch {done} of {epochs} from {folder}")
        backup.write_json(record, now, indent=1)  # a continued run records its new length
        return best_so_far
    if args.resume and os.path.isfile(paths["summary"]):
        raise UsageError(f"--resume: {name} in {out} has finished (summary {paths['summary']}) and keeps no "
                         f"backup to continue from; start it again with --fresh, or choose another --output-dir")
    if args.resume:
        print(f"Nothing to resume in {folder}: starting from epoch 1")
    else:
        found = [os.path.basename(p) for p in (folder, paths["history"]) if os.path.exists(p)]
        if found and not getattr(args, "fresh", False):
            raise UsageError(f"{out} already holds a run of {name} ({', '.join(found)}): continue it with "
                             f"--resume, or start afresh with --fresh (which deletes them)")
    shutil.rmtree(folder, ignore_errors=True)
    for stale in (paths["history"], paths["summary"]):  # a fresh run starts a fresh history and summary
        if os.path.exists(stale):
            os.remove(stale)
    os.makedirs(folder, exist_ok=True)
    backup.write_json(record, now, indent=1)
    return -np.inf


def make_callbacks(args, paths, n_train, class_names, schedule, best_so_far, plateau=None, run=None):
    """The callbacks of every run. `plateau`: PlateauSchedule's factor,
    patience and min_lr, for plateau cuts on top of the schedule.
    The backup comes last so that an epoch counts as done only once its
    history row and checkpoint exist; it keeps the plateau cuts too."""
    cbs = []
    if plateau:
        cbs.append(schedules.PlateauSchedule(schedule, **plateau))
    elif schedule is not None:
        cbs.append(keras.callbacks.LearningRateScheduler(schedule))
    cbs += [
        keras.callbacks.TerminateOnNaN(),
        Throughput(n_train),
        keras.callbacks.CSVLogger(paths["history"], append=True),
        BestCheckpoint(paths["best"], class_names, best=best_so_far, run=run),
    ]
    if all(importlib.util.find_spec(m) for m in ("tensorflow", "tensorboard")):  # it writes with tf.summary
        cbs.append(keras.callbacks.TensorBoard(paths["logs"]))
    cbs.append(backup.Backup(paths["backup"], stateful=[c for c in cbs if hasattr(c, "state_name")]))
    return cbs


# --------------------------------------------------------------------------
# Plot and summary
# --------------------------------------------------------------------------

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


def images_per_second(rows, n_images):
    """Training images/s over the history's epochs (every session of a
    resumed run); None for a history without timings."""
    return steady_rate(n_images, [float(r["train_seconds"]) for r in rows if r.get("train_seconds")])


def library_versions():
    versions = {"python": platform.python_version(), "keras": keras.__version__, "numpy": np.__version__}
    backend = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    if module:
        versions[module] = __import__(module).__version__
    return versions


# --------------------------------------------------------------------------
# The training run
# --------------------------------------------------------------------------

def train(model, args, data, *, name, batch_size, epochs, schedule=None,
          best_template=None, final_name=None, history_name=None, plateau=None,
          validation_note=""):
    """Fit a compiled model and write everything a run produces into
    `args.output_dir`. `data` is prepare_data()'s (train, val, test, how,
    class names); `name` starts the file names (the data set, then the model).
    Returns the summary dict (also written as JSON)."""
    (x_train, y_train), (x_val, y_val), (x_test, y_test), how, class_names = data
    num_classes = len(class_names)
    out = args.output_dir
    multi_worker = getattr(args, "multi_worker", None)
    if multi_worker is not None and streaming.streamed(x_train):
        raise UsageError("a folder streamed from disk cannot train multi-worker (TF_CONFIG is set); "
                         "use one machine, or a folder that fits in memory")
    if multi_worker is not None:
        import multiworker
        if not multiworker.is_chief():  # only worker 0 writes; the others write to a scratch folder
            import tempfile
            out = tempfile.mkdtemp(prefix=f"worker{multiworker.task_index()}-")
    os.makedirs(out, exist_ok=True)
    paths = {
        "best": os.path.join(out, best_template or f"{name}_best.h5"),
        "final": os.path.join(out, final_name or f"{name}_final.h5"),
        "history": os.path.join(out, history_name or f"{name}_history.csv"),
        "plot": os.path.join(out, f"{name}_history.png"),
        "summary": os.path.join(out, f"{name}_summary.json"),
        "logs": os.path.join(out, "logs", name),
        "backup": os.path.join(out, f".{name}_resume"),
    }

    code = hardware.code_version()  # at the start: the tree may change while the run trains
    source = getattr(data, "source", None)  # what the data is: a Data from prepare_data() says
    script = getattr(args, "_script", os.path.basename(sys.argv[0]))  # right when main(argv) is called from Python
    run = {"script": script, "dataset": (source or {}).get("dataset", args.dataset), "model": name,
           "hyperparameters": {k: v for k, v in sorted(vars(args).items())
                               if k != "multi_worker" and not k.startswith("_")}}
    if source:  # so inspect_checkpoint.py and predict.py find the same test split again
        run["data"] = source
    best_so_far = _start_or_resume(args, paths, name, epochs, run["hyperparameters"])

    replicas = getattr(args, "replicas", 1)
    if replicas > 1:  # global batch = per-device batch x replicas; linear learning-rate scaling
        batch_size *= replicas
        base = schedule or (lambda epoch, lr=None, lr0=float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)): lr0)
        schedule = lambda epoch, lr=None: replicas * base(epoch)  # noqa: E731

    callbacks = make_callbacks(args, paths, len(x_train), class_names, schedule, best_so_far,
                               plateau=plateau, run=run)
    throughput = next(cb for cb in callbacks if isinstance(cb, Throughput))
    checkpoint = next(cb for cb in callbacks if isinstance(cb, BestCheckpoint))
    saver = next(cb for cb in callbacks if isinstance(cb, backup.Backup))
    initial_epoch = backup.restore(model, paths["backup"], saver.stateful) if args.resume else 0
    targets, val_targets = one_hot(y_train, num_classes), one_hot(y_val, num_classes)
    eval_batch = max(batch_size, 256)  # no gradients: big batches evaluate faster, with the same result
    validation = streaming.FileBatches(x_val, val_targets, eval_batch) if streaming.streamed(x_val) \
        else (x_val, val_targets)
    start = time.perf_counter()
    try:
        if multi_worker is None:
            model.fit(**streaming.inputs(x_train, targets, batch_size, shuffle=True, seed=args.seed,
                                         epoch=initial_epoch),
                      epochs=epochs, initial_epoch=initial_epoch, validation_data=validation,
                      validation_batch_size=eval_batch, callbacks=callbacks, verbose=args.verbose)
        else:  # fit() cannot run under MultiWorkerMirroredStrategy (keras-team/keras#20585)
            callbacks = [cb for cb in callbacks if not isinstance(cb, (backup.Backup, keras.callbacks.TensorBoard))]
            multiworker.fit(model, multi_worker, x_train, targets, batch_size=batch_size, epochs=epochs,
                            validation_data=validation, callbacks=callbacks, verbose=args.verbose,
                            seed=args.seed)
    except KeyboardInterrupt:
        print(f"\nInterrupted. Finished epochs are kept in {paths['backup']}; "
              f"continue with the same command and --resume.", file=sys.stderr)
        raise
    wall = time.perf_counter() - start
    rows = read_history(paths["history"])
    epochs_run = len(rows)
    last = {k: float(v) for k, v in (rows[-1] if rows else {}).items() if k != "epoch" and v}

    test_targets = one_hot(y_test, num_classes)
    if multi_worker is None:
        test_loss, test_acc = model.evaluate(**streaming.inputs(x_test, test_targets, eval_batch),
                                             verbose=0)
    else:
        test_loss, test_acc = multiworker.evaluate(model, x_test, test_targets)
    # Each file below is renamed into place whole; the backup stays, so a run
    # killed here finishes with --resume. The summary comes last: it says the run is done.
    save_h5(model, paths["final"], class_names,
            dict(run, checkpoint="final", epoch=epochs_run,
                 metrics=dict(last, test_loss=float(test_loss), test_accuracy=float(test_acc))))
    plot_history(paths["history"], paths["plot"], f"{name}: test accuracy {test_acc:.4f}")
    summary = {
        "model": name,
        "command": " ".join(["python3", script] + list(getattr(args, "_argv", sys.argv[1:]))),
        "date": time.strftime("%Y-%m-%d"),
        "parameters": int(model.count_params()),
        "trainable_parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "test_loss": float(test_loss),
        "test_accuracy": float(test_acc),
        "best_val_accuracy": None if checkpoint.best == -np.inf else checkpoint.best,
        "epochs_run": epochs_run,
        "epochs_this_session": len(throughput.epoch_seconds),
        "optimizer_steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "wall_time_s": round(wall, 2),
        "train_images_per_s": images_per_second(rows, len(x_train)) or throughput.images_per_second(),
        "train_images": int(len(x_train)),
        "validation": how + (f"; {validation_note}" if validation_note else ""),
        "data": source,
        "backend": keras.backend.backend(),
        "device": hardware.device_description(),
        "machine": hardware.machine_description(),
        "code": code,
        "versions": library_versions(),
        "seed": args.seed,
        "hyperparameters": run["hyperparameters"],
        "files": {k: v for k, v in paths.items() if k != "backup"},
        "best_checkpoints": checkpoint.saved,
    }
    backup.write_json(paths["summary"], summary, indent=2)
    if out != args.output_dir:  # a multi-worker run's scratch folder
        shutil.rmtree(out, ignore_errors=True)
    print(f"Test accuracy: {test_acc:.4f}  (loss {test_loss:.4f}); "
          f"{summary['train_images_per_s'] or 0:.0f} training images/s; outputs in {out}")
    return summary
