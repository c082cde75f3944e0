"""A training run: its data, its files, and the run never lost.

A script keeps its hyperparameters, its model, its `compile` and its `fit`;
this module gives it the parts every run shares:

- `prepare_data(args)`: the data set (`--dataset`: a built-in one or a
  folder), `--subset` and `--val-split`, as a `Data` with named parts;
- `Run(args, data, name)`: the run's files in `--output-dir` and what they
  promise. Making one refuses to lose a run (`--fresh`, `--resume`);
  `run.callbacks(...)` adds the callbacks every run has to the script's own
  (the backup last); `run.resume(model)` restores the last finished epoch;
  `run.training_data(...)`, `validation_data`, `test_data` are what
  `fit` and `evaluate` take (arrays, a tf.data pipeline of them under
  TensorFlow, or a folder read from disk);
  `run.save(model, ...)` writes the final checkpoint, the plot and the
  summary, last, which says the run is done.
"""

import glob
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np

import keras

from cifarkit import backup
from cifarkit import batchnorm
from cifarkit import checkpoints
from cifarkit import datasets
from cifarkit import hardware
from cifarkit import history
from cifarkit import streaming
from cifarkit.cli import UsageError


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

class Data:
    """What prepare_data() read: `train`, `validation` and `test`, each
    (images, labels); `validation_note`, how validation is done;
    `class_names`; and `source`, what the data is (datasets.load_source's
    description: the data set's name or the folder's absolute path, image
    shape, class names, how the test split was made), which every
    checkpoint's run metadata stores."""

    def __init__(self, train, validation, test, validation_note, class_names, source=None):
        self.train, self.validation, self.test = train, validation, test
        self.validation_note, self.class_names, self.source = validation_note, tuple(class_names), source

    @property
    def input_shape(self):
        return tuple(self.train[0].shape[1:])

    @property
    def num_classes(self):
        return len(self.class_names)


def prepare_data(args):
    """Load `--dataset` (images always (N, height, width, channels); a folder
    too large for memory, or with --stream, as folders.ImageFiles read
    batch by batch), take `--subset`, split off `--val-split` of the
    training images."""
    (x_train, y_train), (x_test, y_test), class_names, source = datasets.load_source(
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
    return Data((x_train, y_train), val, (x_test, y_test), how, class_names, source)


def run_name(args, model_name):
    """What a run's files are named after: its data set (or folder), then its model."""
    return f"{datasets.label(args.dataset)}_{model_name}"


def one_hot(y, num_classes):
    return keras.utils.to_categorical(np.ravel(y), num_classes)


# --------------------------------------------------------------------------
# Never losing a run: --fresh and --resume
# --------------------------------------------------------------------------

# Settings that say where files are or how a run is shown: they may change on --resume.
PLUMBING = {"resume", "fresh", "verbose", "output_dir", "data_dir", "multi_worker", "replicas", "test_files_sha256",
            "test_images", "pid"}


# What --resume may change: more epochs continue a run (the schedule is then defined over the new length).
EXTENDABLE = {"epochs"}
SESSIONS = "sessions.json"  # in the backup: the code of each session of the run


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


def _record_session(folder, code, done):
    """Add this session (the code it runs, the epoch it starts after) to the
    backup's list, so that a run resumed on other code names every commit
    it trained with. A backup from before the list was kept starts it with
    its first epochs' code unknown (None)."""
    path = os.path.join(folder, SESSIONS)
    sessions = []
    if os.path.isfile(path):
        with open(path) as f:
            sessions = json.load(f)
    elif done:
        sessions = [{"code": None, "after_epoch": 0}]
    sessions = [s for s in sessions if s["after_epoch"] < done] + [{"code": code, "after_epoch": done}]
    backup.write_json(path, sessions, indent=1)


def read_sessions(folder):
    """The sessions `_record_session` listed ([] where none were)."""
    try:
        with open(os.path.join(folder, SESSIONS)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return []


def _as_flag(name, value):
    """A setting as the command line gives it: `--epochs 5`, and an on/off
    flag as itself or its --no- form (`--no-mixed-precision`)."""
    flag = "--" + name.replace("_", "-")
    if name in ON_OFF and isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    return f"{flag} {value!r}"


ON_OFF = ("mixed_precision",)  # settings whose flag comes with a --no- form


def _training_now(record):
    """The process id in a run's record while that process, not this one, still runs (else None)."""
    try:
        with open(record) as f:
            pid = int(json.load(f).get("pid", 0))
        if pid and pid != os.getpid():
            os.kill(pid, 0)
            return pid
    except ProcessLookupError:
        return None
    except PermissionError:  # a process of another user
        return pid
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return None


def _start_or_resume(args, paths, name, epochs, hyperparameters, code=None):
    """Refuse to lose a run: a fresh start into a folder holding this run's
    backup or history needs --fresh; --resume needs the same settings as the
    backup was made with (more epochs continue a run, even a finished one),
    and says so when the run has finished. Records the settings, and the
    session's code, in the backup. Returns the best val_accuracy so far."""
    out, folder = os.path.dirname(paths["history"]) or ".", paths["backup"]
    record = os.path.join(folder, "run.json")
    for partial in glob.glob(os.path.join(out, ".partial-*")) + glob.glob(os.path.join(folder, ".partial-*")):
        if not backup.writer_alive(partial):  # what a killed run was writing when it died
            os.remove(partial)
    now = json.loads(json.dumps(hyperparameters, default=str))
    owner = _training_now(record)
    if owner:  # the same command started twice: the second must not delete or resume the first's files
        raise UsageError(f"{out}: a run of {name} is training there now (process {owner}); wait for it to end or "
                         f"choose another --output-dir (if process {owner} is no such run, delete {record})")
    state = backup.read_state(folder) if args.resume else None
    if state is not None:
        before = {}
        if os.path.isfile(record):
            with open(record) as f:
                before = json.load(f)
        if before and before.get("replicas", 1) != now.get("replicas", 1):  # its batch and rate were scaled so
            raise UsageError(f"--resume: the run in {out} trained on {before.get('replicas', 1)} device(s), global "
                             f"batch {before.get('batch_size')}; resume it on as many (--devices N)")
        if before.get("test_files_sha256") not in (None, now.get("test_files_sha256")):
            raise UsageError(f"--resume: {now['dataset']}: its test split is not the one the run in {out} was "
                             f"made with ({before.get('test_images', '?')} test images then, "
                             f"{now.get('test_images', '?')} now: files added, removed or renamed, so the model "
                             f"may have trained on test images now); put the folder back as it was, or start "
                             f"afresh with --fresh")
        if before.get("test_files_sha256"):  # the same files: the folder may have moved
            before = dict(before, dataset=now["dataset"])
        changed = [c for c in _differences(before, now) if c[0] not in EXTENDABLE] if before else []
        if changed:
            listed = ", ".join(f"{_as_flag(k, b)} (now {_as_flag(k, n) if k in ON_OFF else repr(n)})"
                               for k, b, n in changed)
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
        kept = history.trim_history(paths["history"], done)
        best_so_far = max((float(r["val_accuracy"]) for r in kept if r.get("val_accuracy")), default=-np.inf)
        if epochs == done:
            print(f"Finishing {name}: its {done} epochs are trained; evaluating and writing its files")
        elif _finished_epochs(paths["summary"]) == done or _today_names(before).get("epochs") not in (None, epochs):
            print(f"Continuing {name} from epoch {done} to {epochs}; its schedule is now defined over "
                  f"{epochs} epochs")
        else:
            print(f"Resuming {name} after epoch {done} of {epochs} from {folder}")
        backup.write_json(record, dict(now, pid=os.getpid()), indent=1)  # a continued run records its new length
        _record_session(folder, code, done)
        return best_so_far
    if args.resume and os.path.isfile(paths["summary"]):
        raise UsageError(f"--resume: {name} in {out} has finished (summary {paths['summary']}) and keeps no "
                         f"backup to continue from; start it again with --fresh, or choose another --output-dir")
    if args.resume:
        print(f"Nothing to resume in {folder}: starting from epoch 1")
    else:
        found = [os.path.basename(p) for p in (folder, paths["history"]) if os.path.exists(p)]
        trained = backup.read_state(folder) is not None or history.read_history(paths["history"]) \
            or os.path.isfile(paths["summary"])  # a run that died before its first epoch kept nothing to lose
        if found and trained and not getattr(args, "fresh", False):
            raise UsageError(f"{out} already holds a run of {name} ({', '.join(found)}): continue it with "
                             f"--resume, or start afresh with --fresh (which deletes them)")
    shutil.rmtree(folder, ignore_errors=True)
    for stale in (paths["history"], paths["summary"]):  # a fresh run starts a fresh history and summary
        if os.path.exists(stale):
            os.remove(stale)
    os.makedirs(folder, exist_ok=True)
    backup.write_json(record, dict(now, pid=os.getpid()), indent=1)
    _record_session(folder, code, 0)
    return -np.inf


def library_versions():
    versions = {"python": platform.python_version(), "keras": keras.__version__, "numpy": np.__version__}
    backend = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    if module:
        versions[module] = __import__(module).__version__
    return versions


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------

class _SameEpochs(keras.callbacks.Callback):
    """fit()'s epochs must be the run's (--epochs, EPOCHS), which its resume
    and its summary go by: one edited in the fit() call alone is refused."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_train_begin(self, logs=None):
        if self.params.get("epochs") not in (None, self.epochs):
            raise UsageError(f"fit(epochs={self.params['epochs']}) differs from the run's {self.epochs}: "
                             f"set EPOCHS at the top of the script or --epochs, and pass args.epochs to fit()")


class Run:
    """One training run's files in `args.output_dir`, named after `name`
    (the data set, then the model): `<name>_best.h5` (or `best_template`,
    which may hold `{epoch:03d}`), `<name>_final.h5`, `<name>_history.csv`
    and `.png`, `<name>_summary.json`, TensorBoard's `logs/<name>`, and the
    backup `.<name>_resume` that --resume continues from.

    Making a Run refuses to lose one: a new run into a folder holding this
    one's backup or history needs --fresh; --resume needs the settings the
    backup was made with (more --epochs continue a run, even a finished one).
    On several machines (TF_CONFIG set) `resume` gives the model
    multiworker.py's own fit and evaluate, since Keras's cannot run there
    (keras-team/keras#20585); only worker 0 writes files."""

    def __init__(self, args, data, name, *, best_template=None, final_name=None, history_name=None, note=""):
        self.args, self.data, self.name, self.note = args, data, name, note
        self.multi_worker = getattr(args, "multi_worker", None)
        self.out = out = args.output_dir
        if self.multi_worker is not None:
            from cifarkit import multiworker
            if streaming.streamed(data.train[0]):
                raise UsageError("a folder streamed from disk cannot train multi-worker (TF_CONFIG is set); "
                                 "use one machine, or a folder that fits in memory")
            if not multiworker.is_chief():  # the other workers write to a scratch folder
                self.out = out = tempfile.mkdtemp(prefix=f"worker{multiworker.task_index()}-")
        os.makedirs(out, exist_ok=True)
        self.files = {
            "best": os.path.join(out, best_template or f"{name}_best.h5"),
            "final": os.path.join(out, final_name or f"{name}_final.h5"),
            "history": os.path.join(out, history_name or f"{name}_history.csv"),
            "plot": os.path.join(out, f"{name}_history.png"),
            "summary": os.path.join(out, f"{name}_summary.json"),
            "logs": os.path.join(out, "logs", name),
            "backup": os.path.join(out, f".{name}_resume"),
        }
        self.code = hardware.code_version()  # at the start: the tree may change while the run trains
        self.script = getattr(args, "_script", os.path.basename(sys.argv[0]))  # right for main(argv) from Python
        self.record = {"script": self.script, "dataset": (data.source or {}).get("dataset", args.dataset),
                       "model": name, "hyperparameters": {k: v for k, v in sorted(vars(args).items())
                                                          if k != "multi_worker" and not k.startswith("_")}}
        if data.source:  # so inspect_checkpoint.py and predict.py find the same test split again
            self.record["data"] = data.source
        seen = dict(self.record["hyperparameters"])  # what --resume compares: the data as loaded too
        if data.source:  # a folder by its absolute path, however it was spelled, and its test split's files
            seen.update(dataset=data.source["dataset"], test_files_sha256=data.source.get("test_files_sha256"),
                        test_images=data.source.get("test_images"))
        best_so_far = _start_or_resume(args, self.files, name, args.epochs, seen, self.code)
        self.throughput = history.Throughput(len(data.train[0]))
        self.best = checkpoints.BestCheckpoint(self.files["best"], data.class_names, best=best_so_far,
                                               run=self.record)
        self.eval_batch = max(args.batch_size, 256)  # no gradients: big batches evaluate faster, same result
        self.backup, self.initial_epoch, self.resumed, self.start = None, 0, False, time.perf_counter()

    def callbacks(self, *own):
        """The script's own callbacks (its learning-rate schedule, say), then
        those of every run: batch norm on torch's fused kernel (under torch),
        TerminateOnNaN, the training images/s into the history, the CSV
        history, the best checkpoint, TensorBoard's logs
        (where TensorFlow is installed) and, last, the backup, so that an
        epoch counts as done only once all of them have written it. The
        backup keeps the state of those that have one (plateau cuts, the
        best so far)."""
        cbs = [*own, _SameEpochs(self.args.epochs), batchnorm.FuseBatchNorm(), keras.callbacks.TerminateOnNaN(),
               self.throughput,
               keras.callbacks.CSVLogger(self.files["history"], append=True), self.best]
        if self.multi_worker is not None:  # multiworker.fit keeps no backup and writes no TensorBoard logs
            return cbs
        if all(importlib.util.find_spec(m) for m in ("tensorflow", "tensorboard")):  # it writes with tf.summary
            cbs.append(keras.callbacks.TensorBoard(self.files["logs"]))
        self.backup = backup.Backup(self.files["backup"], stateful=[c for c in cbs if hasattr(c, "state_name")])
        return cbs + [self.backup]

    def resume(self, model):
        """With --resume, the weights, optimizer and callbacks' state of the
        last finished epoch, from the backup. Returns the epoch to start
        from (0 for a new run): fit()'s initial_epoch. Comes after
        `callbacks` (whose state it restores) and before `training_data`."""
        if self.multi_worker is not None:
            from cifarkit import multiworker
            multiworker.attach(model, self.multi_worker, self.args.seed)
        elif self.backup is None:
            raise RuntimeError("call run.callbacks(...) before run.resume(model): the backup restores "
                               "the callbacks' state too")
        if self.args.resume and self.backup is not None:
            self.initial_epoch = backup.restore(model, self.files["backup"], self.backup.stateful)
        self.resumed, self.start = True, time.perf_counter()
        return self.initial_epoch

    def training_data(self, batch_size):
        """fit()'s x, y (one-hot), batch_size and shuffle: the arrays (a
        tf.data pipeline of them under TensorFlow, streaming.inputs), or a
        folder read from disk batch by batch, shuffled in the order of the
        epoch it starts at (so a resumed run sees the batches it would have;
        arrays get a new order); and validation_batch_size for validation arrays."""
        if not self.resumed:
            raise RuntimeError("call run.resume(model) before run.training_data(...): a resumed run's "
                               "batches start at the epoch the backup holds")
        x, y = self.data.train
        inputs = streaming.inputs(x, one_hot(y, self.data.num_classes), batch_size, shuffle=True,
                                  seed=self.args.seed, epoch=self.initial_epoch, arrays=self.arrays)
        if streaming.as_arrays(self.data.validation[0], self.arrays):  # batches come in eval_batch already
            inputs["validation_batch_size"] = self.eval_batch
        return inputs

    def validation_data(self):
        """fit()'s validation_data: (images, one-hot labels), or their batches
        (tf.data under TensorFlow, read from disk for a streamed folder)."""
        inputs = self._inputs(self.data.validation)
        return (inputs["x"], inputs["y"]) if "y" in inputs else inputs["x"]

    def test_data(self):
        """evaluate()'s x (and y and batch_size) for the test set."""
        return self._inputs(self.data.test)

    def _inputs(self, split):
        x, y = split
        return streaming.inputs(x, one_hot(y, self.data.num_classes), self.eval_batch, arrays=self.arrays)

    @property
    def arrays(self):
        """Whether fit() takes the arrays as they are: multi-worker training
        (multiworker.fit) splits them itself."""
        return self.multi_worker is not None

    def save(self, model, test_loss, test_accuracy, parameters=None, extra=None):
        """The final checkpoint, the history's plot and, last, the summary
        (each renamed into place whole; the backup stays, so a run killed
        here finishes with --resume). Returns the summary. `parameters`: the
        network's count where `model` wraps it in more (test-time views);
        `extra`: more figures for the summary and the checkpoint's metrics."""
        extra = dict(extra or {})
        wall = (self.throughput.train_end or time.perf_counter()) - self.start  # fit() alone
        rows = history.read_history(self.files["history"])
        last = {k: float(v) for k, v in (rows[-1] if rows else {}).items() if k != "epoch" and v}
        test_loss, test_accuracy = float(test_loss), float(test_accuracy)
        checkpoints.save_h5(model, self.files["final"], self.data.class_names,
                            dict(self.record, checkpoint="final", epoch=len(rows),
                                 metrics=dict(last, test_loss=test_loss, test_accuracy=test_accuracy, **extra)))
        history.plot_history(self.files["history"], self.files["plot"],
                             f"{self.name}: test accuracy {test_accuracy:.4f}")
        args = self.args
        summary = {
            "model": self.name,
            "command": " ".join(["python3", self.script] + list(getattr(args, "_argv", sys.argv[1:]))),
            "date": time.strftime("%Y-%m-%d"),
            "parameters": int(model.count_params() if parameters is None else parameters),
            "trainable_parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
            **extra,
            "best_val_accuracy": None if self.best.best == -np.inf else self.best.best,
            "epochs_run": len(rows),
            "epochs_this_session": len(self.throughput.epoch_seconds),
            "optimizer_steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
            "wall_time_s": round(wall, 2),
            "train_images_per_s": history.images_per_second(rows, len(self.data.train[0]))
            or self.throughput.images_per_second(),
            "train_images": int(len(self.data.train[0])),
            "validation": self.data.validation_note + (f"; {self.note}" if self.note else ""),
            "data": self.data.source,
            "backend": keras.backend.backend(),
            "device": hardware.device_description(),
            "machine": hardware.machine_description(),
            "code": self.code,
            "versions": library_versions(),
            "seed": args.seed,
            "hyperparameters": self.record["hyperparameters"],
            "files": {k: v for k, v in self.files.items() if k != "backup"},
            "best_checkpoints": self.best.saved,
        }
        sessions = read_sessions(self.files["backup"])
        if len({json.dumps(session["code"], sort_keys=True) for session in sessions}) > 1:
            summary["code_sessions"] = sessions  # resumed on other code: every commit it trained with
        backup.write_json(self.files["summary"], summary, indent=2)
        if self.out != args.output_dir:  # a multi-worker run's scratch folder
            shutil.rmtree(self.out, ignore_errors=True)
        print(f"Test accuracy: {test_accuracy:.4f}  (loss {test_loss:.4f}); "
              f"{summary['train_images_per_s'] or 0:.0f} training images/s; outputs in {self.out}")
        return summary
