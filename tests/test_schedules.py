"""schedules.py: pure schedules, and plateau cuts that last."""

import csv
import json

import numpy as np
import pytest

import keras

import resnet_cifar as R
from cifarkit import schedules
from helpers import use_synthetic


def tiny_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    return model


def lr_of(model):
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def test_a_plateau_cut_stays_in_force_epochs_later():
    model = tiny_model()
    cb = schedules.PlateauSchedule(schedules.step_schedule(0.1, [(6, 0.1)]), factor=0.5, patience=2)
    cb.set_model(model)
    cb.on_train_begin()
    seen = []
    for epoch, val_loss in enumerate([1.0, 1.0, 1.0, 0.5, 0.4, 0.3, 0.2, 0.1]):
        cb.on_epoch_begin(epoch)
        seen.append(lr_of(model))
        cb.on_epoch_end(epoch, {"val_loss": val_loss})
    # Two epochs without improvement (1 and 2) cut the rate after epoch 2; the
    # cut is still there at epochs 3-7, and the step at epoch 6 comes on top.
    assert seen == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.005, 0.005])


def test_keras_own_pair_undoes_the_cut():
    """The flaw PlateauSchedule exists for: LearningRateScheduler resets the
    rate that ReduceLROnPlateau cut, at the start of the next epoch."""
    model = tiny_model()
    x, y = np.zeros((8, 4), "float32"), keras.utils.to_categorical(np.zeros(8), 2)
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.1)
    plateau = keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=1, min_delta=1e9)
    rates = []
    probe = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: rates.append(lr_of(model)))
    model.fit(x, y, validation_data=(x, y), epochs=4, verbose=0, callbacks=[scheduler, plateau, probe])
    assert rates == pytest.approx([0.1] * 4)


def test_cuts_made_during_fit_last_and_are_logged():
    model = tiny_model()
    x, y = np.zeros((8, 4), "float32"), keras.utils.to_categorical(np.zeros(8), 2)
    cb = schedules.PlateauSchedule(lambda epoch, lr=None: 0.1, factor=0.5, patience=1, min_lr=0.02,
                                   min_delta=1e9)  # nothing counts as an improvement after epoch 0
    history = model.fit(x, y, validation_data=(x, y), epochs=6, verbose=0, callbacks=[cb])
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05, 0.025, 0.02, 0.02])


def test_plateau_state_survives_a_resume(tmp_path):
    """The cuts, best value and wait go into the resume backup and come back."""
    from cifarkit import backup
    model = tiny_model()
    model.optimizer.build(model.trainable_variables)
    first = schedules.PlateauSchedule(lambda epoch, lr=None: 0.1, factor=0.5, patience=1)
    saver = backup.Backup(str(tmp_path / "backup"), stateful=[first])
    for callback in (first, saver):
        callback.set_model(model)
    for epoch, val_loss in enumerate([1.0, 1.0, 1.0]):
        first.on_epoch_begin(epoch)
        first.on_epoch_end(epoch, {"val_loss": val_loss})
        saver.on_epoch_end(epoch)
    assert first.cuts == pytest.approx(0.25)

    again = schedules.PlateauSchedule(lambda epoch, lr=None: 0.1, factor=0.5, patience=1)
    again.set_model(model)
    assert backup.restore(model, str(tmp_path / "backup"), [again]) == 3
    again.on_epoch_begin(3)
    assert lr_of(model) == pytest.approx(0.025)
    assert again.best == 1.0 and again.wait == 0


def test_plateau_needs_the_metric_it_watches():
    cb = schedules.PlateauSchedule(lambda epoch, lr=None: 0.1, factor=0.5, patience=1)
    cb.set_model(tiny_model())
    with pytest.raises(ValueError, match="val_loss"):
        cb.on_epoch_end(0, {"loss": 1.0})


def test_seed_recipe_trains_with_lasting_plateau_cuts(tmp_path, monkeypatch):
    """The seed recipe uses PlateauSchedule, and its cuts show in the history."""
    use_synthetic(monkeypatch, 64, 32)
    made = []
    original = schedules.PlateauSchedule.__init__

    def spy(self, *a, **k):
        original(self, *a, **k)
        made.append(self)
    monkeypatch.setattr(schedules.PlateauSchedule, "__init__", spy)
    out = tmp_path / "out"
    R.main(["--depth", "8", "--epochs", "3", "--batch-size", "32", "--plateau-patience", "1",
            "--verbose", "0", "--output-dir", str(out)])
    assert len(made) == 1 and made[0].factor == pytest.approx(R.RECIPES["seed"]["plateau_factor"])
    with open(out / "cifar10_ResNet8v1_history.csv", newline="") as f:
        rates = [float(r["learning_rate"]) for r in csv.DictReader(f)]
    plateau = made[0]
    state = json.loads((out / ".cifar10_ResNet8v1_resume" / "state.json").read_text())
    assert state["callbacks"]["plateau"]["cuts"] == pytest.approx(plateau.cuts)
    # What was logged is the schedule times the cuts (the last epoch's, with
    # whatever cuts the run made before it).
    assert rates[0] == pytest.approx(R.RECIPES["seed"]["learning_rate"])
    assert rates[-1] == pytest.approx(plateau.rate(2))
