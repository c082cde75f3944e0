"""Layers of checkpoints written before the collection used Keras's own.

Checkpoints saved before 2026-11-24 normalise their input with a custom layer,
`cifar_collection>Standardize`, which plain `keras.models.load_model` does not
know. Importing this module registers it, so `predict.py` (which imports it)
still opens those files. To make one portable, open it once and save it again:

    python3 -m cifarkit.legacy OLD.h5 NEW.h5     # from the repository's folder

which rebuilds the normalisation from Keras's own layers (as new checkpoints
are built) and keeps the class names.
"""

import sys

import numpy as np

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="cifar_collection")
class Standardize(layers.Layer):
    """(x - mean) / std with constants fixed at build time (the old layer)."""

    def __init__(self, mean=0.0, std=1.0, **kwargs):
        super().__init__(**kwargs)
        self.mean = np.asarray(mean, "float32")
        self.std = np.asarray(std, "float32")

    def call(self, inputs):
        x = keras.ops.cast(inputs, "float32")
        x = (x - keras.ops.convert_to_tensor(self.mean)) * keras.ops.convert_to_tensor(1.0 / self.std)
        return keras.ops.cast(x, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean.tolist(), "std": self.std.tolist()}


def convert(old_path, new_path):
    """Rewrite a checkpoint with Keras's own normalisation layers in place of
    Standardize; the same weights and class names."""
    from cifarkit import checkpoints, preprocessing
    model = keras.models.load_model(old_path, compile=False)

    def replace(layer):
        if isinstance(layer, Standardize):
            return preprocessing.standardize(layer.mean, layer.std, name=layer.name)
        return layer.__class__.from_config(layer.get_config())
    new = keras.models.clone_model(model, clone_function=replace)
    new.set_weights(model.get_weights())
    names, _ = checkpoints.read_run(old_path)
    checkpoints.save_h5(new, new_path, names or [str(i) for i in range(new.outputs[0].shape[-1])])
    return new


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python3 -m cifarkit.legacy OLD.h5 NEW.h5")
    convert(sys.argv[1], sys.argv[2])
    print(f"{sys.argv[2]}: opens with plain keras.models.load_model")
