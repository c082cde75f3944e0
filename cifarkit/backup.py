"""Runs that survive a kill at any moment.

Every file a run keeps (checkpoints, history, plot, summary, backup) is
written beside its old self and renamed into place once complete
(`atomic_path`, `write_json`), so a kill leaves the previous file whole.

The backup (`Backup`, the last callback of every run) holds, after each
finished epoch, the weights with the optimizer state, the epoch and the state
of the stateful callbacks (the plateau cuts), in the run's resume folder:

    .cifar10_ResNet20v1_resume/state.json            {"epoch": 5, "weights": "epoch0005.weights.h5", ...}
    .cifar10_ResNet20v1_resume/epoch0005.weights.h5

Epoch N's weights are written under a new name, then state.json is replaced
by one rename, then the older weights are deleted: at whatever moment a kill
comes, state.json names a complete weights file of its own epoch. Unlike
Keras's BackupAndRestore, the backup is kept when training ends, so a run
killed during its final evaluation, plot or summary finishes on `--resume`,
and a finished run can be continued for more epochs (`--resume --epochs N`).
Folders written by Keras's BackupAndRestore (`training_metadata.json`,
`latest.weights.h5`, `plateau.json`) are still read.
"""

import contextlib
import glob
import json
import os

import keras

from cifarkit.cli import UsageError

STATE = "state.json"


@contextlib.contextmanager
def atomic_path(path):
    """A temporary name beside `path`, ending like it (Keras picks the format
    by the ending), to write to; renamed onto `path` when the block ends, and
    removed if it raises."""
    folder, base = os.path.split(path)
    temporary = os.path.join(folder, f".partial-{os.getpid()}-{base}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def writer_alive(partial):
    """Whether the process that is writing `partial` (its name holds the
    process id) is still running: another run's file is left alone."""
    try:
        pid = int(os.path.basename(partial).split("-")[1])
        os.kill(pid, 0)
    except (IndexError, ValueError, ProcessLookupError):
        return False
    except PermissionError:  # a process of another user
        return True
    return pid != os.getpid()


def write_json(path, value, **kwargs):
    """JSON written whole or not at all."""
    with atomic_path(path) as temporary, open(temporary, "w") as f:
        json.dump(value, f, default=str, **kwargs)


def read_state(folder):
    """The backup's state ({"epoch", "weights", "callbacks"}), or None when
    the folder holds no finished epoch."""
    path = os.path.join(folder, STATE)
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    legacy = os.path.join(folder, "training_metadata.json")  # Keras's BackupAndRestore
    if os.path.isfile(legacy) and os.path.isfile(os.path.join(folder, "latest.weights.h5")):
        with open(legacy) as f:
            state = {"epoch": int(json.load(f)["epoch"]), "weights": "latest.weights.h5", "callbacks": {}}
        plateau = os.path.join(folder, "plateau.json")
        if os.path.isfile(plateau):
            with open(plateau) as f:
                state["callbacks"]["plateau"] = json.load(f)
        return state
    return None


def restore(model, folder, stateful=()):
    """Load the backup in `folder` into a compiled model: weights, optimizer
    state, and the state of each `stateful` callback (one with `state_name`,
    `get_state()` and `set_state()`). Returns the epochs it holds (0: none)."""
    state = read_state(folder)
    if state is None:
        return 0
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    path = os.path.join(folder, state["weights"])
    try:
        model.load_weights(path)
    except (OSError, ValueError) as e:  # cut short (by a kill while Keras's own callback wrote it), or not ours
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"the backup {path} cannot be read ({first}); start the run afresh with --fresh") from None
    for callback in stateful:
        if callback.state_name in state.get("callbacks", {}):
            callback.set_state(state["callbacks"][callback.state_name])
    return int(state["epoch"])


class Backup(keras.callbacks.Callback):
    """After every epoch: weights with the optimizer state, the epoch and the
    `stateful` callbacks' states, into `folder` (see the module's docstring).
    Comes last among the callbacks, so an epoch counts as done only once its
    history row and checkpoint exist."""

    def __init__(self, folder, stateful=()):
        super().__init__()
        self.folder, self.stateful = folder, list(stateful)

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.folder, exist_ok=True)
        name = f"epoch{epoch + 1:04d}.weights.h5"
        with atomic_path(os.path.join(self.folder, name)) as temporary:
            self.model.save_weights(temporary)
        write_json(os.path.join(self.folder, STATE), {
            "epoch": epoch + 1, "weights": name,
            "callbacks": {c.state_name: c.get_state() for c in self.stateful}})
        for old in glob.glob(os.path.join(self.folder, "*.weights.h5")):
            if os.path.basename(old) != name:
                os.remove(old)
