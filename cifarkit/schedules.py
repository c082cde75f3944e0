"""Learning-rate schedules of the collection.

A schedule is a pure function of the (0-based) epoch, so a resumed run picks
up the right learning rate from the epoch alone:

- `step_schedule`: the base rate times the factor of the last step passed;
- `warmup_cosine`: linear warm-up, then cosine decay towards 0.

`PlateauSchedule` adds ReduceLROnPlateau's cuts on top of such a schedule, in
a way that lasts. Keras's `LearningRateScheduler` sets the rate from
`schedule(epoch)` at the start of every epoch, so a `ReduceLROnPlateau` cut
made at the end of one epoch is undone at the start of the next (the Keras
ResNet example has this flaw). Here the rate is `schedule(epoch) x cuts`,
where `cuts` is the product of the plateau factors so far, kept in the
resume backup (`backup.Backup`) so `--resume` keeps it too.
"""

import math

import numpy as np

import keras


def step_schedule(base_lr, steps):
    """lr = base_lr * factor of the last step whose epoch has passed.
    `steps`: [(after_epoch, factor), ...]; epochs are 0-based as Keras
    passes them, so (80, 0.1) applies from the 81st epoch."""
    steps = sorted(steps)

    def schedule(epoch, lr=None):
        factor = 1.0
        for after, f in steps:
            if epoch >= after:
                factor = f
        return float(base_lr * factor)
    return schedule


def warmup_cosine(peak, epochs, warmup):
    """Linear warm-up to `peak` over `warmup` epochs, then cosine decay
    towards 0 at the end of the last epoch."""
    def schedule(epoch, lr=None):
        if epoch < warmup:
            return peak * (epoch + 1) / warmup
        progress = (epoch - warmup) / max(1, epochs - warmup)
        return 0.5 * peak * (1 + math.cos(math.pi * progress))
    return schedule


class PlateauSchedule(keras.callbacks.Callback):
    """`schedule(epoch)` times the plateau cuts made so far.

    As ReduceLROnPlateau: when `monitor` (val_loss, lower is better) has not
    improved by `min_delta` for `patience` epochs, the rate is multiplied by
    `factor` (never below `min_lr`) and the count starts again. Unlike it,
    the cut stays in force at every later epoch. The cuts, the best value
    and the wait are its state (`get_state`, `set_state`), which the resume
    backup keeps."""

    state_name = "plateau"

    def __init__(self, schedule, factor, patience, min_lr=0.0, monitor="val_loss", min_delta=1e-4):
        super().__init__()
        if not 0 < factor < 1:
            raise ValueError(f"plateau factor must be in (0, 1), got {factor}")
        self.schedule, self.factor, self.patience = schedule, factor, patience
        self.min_lr, self.monitor, self.min_delta = min_lr, monitor, min_delta
        self.cuts, self.best, self.wait = 1.0, np.inf, 0

    def rate(self, epoch):
        lr = float(self.schedule(epoch))
        return max(lr * self.cuts, min(self.min_lr, lr)) if self.cuts < 1 else lr

    def _set(self, lr):
        self.model.optimizer.learning_rate = lr

    def get_state(self):
        return {"cuts": self.cuts, "best": self.best, "wait": self.wait}

    def set_state(self, state):
        self.cuts, self.best, self.wait = float(state["cuts"]), float(state["best"]), int(state["wait"])

    def on_epoch_begin(self, epoch, logs=None):
        self._set(self.rate(epoch))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["learning_rate"] = self.rate(epoch)
        value = logs.get(self.monitor)
        if value is None:
            raise ValueError(f"PlateauSchedule watches {self.monitor!r}, which Keras did not log "
                             f"(logged: {', '.join(sorted(logs))})")
        if value < self.best - self.min_delta:
            self.best, self.wait = float(value), 0
        else:
            self.wait += 1
            if self.wait >= self.patience and self.rate(epoch) > self.min_lr:
                self.cuts *= self.factor
                self.wait = 0
                print(f"\nEpoch {epoch + 1}: {self.monitor} has not improved for {self.patience} epochs; "
                      f"learning rate x{self.factor:.4g} from now on (x{self.cuts:.4g} in all)")
