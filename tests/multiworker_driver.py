"""Run by test_allconv.py as one worker of a two-worker cluster on 127.0.0.1
(TF_CONFIG set by the test), or alone (no TF_CONFIG) as the reference.

  python multiworker_driver.py script WEIGHTS.npz OUTPUT_DIR
      resnet_cifar.py, ResNet-8 (batch norm included), on tiny synthetic data
  python multiworker_driver.py step WEIGHTS.npz
      one SGD step of a small model on a global batch of 32: multiworker.fit
      under TF_CONFIG, model.fit without
  python multiworker_driver.py logs WEIGHTS.npz
      the same with an L2 kernel regulariser, two epochs of one step: the
      weights, the logged loss and val_loss and the evaluated loss
      (multiworker.evaluate under TF_CONFIG, model.evaluate without)
  python multiworker_driver.py loss-scale WEIGHTS.npz
      mixed_float16 with a LossScaleOptimizer that doubles its scale after
      every finite step: two epochs of one step on a global batch of 32; the
      weights, and the scale as `scale`
  python multiworker_driver.py overflow WEIGHTS.npz
      mixed_float16 with compile()'s LossScaleOptimizer: one step on a batch
      with one image of 1e30, infinite in float16, which one worker alone
      sees; the initial weights in WEIGHTS-initial.npz
"""

import contextlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import numpy as np  # noqa: E402

import keras  # noqa: E402

from cifarkit import datasets  # noqa: E402
from cifarkit import multiworker  # noqa: E402
import resnet_cifar  # noqa: E402
from cifarkit import training  # noqa: E402
from helpers import synthetic_cifar  # noqa: E402

mode, weights_path = sys.argv[1], sys.argv[2]


def save(model):
    np.savez(weights_path, *[np.asarray(w) for w in model.get_weights()])


def small_model(strategy, optimizer, regulariser=None):
    keras.utils.set_random_seed(0)
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = keras.Sequential([keras.Input((8,)),
                                  keras.layers.Dense(16, activation="relu", kernel_regularizer=regulariser),
                                  keras.layers.Dense(3, activation="softmax", dtype="float32")])
        model.compile(optimizer, "categorical_crossentropy")
    return model


def small_data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8)).astype("float32"), keras.utils.to_categorical(rng.integers(0, 3, n), 3)


def train(model, strategy, x, y, epochs, validation_data):
    """Epochs of one step on the whole of x: the History's logs."""
    if strategy:
        history = multiworker.fit(model, strategy, x, y, batch_size=len(x), epochs=epochs,
                                  validation_data=validation_data, callbacks=[], verbose=0)
    else:
        history = model.fit(x, y, batch_size=len(x), epochs=epochs, shuffle=False,
                            validation_data=validation_data, verbose=0)
    return history.history


if mode == "step":
    strategy = multiworker.strategy_from_environment()
    model = small_model(strategy, keras.optimizers.SGD(0.5))
    x, y = small_data()
    train(model, strategy, x, y, 1, (x, y))
    save(model)
    sys.exit(0)

if mode == "logs":
    strategy = multiworker.strategy_from_environment()
    model = small_model(strategy, keras.optimizers.SGD(0.5), keras.regularizers.L2(0.01))
    x, y = small_data()
    x_val, y_val = small_data(48, seed=1)
    logs = train(model, strategy, x, y, 2, (x_val, y_val))
    evaluated = multiworker.evaluate(model, x_val, y_val)[0] if strategy else \
        model.evaluate(x_val, y_val, verbose=0)
    np.savez(weights_path, *[np.asarray(w) for w in model.get_weights()], loss=logs["loss"],
             val_loss=logs["val_loss"], evaluated=evaluated)
    sys.exit(0)

if mode in ("loss-scale", "overflow"):
    strategy = multiworker.strategy_from_environment()
    keras.mixed_precision.set_global_policy("mixed_float16")
    x, y = small_data()
    if mode == "loss-scale":
        model = small_model(strategy, keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.5),
                                                                          dynamic_growth_steps=1))
    else:  # compile()'s own LossScaleOptimizer, as under --mixed-precision on GPUs
        model = small_model(strategy, keras.optimizers.SGD(0.5))
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        x[5] = 1e30  # inf in float16: a NaN loss on the worker whose shard holds it, and only there
        np.savez(weights_path.replace(".npz", "-initial.npz"), *[np.asarray(w) for w in model.get_weights()])
    train(model, strategy, x, y, 2 if mode == "loss-scale" else 1, (x, y))
    np.savez(weights_path, *[np.asarray(w) for w in model.get_weights()],
             scale=keras.ops.convert_to_numpy(model.optimizer.dynamic_scale))
    sys.exit(0)

data = synthetic_cifar(256, 64)
datasets.load_data = lambda data_dir=None: data
original_save = training.Run.save


def save_and_keep_weights(self, model, *args, **kwargs):
    summary = original_save(self, model, *args, **kwargs)
    save(model)
    return summary


training.Run.save = save_and_keep_weights
sys.exit(resnet_cifar.main(["--depth", "8", "--epochs", "1", "--batch-size", "16", "--no-mixed-precision",
                            "--output-dir", sys.argv[3], "--verbose", "0"]))
