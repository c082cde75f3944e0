"""Run by test_allconv.py as one worker of a two-worker cluster on 127.0.0.1
(TF_CONFIG set by the test), or alone (no TF_CONFIG) as the reference.

  python multiworker_driver.py script WEIGHTS.npz OUTPUT_DIR
      resnet_cifar.py, ResNet-8 (batch norm included), on tiny synthetic data
  python multiworker_driver.py step WEIGHTS.npz
      one SGD step of a small model on a global batch of 32: multiworker.fit
      under TF_CONFIG, model.fit without
"""

import contextlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import numpy as np  # noqa: E402

import keras  # noqa: E402

import load_data  # noqa: E402
import multiworker  # noqa: E402
import resnet_cifar  # noqa: E402
import training  # noqa: E402
from helpers import synthetic_cifar  # noqa: E402

mode, weights_path = sys.argv[1], sys.argv[2]


def save(model):
    np.savez(weights_path, *[np.asarray(w) for w in model.get_weights()])


if mode == "step":
    strategy = multiworker.strategy_from_environment()
    keras.utils.set_random_seed(0)
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(3, activation="softmax")])
        model.compile(keras.optimizers.SGD(0.5), "categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 3, 32), 3)
    if strategy:
        multiworker.fit(model, strategy, x, y, batch_size=32, epochs=1, validation_data=(x, y),
                        callbacks=[], verbose=0)
    else:
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    save(model)
    sys.exit(0)

data = synthetic_cifar(256, 64)
load_data.load_data = lambda data_dir=None: data
original_train = training.train


def train_and_keep_weights(model, *args, **kwargs):
    summary = original_train(model, *args, **kwargs)
    save(model)
    return summary


training.train = train_and_keep_weights
sys.exit(resnet_cifar.main(["--depth", "8", "--epochs", "1", "--batch-size", "16",
                            "--output-dir", sys.argv[3], "--verbose", "0"]))
