"""ImageDataGenerator's knobs keep their meaning in training.augmentation."""

import numpy as np
import pytest

import keras

import cli
import training


def apply(layers_, x):
    for layer in layers_:
        x = layer(x, training=True)
    return keras.ops.convert_to_numpy(x)


def dot_images(n, row, col, size=32):
    x = np.zeros((n, size, size, 1), "float32")
    x[:, row, col, 0] = 1.0
    return x


def centroids(x):
    ys, xs = np.mgrid[0:x.shape[1], 0:x.shape[2]]
    mass = x[..., 0].sum(axis=(1, 2))
    return (x[..., 0] * ys).sum(axis=(1, 2)) / mass, (x[..., 0] * xs).sum(axis=(1, 2)) / mass


def test_shift_of_a_tenth_moves_at_most_3_2_pixels():
    keras.utils.set_random_seed(1)
    x = dot_images(128, 16, 16)
    out = apply(training.augmentation(width_shift_range=0.1, height_shift_range=0.1,
                                      fill_mode="constant"), x)
    cy, cx = centroids(out)
    dy, dx = np.abs(cy - 16), np.abs(cx - 16)
    assert dx.max() <= 3.2 + 1e-3 and dy.max() <= 3.2 + 1e-3
    assert dx.max() > 2.0 and dy.max() > 2.0  # it does shift, over most of the range


def test_horizontal_flip_only_mirrors_left_right():
    keras.utils.set_random_seed(2)
    x = np.random.default_rng(0).random((64, 8, 8, 3)).astype("float32")
    out = apply(training.augmentation(horizontal_flip=True), x)
    same = np.all(np.isclose(out, x), axis=(1, 2, 3))
    mirrored = np.all(np.isclose(out, x[:, :, ::-1, :]), axis=(1, 2, 3))
    assert np.all(same | mirrored)
    assert same.any() and mirrored.any()


def test_vertical_flip_only_mirrors_top_bottom():
    keras.utils.set_random_seed(3)
    x = np.random.default_rng(0).random((64, 8, 8, 3)).astype("float32")
    out = apply(training.augmentation(vertical_flip=True), x)
    same = np.all(np.isclose(out, x), axis=(1, 2, 3))
    flipped = np.all(np.isclose(out, x[:, ::-1, :, :]), axis=(1, 2, 3))
    assert np.all(same | flipped) and flipped.any() and same.any()


def test_rotation_range_is_in_degrees():
    keras.utils.set_random_seed(4)
    x = dot_images(128, 16, 28)  # 12 px right of the centre (15.5, 15.5)
    out = apply(training.augmentation(rotation_range=40, fill_mode="constant"), x)
    cy, cx = centroids(out)
    angles = np.degrees(np.arctan2(cy - 15.5, cx - 15.5))
    base = np.degrees(np.arctan2(0.5, 12.5))
    assert np.abs(angles - base).max() <= 40 + 3
    assert np.abs(angles - base).max() > 25


def test_zoom_range_scales_distances_like_image_data_generator():
    keras.utils.set_random_seed(5)
    x = dot_images(128, 16, 26)
    out = apply(training.augmentation(zoom_range=0.2, fill_mode="constant"), x)
    cy, cx = centroids(out)
    ratio = np.abs(cx - 15.5) / (26 - 15.5)
    # A zoom factor z in [0.8, 1.2] maps distances by 1/z.
    assert ratio.min() >= 1 / 1.2 - 0.05 and ratio.max() <= 1 / 0.8 + 0.05
    assert ratio.max() - ratio.min() > 0.2


def test_fill_modes():
    keras.utils.set_random_seed(6)
    x = np.full((16, 32, 32, 1), 100.0, "float32")
    constant = apply(training.augmentation(width_shift_range=0.3, fill_mode="constant", cval=7.0), x)
    assert np.isclose(constant, 7.0).any()
    nearest = apply(training.augmentation(width_shift_range=0.3, fill_mode="nearest"), x)
    assert np.allclose(nearest, 100.0)
    with pytest.raises(cli.UsageError, match="fill_mode"):
        training.augmentation(fill_mode="mirror-ish")


def test_inference_is_unchanged_by_augmentation():
    x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype("float32")
    layers_ = training.augmentation(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2,
                                    zoom_range=0.2, horizontal_flip=True, vertical_flip=True)
    assert len(layers_) == 4
    out = x
    for layer in layers_:
        out = layer(out, training=False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), x)


def test_nothing_on_means_no_layers():
    assert training.augmentation() == []
