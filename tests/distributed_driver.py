"""Run by test_allconv.py in subprocesses (device setup must precede TensorFlow's).

  python distributed_driver.py equivalence OUT.npz
      two logical CPU devices; one step of a data-parallel model against one
      step of the same model on one device, same global batch; saves both.
"""

import os
import sys

import numpy as np
import tensorflow as tf

mode, out = sys.argv[1], sys.argv[2]
if mode == "equivalence":  # before TensorFlow initialises its devices
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import keras  # noqa: E402


from cifarkit import preprocessing

from cifarkit import devices

rng = np.random.default_rng(0)
x = rng.integers(0, 256, (32, 8, 8, 3)).astype("float32")
y = keras.utils.to_categorical(rng.integers(0, 10, 32), 10)


def small_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = preprocessing.rescale()(inputs)
    h = keras.layers.Conv2D(8, 3, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))


def fit(scope, replicas, per_device_batch, steps):
    with scope:
        model = small_model()
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="categorical_crossentropy")
    global_batch = per_device_batch * replicas
    model.fit(x[:global_batch * steps], y[:global_batch * steps], batch_size=global_batch,
              epochs=1, shuffle=False, verbose=0)
    return [np.asarray(w) for w in model.get_weights()]


scope, replicas = devices.data_parallel(2)
assert replicas == 2, replicas
parallel = fit(scope, 2, 8, 1)
single = fit(*devices.data_parallel(1), 16, 1)
np.savez(out, *parallel, *single, n=len(parallel))
print("ok")
