"""Preprocessing inside the model, so a checkpoint takes raw uint8 pixels.

`standardize` builds (x - mean) / std from Keras's own layers, so plain
`keras.models.load_model` opens every checkpoint; `rescale`, `pixel_mean`
and `channel_mean` are the three normalisations the scripts use;
`preprocess` puts one in front of ImageDataGenerator-style augmentation
(augment.py's layers, left out of saved checkpoints).
"""

import numpy as np

import keras
from keras import layers

from cifarkit import augment
from cifarkit import folders


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
    return standardize(folders.pixel_mean(x_train), 255.0, name="subtract_pixel_mean")


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
