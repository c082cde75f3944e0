"""augment.RandomAffine: ImageDataGenerator's knobs keep their meaning, fused
into one resampling. The module runs under the current backend, and
`test_other_backends` runs it again under each other installed one."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import keras

from cifarkit import augment

from cifarkit import preprocessing

from cifarkit import checkpoints
from cifarkit import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def apply(layers_, x, training=True):
    for layer in layers_:
        x = layer(x, training=training)
    return keras.ops.convert_to_numpy(x)


def ks_uniform(values, low, high):
    """Kolmogorov-Smirnov distance between the sample and U(low, high)."""
    v = np.sort(np.asarray(values, "float64"))
    cdf = np.clip((v - low) / (high - low), 0, 1)
    n = len(v)
    return max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))


def recovered_parameters(knobs, n=1024, size=64, seed=7):
    """Transform images whose two channels hold their own column and row
    index; bilinear interpolation of a linear ramp is exact, so each output
    pixel of the central patch holds the input coordinates it sampled. A
    least-squares affine fit per image recovers the angle, zooms, shifts and
    mirror that were drawn (A = R(angle) diag(zx fx, zy), input = c + A q + R t).
    Returns the parameters and the largest fit residual."""
    rows, cols = np.mgrid[0:size, 0:size].astype("float32")
    x = np.broadcast_to(np.stack([cols, rows], -1), (n, size, size, 2)).copy()
    layer = augment.RandomAffine(**knobs, fill_mode="constant", cval=-1e4, seed=seed)
    out = keras.ops.convert_to_numpy(layer(x, training=True)).astype("float64")
    c = (size - 1) / 2
    patch = slice(size // 2 - 8, size // 2 + 8)
    q = np.stack([cols[patch, patch].ravel() - c, rows[patch, patch].ravel() - c, np.ones(256)], 1)
    target = out[:, patch, patch, :].reshape(n, 256, 2)
    coef = np.einsum("kp,npj->nkj", np.linalg.pinv(q), target)  # (n, 3, 2): rows qx, qy, 1
    residual = np.abs(np.einsum("pk,nkj->npj", q, coef) - target).max()
    a = np.transpose(coef[:, :2, :], (0, 2, 1))  # (n, 2, 2): input = A q + b
    b = coef[:, 2, :] - c
    zx, zy = np.linalg.norm(a[:, :, 0], axis=1), np.linalg.norm(a[:, :, 1], axis=1)
    angle = np.arctan2(-a[:, 0, 1], a[:, 1, 1])
    cos, sin = np.cos(angle), np.sin(angle)
    fx = np.sign(a[:, 0, 0] * cos + a[:, 1, 0] * sin)
    tx, ty = cos * b[:, 0] + sin * b[:, 1], -sin * b[:, 0] + cos * b[:, 1]  # R^T b
    return dict(angle=np.degrees(angle), zx=zx, zy=zy, tx=tx, ty=ty, fx=fx), residual


def test_drawn_transforms_follow_the_knobs():
    """Angles in degrees over [-r, r], zooms per axis over [1 - z, 1 + z],
    shifts as fractions of width (columns) and height (rows), mirrors half the
    time: each distribution matches the uniform one the knobs ask for."""
    knobs = dict(rotation_range=30, zoom_range=0.2, width_shift_range=0.1, height_shift_range=0.15,
                 horizontal_flip=True)
    p, residual = recovered_parameters(knobs)
    assert residual < 1e-2  # one affine resampling per image, nothing else
    n = len(p["angle"])
    critical = 1.95 / np.sqrt(n)  # Kolmogorov-Smirnov at the 0.1% level
    for name, low, high in (("angle", -30, 30), ("zx", 0.8, 1.2), ("zy", 0.8, 1.2),
                            ("tx", -6.4, 6.4), ("ty", -9.6, 9.6)):
        assert ks_uniform(p[name], low, high) < critical, name
        assert p[name].min() >= low - 1e-3 and p[name].max() <= high + 1e-3, name
    # drawn independently, as ImageDataGenerator does (zx and zy too)
    corr = np.corrcoef([p[k] for k in ("angle", "zx", "zy", "tx", "ty", "fx")])
    assert np.abs(corr - np.eye(6)).max() < 4 / np.sqrt(n)
    assert abs(np.mean(p["fx"] < 0) - 0.5) < 4 * 0.5 / np.sqrt(n)
    assert set(np.unique(p["fx"])) == {-1.0, 1.0}


def test_no_knob_draws_nothing():
    """Only rotation: zooms stay 1, shifts 0, no mirror."""
    p, _ = recovered_parameters(dict(rotation_range=10), n=256)
    assert np.allclose(p["zx"], 1, atol=1e-3) and np.allclose(p["zy"], 1, atol=1e-3)
    assert np.allclose(p["tx"], 0, atol=1e-2) and np.allclose(p["ty"], 0, atol=1e-2)
    assert np.all(p["fx"] == 1) and np.abs(p["angle"]).max() <= 10 + 1e-3


def test_zero_knobs_is_the_identity():
    x = np.random.default_rng(0).random((8, 16, 16, 3)).astype("float32")
    assert augment.augmentation() == []
    np.testing.assert_array_equal(apply([augment.RandomAffine()], x), x)


@pytest.mark.parametrize("knob, axis", [("horizontal_flip", 2), ("vertical_flip", 1)])
def test_flips_alone_are_exact(knob, axis):
    keras.utils.set_random_seed(2)
    x = np.random.default_rng(0).random((64, 8, 8, 3)).astype("float32")
    out = apply(augment.augmentation(**{knob: True}), x)
    same = np.all(out == x, axis=(1, 2, 3))
    mirrored = np.all(out == np.flip(x, axis), axis=(1, 2, 3))
    assert np.all(same | mirrored)
    assert 16 < mirrored.sum() < 48


def test_inference_is_unchanged():
    x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype("float32")
    layers_ = augment.augmentation(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2,
                                   zoom_range=0.2, horizontal_flip=True, vertical_flip=True)
    assert len(layers_) == 1  # fused: one layer, one resampling
    np.testing.assert_array_equal(apply(layers_, x, training=False), x)


def test_fill_modes():
    keras.utils.set_random_seed(6)
    x = np.full((16, 32, 32, 1), 100.0, "float32")
    constant = apply(augment.augmentation(width_shift_range=0.3, fill_mode="constant", cval=7.0), x)
    assert np.isclose(constant, 7.0).any() and constant.min() >= 7.0 - 1e-4
    nearest = apply(augment.augmentation(width_shift_range=0.3, fill_mode="nearest"), x)
    assert np.allclose(nearest, 100.0)
    with pytest.raises(cli.UsageError, match="fill_mode"):
        augment.augmentation(fill_mode="mirror-ish")


def reference_resample(x, t, fill_mode, cval):
    """Bilinear sampling pixel by pixel, the textbook way."""
    n, h, w, _ = x.shape
    out = np.zeros_like(x, dtype="float64")
    for i in range(n):
        for r in range(h):
            for c in range(w):
                sx, sy = t[i, 0] * c + t[i, 1] * r + t[i, 2], t[i, 3] * c + t[i, 4] * r + t[i, 5]
                if fill_mode == "constant" and not (0 <= sx <= w - 1 and 0 <= sy <= h - 1):
                    out[i, r, c] = cval  # outside the image: cval, nothing blended (SciPy's 'constant')
                    continue
                x0, y0 = int(np.floor(sx)), int(np.floor(sy))
                for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                    weight = (1 - abs(sy - yy)) * (1 - abs(sx - xx))
                    if fill_mode == "wrap":
                        value = x[i, yy % h, xx % w]
                    elif fill_mode == "reflect":
                        fy, fx = yy % (2 * h), xx % (2 * w)
                        value = x[i, fy if fy < h else 2 * h - 1 - fy, fx if fx < w else 2 * w - 1 - fx]
                    else:
                        value = x[i, min(max(yy, 0), h - 1), min(max(xx, 0), w - 1)]
                    out[i, r, c] += weight * value
    return out


@pytest.mark.parametrize("fill_mode", augment.FILL_MODES)
def test_resampling_is_bilinear_with_the_fill_mode(fill_mode):
    """The layer's resampling (the batched gather, XLA-compiled under
    TensorFlow) agrees with pixel-by-pixel bilinear sampling, edges
    and fills included."""
    x = np.random.default_rng(1).random((4, 9, 11, 2)).astype("float32")
    layer = augment.RandomAffine(rotation_range=60, zoom_range=0.5, width_shift_range=0.4,
                                 height_shift_range=0.4, horizontal_flip=True, fill_mode=fill_mode, cval=-2.0)
    p = {k: keras.ops.convert_to_numpy(v) for k, v in layer.sample(4, 9, 11).items()}
    t = keras.ops.convert_to_numpy(layer.transforms(p, 9, 11))
    expected = reference_resample(x, t.astype("float64"), fill_mode, -2.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(augment.resample(x, t, fill_mode, -2.0)),
                               expected, atol=1e-4)
    layer.sample = lambda *args: p  # the layer itself, with those draws
    np.testing.assert_allclose(apply([layer], x), expected, atol=1e-4)


# ImageDataGenerator's fixed transforms (its `apply_transform` parameters) and
# the same ones in RandomAffine's terms. Keras 3's legacy generator swaps its
# matrix into (x, y) order, so its tx and zx act on columns, ty and zy on rows,
# as ours do (keras-preprocessing had tx on rows before its PR #318); it
# centres both axes with the height, so the images are square.
GENERATOR_TRANSFORMS = {
    "shift": dict(tx=3.4, ty=-5.7),
    "rotation": dict(theta=23.0),
    "zoom": dict(zx=0.8, zy=1.3),
    "combination": dict(theta=-37.0, tx=2.5, ty=-1.25, zx=1.15, zy=0.9, flip_horizontal=True),
}
CVAL = -0.5


def ours(params, batch, size):
    """RandomAffine.transforms for the generator's fixed `params`."""
    p = dict(angle=np.radians(params.get("theta", 0.0)), zx=params.get("zx", 1.0), zy=params.get("zy", 1.0),
             tx=params.get("tx", 0.0), ty=params.get("ty", 0.0),
             fx=-1.0 if params.get("flip_horizontal") else 1.0, fy=-1.0 if params.get("flip_vertical") else 1.0)
    p = {k: keras.ops.convert_to_tensor(np.full((batch,), v, "float32")) for k, v in p.items()}
    return keras.ops.convert_to_numpy(augment.RandomAffine.transforms(p, size, size))


def generator(x, params, scipy_mode):
    """ImageDataGenerator.apply_transform, image by image; `scipy_mode` goes
    straight to scipy.ndimage (the generator checks the name only when built)."""
    from keras.src.legacy.preprocessing.image import ImageDataGenerator
    g = ImageDataGenerator(cval=CVAL)
    g.fill_mode = scipy_mode
    return np.stack([g.apply_transform(image, params) for image in x])


@pytest.fixture(scope="module")
def float_images():
    return np.random.default_rng(3).random((3, 16, 16, 2)).astype("float32")


@pytest.mark.parametrize("fill_mode", ["constant", "nearest", "reflect"])
@pytest.mark.parametrize("name", list(GENERATOR_TRANSFORMS))
def test_resample_is_image_data_generators_apply_transform(float_images, name, fill_mode):
    """Same transform, same fill: the same image as the generator's (SciPy's
    order-1 affine_transform in float64), to float32 rounding. 'constant' is
    cval outside the image and bilinear inside, without blending the two."""
    params = GENERATOR_TRANSFORMS[name]
    t = ours(params, len(float_images), 16)
    if fill_mode == "constant":  # no sampled point so near an edge that float32 rounding moves it across
        rows, cols = np.mgrid[0:16, 0:16]
        sx, sy = (t[0, 3 * k] * cols + t[0, 3 * k + 1] * rows + t[0, 3 * k + 2] for k in (0, 1))
        assert min(np.abs(v - edge).min() for v in (sx, sy) for edge in (0, 15)) > 1e-3
    expected = generator(float_images, params, fill_mode)
    got = keras.ops.convert_to_numpy(augment.resample(float_images, t, fill_mode, CVAL))
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("name", list(GENERATOR_TRANSFORMS))
def test_wrap_repeats_every_n_pixels_where_the_generator_repeats_every_n_minus_1(float_images, name):
    """'wrap' differs from the generator's on purpose: SciPy's legacy 'wrap'
    repeats an image of n pixels every n - 1 (its first and last columns fall
    on one another); ours every n, SciPy's 'grid-wrap'. With the generator's
    own transform and 'grid-wrap' the two agree; with its 'wrap' they do not."""
    params = GENERATOR_TRANSFORMS[name]
    got = keras.ops.convert_to_numpy(augment.resample(float_images, ours(params, len(float_images), 16), "wrap"))
    np.testing.assert_allclose(got, generator(float_images, params, "grid-wrap"), atol=1e-5)
    assert np.abs(got - generator(float_images, params, "wrap")).max() > 0.1


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the XLA-compiled path is TensorFlow's")
@pytest.mark.parametrize("fill_mode", augment.FILL_MODES)
def test_xla_resample_is_resample(float_images, fill_mode):
    """What RandomAffine.call runs under TensorFlow gives what `resample` gives."""
    t = ours(GENERATOR_TRANSFORMS["combination"], len(float_images), 16)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(augment._xla_resample()(float_images, t, fill_mode, CVAL)),
                               keras.ops.convert_to_numpy(augment.resample(float_images, t, fill_mode, CVAL)),
                               atol=1e-5)  # XLA fuses multiply-adds: rounding differs


def test_checkpoints_leave_the_layer_out(tmp_path):
    """What is saved is Keras's own layers: the fused layer becomes an
    Identity, the weights are the trained ones, and predictions agree."""
    inputs = keras.Input((8, 8, 3))
    x = preprocessing.preprocess(inputs, preprocessing.rescale(), dict(rotation_range=20, horizontal_flip=True))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    path = str(tmp_path / "m.h5")
    checkpoints.save_h5(model, path, ["a", "b", "c"])
    with open(path, "rb") as f:
        assert b"RandomAffine" not in f.read()
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("random_affine"), keras.layers.Identity)
    x = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)),
                               atol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch's GPU tensors refuse NumPy")
def test_no_tensor_passes_through_numpy_under_torch(monkeypatch):
    """On a GPU a torch tensor cannot become a NumPy array (TypeError: can't
    convert cuda:0 device type tensor to numpy), so RandomAffine must keep to
    backend tensors; here the CPU's tensors are made to refuse the same way
    (the bug: the pixel grid was a NumPy array multiplied by the transforms,
    and every torch run on a GPU failed in its first step)."""
    import torch

    def refuse(*args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy")
    monkeypatch.setattr(torch.Tensor, "__array__", refuse)
    monkeypatch.setattr(torch.Tensor, "numpy", refuse)
    x = keras.ops.convert_to_tensor(np.random.default_rng(0).random((4, 8, 8, 3), dtype="float32"))
    for fill_mode in ("constant", "nearest", "reflect", "wrap"):
        layer = augment.RandomAffine(rotation_range=10, width_shift_range=2, height_shift_range=2, zoom_range=0.1,
                                     horizontal_flip=True, fill_mode=fill_mode, seed=0)
        assert tuple(layer(x, training=True).shape) == (4, 8, 8, 3)


OTHERS = [b for b in ("tensorflow", "torch", "jax") if b != keras.backend.backend()
          and importlib.util.find_spec(b)]


@pytest.mark.skipif(os.environ.get("AUGMENT_OTHER_BACKENDS") == "0", reason="already under another backend")
@pytest.mark.parametrize("backend", OTHERS)
def test_other_backends(backend):
    """This whole module again with KERAS_BACKEND set to each other installed backend."""
    env = dict(os.environ, KERAS_BACKEND=backend, AUGMENT_OTHER_BACKENDS="0")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", __file__],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
