"""The .h5 checkpoints: written whole, with their class names and run.

- `save_h5`: the model without its augmentation layers or optimizer, plus
  the class names and the run it comes from (script, data, hyperparameters,
  epoch, metrics) as JSON attributes, so h5py alone reads them;
- `read_run` / `write_run`: those attributes;
- `BestCheckpoint`: the callback saving the model when val_accuracy improves;
- `read_h5_weights` / `load_weights_by_name`: weights from another Keras
  .h5 file (Keras's ImageNet VGG19), layer by layer.
"""

import json
import shutil

import numpy as np

import keras

from cifarkit import augment
from cifarkit import backup
from cifarkit.cli import UsageError


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


def read_h5_weights(path):
    """{layer name: [arrays]} from a Keras .h5 weights file in the classic
    layout (root attribute 'layer_names', per layer 'weight_names'), as
    Keras's ImageNet files are; a full-model .h5 keeps it under 'model_weights'."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in group.attrs:
                raise UsageError(f"{path}: not a Keras .h5 weights file (no 'layer_names')")
            out = {}
            for name in group.attrs["layer_names"]:
                name = name.decode() if isinstance(name, bytes) else name
                layer = group[name]
                names = [n.decode() if isinstance(n, bytes) else n for n in layer.attrs.get("weight_names", [])]
                out[name] = [np.asarray(layer[n]) for n in names]
            return out
    except OSError as e:
        raise UsageError(f"{path}: cannot read it as HDF5 ({e})") from None


def load_weights_by_name(model, path, names, bgr_layer=None):
    """Copy the weights of the layers `names` from the .h5 file `path` into
    the model's layers of the same name (Keras 2's `by_name=True`). Every
    one must be found with matching shapes; otherwise nothing is loaded and
    the error lists what did not match. `bgr_layer`: a convolution whose
    stored kernel takes BGR (Caffe's order, as Keras's ImageNet files do),
    loaded with its input channels reversed so that it takes RGB. Returns
    the names loaded."""
    stored = read_h5_weights(path)
    problems, plan = [], []
    for name in names:
        layer = model.get_layer(name)
        wanted = [tuple(w.shape) for w in layer.get_weights()]
        if name not in stored:
            problems.append(f"{name}: not in the file")
            continue
        got = [tuple(a.shape) for a in stored[name]]
        if got != wanted:
            problems.append(f"{name}: file has {got}, model needs {wanted}")
            continue
        arrays = stored[name]
        if name == bgr_layer:  # BGR filters turned into RGB ones
            arrays = [arrays[0][:, :, ::-1, :], *arrays[1:]]
        plan.append((layer, arrays))
    if problems:
        raise UsageError(f"{path}: weights do not match {model.name}: " + "; ".join(problems))
    for layer, arrays in plan:
        layer.set_weights(arrays)
    return [layer.name for layer, _ in plan]
