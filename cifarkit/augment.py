"""Real-time augmentation with ImageDataGenerator's knobs, fused into one
resampling per batch.

ImageDataGenerator composed rotation, shift and zoom into one matrix per image
and resampled each image once; Keras's preprocessing layers (RandomRotation,
RandomZoom, RandomTranslation, RandomFlip) each resample the batch again.
`RandomAffine` does what the generator did, batched and on the accelerator:
per image it draws

    angle  uniform in [-rotation_range, rotation_range] degrees,
    zx, zy uniform in [1 - zoom_range, 1 + zoom_range], independently,
    tx, ty uniform in [-width_shift_range, width_shift_range] x width
           (and height_shift_range x height) for a fraction below 1; for a
           whole number s of pixels (1 or more), a whole shift uniform in
           {-s, ..., s}: exact, the "pad s pixels and crop" of the ResNet
           paper (ImageDataGenerator draws whole shifts from {-(s-1), ..., s-1}
           with 0 twice as likely, which we do not copy),
    a left-right (top-bottom) mirror with probability 1/2 when asked,

composes them into one affine map (output pixel -> input pixel, about the
image's centre, as ImageDataGenerator's `transform_matrix`) and resamples the
whole batch at once (`resample`: bilinear, the generator's order-1
interpolation, one gather of four neighbours in keras.ops; under TensorFlow
compiled by XLA on its own). Flips alone need no resampling and are
exact. The layer works under every backend and is the identity at inference.

Checkpoints stay Keras's own: `for_saving(model)` is the model with each
RandomAffine replaced by `keras.layers.Identity` (the same weights), which is
what `checkpoints.save_h5` writes, so plain `keras.models.load_model` opens it.
"""

import functools
import math

import keras
from keras import layers, ops

from cifarkit.cli import FILL_MODES, UsageError, is_shift


@keras.saving.register_keras_serializable(package="cifar_collection")
class RandomAffine(layers.Layer):
    """ImageDataGenerator's geometric knobs as one layer (see the module's
    docstring). Images are (batch, height, width, channels)."""

    def __init__(self, rotation_range=0.0, width_shift_range=0.0, height_shift_range=0.0, zoom_range=0.0,
                 horizontal_flip=False, vertical_flip=False, fill_mode="nearest", cval=0.0, seed=None,
                 **kwargs):
        kwargs.setdefault("dtype", "float32")  # resampled in float32 whatever the policy
        super().__init__(**kwargs)
        if fill_mode not in FILL_MODES:
            raise UsageError(f"fill_mode must be constant, nearest, reflect or wrap, got {fill_mode!r}")
        for knob, value in (("width_shift_range", width_shift_range), ("height_shift_range", height_shift_range)):
            if not is_shift(value):
                raise UsageError(f"{knob} must be a fraction in [0, 1) or a whole number of pixels, got {value!r}")
        self.rotation_range, self.zoom_range = float(rotation_range), float(zoom_range)
        self.width_shift_range, self.height_shift_range = float(width_shift_range), float(height_shift_range)
        self.horizontal_flip, self.vertical_flip = bool(horizontal_flip), bool(vertical_flip)
        self.fill_mode, self.cval, self.seed = fill_mode, float(cval), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def resamples(self):
        """Whether anything besides flips is on (flips alone are exact)."""
        return bool(self.rotation_range or self.zoom_range or self.width_shift_range or self.height_shift_range)

    def sample(self, batch_size, height, width):
        """Per-image parameters, each a (batch_size,) float32 tensor: angle
        (radians), zoom zx and zy, shift tx (columns) and ty (rows) in pixels,
        and fx, fy: -1 where the image is mirrored left-right (top-bottom)."""
        u = keras.random.uniform((batch_size, 7), -1.0, 1.0, seed=self.seed_generator)
        sign = lambda on, v: ops.where(v < 0, -1.0, 1.0) if on else ops.ones_like(v)  # noqa: E731
        return {
            "angle": u[:, 0] * math.radians(self.rotation_range),
            "zx": 1.0 + u[:, 1] * self.zoom_range,
            "zy": 1.0 + u[:, 2] * self.zoom_range,
            "tx": _shift(u[:, 3], self.width_shift_range, width),
            "ty": _shift(u[:, 4], self.height_shift_range, height),
            "fx": sign(self.horizontal_flip, u[:, 5]),
            "fy": sign(self.vertical_flip, u[:, 6]),
        }

    @staticmethod
    def transforms(p, height, width):
        """The (batch, 8) projective transforms of `ops.image.affine_transform`
        mapping an output pixel (x: column, y: row) to the input pixel it
        samples: input = c + R(theta) (Z F (output - c) + t), c the centre."""
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        cos, sin = ops.cos(p["angle"]), ops.sin(p["angle"])
        a00, a01 = cos * p["zx"] * p["fx"], -sin * p["zy"] * p["fy"]
        a10, a11 = sin * p["zx"] * p["fx"], cos * p["zy"] * p["fy"]
        a02 = cx + cos * p["tx"] - sin * p["ty"] - (a00 * cx + a01 * cy)
        a12 = cy + sin * p["tx"] + cos * p["ty"] - (a10 * cx + a11 * cy)
        zeros = ops.zeros_like(a00)
        return ops.stack([a00, a01, a02, a10, a11, a12, zeros, zeros], axis=1)

    def call(self, images, training=None):
        if not training or not (self.resamples or self.horizontal_flip or self.vertical_flip):
            return images
        shape = ops.shape(images)
        height, width = images.shape[1], images.shape[2]
        p = self.sample(shape[0], height, width)
        if not self.resamples:  # flips only: exact, no interpolation
            if self.horizontal_flip:
                images = ops.where(ops.reshape(p["fx"] < 0, (-1, 1, 1, 1)), ops.flip(images, axis=2), images)
            if self.vertical_flip:
                images = ops.where(ops.reshape(p["fy"] < 0, (-1, 1, 1, 1)), ops.flip(images, axis=1), images)
            return images
        transforms = self.transforms(p, height, width)
        if keras.backend.backend() == "tensorflow":
            return _xla_resample()(images, transforms, self.fill_mode, self.cval)
        return resample(images, transforms, self.fill_mode, self.cval)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return dict(super().get_config(), rotation_range=self.rotation_range,
                    width_shift_range=self.width_shift_range, height_shift_range=self.height_shift_range,
                    zoom_range=self.zoom_range, horizontal_flip=self.horizontal_flip,
                    vertical_flip=self.vertical_flip, fill_mode=self.fill_mode, cval=self.cval, seed=self.seed)


def _shift(u, shift_range, size):
    """A shift in pixels from `u` uniform in [-1, 1): a fraction of `size` for
    a range below 1, else a whole number uniform in {-range, ..., range}."""
    if shift_range < 1:
        return u * shift_range * size
    steps = 2 * shift_range + 1
    return ops.clip(ops.floor((u + 1.0) / 2.0 * steps), 0, steps - 1) - shift_range


def _fix(index, size, fill_mode):
    """Integer pixel indices outside [0, size) mapped as `fill_mode` asks."""
    if fill_mode == "wrap":  # a b c d | a b c d
        return ops.mod(index, size)
    if fill_mode == "reflect":  # d c b a | a b c d | d c b a
        folded = ops.mod(index, 2 * size)
        return ops.where(folded >= size, 2 * size - 1 - folded, folded)
    return ops.clip(index, 0, size - 1)  # nearest: a a | a b c d | d d


def resample(images, transforms, fill_mode="nearest", cval=0.0):
    """Bilinear resampling of a batch, each image by its own transform (rows
    of `ops.image.affine_transform`'s (batch, 8) form, affine part only): one
    gather of the four neighbours of every output pixel for the whole batch,
    in keras.ops, so it is equally batched under every backend (the torch
    backend's affine_transform loops over the images). 'constant' is SciPy's
    (ImageDataGenerator's): `cval` where the sampled point lies outside the
    image (beyond the centres of its edge pixels), bilinear inside, with no
    blending of `cval` into the edge. 'wrap' repeats the image every n pixels
    (SciPy's 'grid-wrap'), not every n - 1 as ImageDataGenerator does (SciPy's
    legacy 'wrap', which makes the first and last columns one)."""
    height, width, channels = images.shape[1:]
    t = ops.cast(transforms, "float32")
    # the pixel grid, made on the device (a NumPy grid times a torch tensor on a GPU fails: TypeError)
    rows = ops.reshape(ops.repeat(ops.arange(height, dtype="float32"), width), (1, -1))  # 0 0 .. 1 1 ..
    cols = ops.reshape(ops.tile(ops.arange(width, dtype="float32"), (height,)), (1, -1))  # 0 1 .. 0 1 ..
    x = t[:, 0:1] * cols + t[:, 1:2] * rows + t[:, 2:3]  # (batch, pixels): where each output pixel samples
    y = t[:, 3:4] * cols + t[:, 4:5] * rows + t[:, 5:6]
    x0, y0 = ops.floor(x), ops.floor(y)
    wx, wy = ops.expand_dims(x - x0, -1), ops.expand_dims(y - y0, -1)
    x0, y0 = ops.cast(x0, "int32"), ops.cast(y0, "int32")
    edges = "nearest" if fill_mode == "constant" else fill_mode  # constant: x0 + 1 may be one past the edge
    first = ops.reshape(ops.arange(ops.shape(images)[0], dtype="int32") * (height * width), (-1, 1))
    xa, xb = _fix(x0, width, edges), _fix(x0 + 1, width, edges)
    ra, rb = first + _fix(y0, height, edges) * width, first + _fix(y0 + 1, height, edges) * width
    flat = ops.reshape(images, (-1, channels))
    a, b, c, d = (ops.take(flat, index, axis=0) for index in (ra + xa, ra + xb, rb + xa, rb + xb))
    top, bottom = a + wx * (b - a), c + wx * (d - c)
    out = top + wy * (bottom - top)
    if fill_mode == "constant":
        inside = ops.logical_and(ops.logical_and(x >= 0, x <= width - 1), ops.logical_and(y >= 0, y <= height - 1))
        out = ops.where(ops.expand_dims(inside, -1), out, ops.cast(cval, out.dtype))
    return ops.reshape(ops.cast(out, images.dtype), (-1, height, width, channels))


@functools.cache
def _xla_resample():
    """Under TensorFlow: `resample` compiled by XLA as a cluster of its own
    (TensorFlow's own compiler, the one TensorFlow import of this module; the
    training step around it is not XLA-compiled by default on a CPU)."""
    import tensorflow as tf
    return tf.function(resample, jit_compile=True)


def augmentation(rotation_range=0.0, width_shift_range=0.0, height_shift_range=0.0,
                 zoom_range=0.0, horizontal_flip=False, vertical_flip=False,
                 fill_mode="nearest", cval=0.0, seed=None):
    """ImageDataGenerator's knobs, same names and meanings, as a list of
    layers acting in training only: one RandomAffine, or none when nothing is on.

    rotation_range: degrees, uniform in [-r, r];
    width_shift_range / height_shift_range: fraction of width / height below 1,
        whole pixels (uniform in {-s, ..., s}) from 1 up;
    zoom_range: z, zoom factors uniform in [1 - z, 1 + z] per axis;
    horizontal_flip / vertical_flip: random mirror left-right / top-bottom;
    fill_mode: 'constant', 'nearest', 'reflect' or 'wrap'; cval: the constant."""
    layer = RandomAffine(rotation_range, width_shift_range, height_shift_range, zoom_range, horizontal_flip,
                         vertical_flip, fill_mode, cval, seed, name="random_affine")
    return [layer] if layer.resamples or layer.horizontal_flip or layer.vertical_flip else []


def for_saving(model):
    """`model` with each RandomAffine replaced by an Identity of the same name
    (the identity is what it is at inference): Keras's own layers only, the
    same weights (shared, not copied). A model without one is returned as is."""
    if not any(isinstance(layer, RandomAffine) for layer in model.layers):
        return model
    swap = lambda layer: layers.Identity(name=layer.name) if isinstance(layer, RandomAffine) else layer  # noqa: E731
    return keras.models.clone_model(model, clone_function=swap)
