"""vgg19_cifar.py: configs, ImageNet initialisation by name, memory estimate."""

import json

import h5py
import numpy as np
import pytest

import keras

from cifarkit import cli
import vgg19_cifar as V
from cifarkit import checkpoints, devices
from helpers import use_synthetic


@pytest.mark.parametrize("config,total,non_trainable", [
    ("A", 28_187_826, 21_908), ("B", 28_373_106, 22_292), ("C", 28_969_330, 24_852),
    ("D", 33_687_922, 24_852), ("E", 39_002_738, 27_412)])
def test_parameter_counts(config, total, non_trainable):
    model = V.build_model(config, augment=dict(width_shift_range=0.125, horizontal_flip=True))
    assert model.count_params() == total
    assert sum(int(np.prod(w.shape)) for w in model.non_trainable_weights) == non_trainable


def test_config_c_uses_1x1_convolutions_at_the_end_of_blocks_3_to_5():
    model = V.build_model("C")
    assert model.get_layer("block3_conv3").kernel.shape[:2] == (1, 1)
    assert model.get_layer("block5_conv3").kernel.shape[:2] == (1, 1)
    assert model.get_layer("block3_conv2").kernel.shape[:2] == (3, 3)
    assert model.get_layer("block2_pool") is not None


def write_classic_h5(path, model, skip=()):
    """A weights file in the layout of Keras's ImageNet files."""
    names = [l.name for l in model.layers if l.weights and l.name not in skip]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n in names]
        for name in names:
            layer = model.get_layer(name)
            group = f.create_group(name)
            weight_names = [f"{name}/{w.name}:0" for w in layer.weights]
            group.attrs["weight_names"] = [n.encode() for n in weight_names]
            for wname, value in zip(weight_names, layer.get_weights()):
                group.create_dataset(wname, data=value)


@pytest.fixture(scope="module")
def imagenet_like_file(tmp_path_factory):
    """Keras's VGG19 architecture with random weights, saved like the ImageNet
    file (fc1 and predictions left out to keep it small: they are not loaded)."""
    keras.utils.set_random_seed(0)
    vgg = keras.applications.VGG19(weights=None)
    path = str(tmp_path_factory.mktemp("w") / "vgg19_weights.h5")
    write_classic_h5(path, vgg, skip=("fc1", "predictions"))
    return path


def test_imagenet_weights_load_by_name(imagenet_like_file):
    """The 16 convolutions, the first one's input channels reversed (BGR
    filters for RGB input); fc2 keeps its fresh initialisation."""
    model = V.build_model("E")
    fc2 = model.get_layer("fc2").get_weights()[0].copy()
    loaded = V.load_imagenet_weights(model, imagenet_like_file)
    assert len(loaded) == 16 and all("_conv" in name for name in loaded)
    stored = checkpoints.read_h5_weights(imagenet_like_file)
    np.testing.assert_array_equal(model.get_layer("block1_conv1").get_weights()[0],
                                  stored["block1_conv1"][0][:, :, ::-1, :])
    np.testing.assert_array_equal(model.get_layer("block5_conv4").get_weights()[0], stored["block5_conv4"][0])
    np.testing.assert_array_equal(model.get_layer("fc2").get_weights()[0], fc2)


def test_imagenet_start_computes_what_keras_vgg19_computes(imagenet_like_file):
    """Keras's ImageNet filters expect Caffe's input (BGR, minus ImageNet's
    means, unscaled). Loaded into our model, which takes raw RGB, the first
    block gives what keras.applications.VGG19 gives on preprocess_input's
    image, with the same weights (batch norm set to the identity)."""
    model = V.build_model("E")
    V.load_imagenet_weights(model, imagenet_like_file)
    for name in ("block1_bn1", "block1_bn2"):
        bn = model.get_layer(name)
        bn.moving_variance.assign(np.full(bn.moving_variance.shape, 1.0 - bn.epsilon, "float32"))
    ours = keras.Model(model.inputs, model.get_layer("block1_pool").output)

    reference = keras.applications.VGG19(weights=None, include_top=False, input_shape=(32, 32, 3))
    stored = checkpoints.read_h5_weights(imagenet_like_file)
    for name in ("block1_conv1", "block1_conv2"):
        reference.get_layer(name).set_weights(stored[name])
    reference = keras.Model(reference.inputs, reference.get_layer("block1_pool").output)

    rgb = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    expected = reference.predict(keras.applications.vgg19.preprocess_input(rgb.copy()), verbose=0)
    got = ours.predict(rgb, verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_vgg16_loads_the_vgg19_file_too(imagenet_like_file):
    assert len(V.load_imagenet_weights(V.build_model("D"), imagenet_like_file)) == 13


def test_mismatch_is_a_clear_error_and_loads_nothing(imagenet_like_file):
    model = V.build_model("C")
    before = model.get_layer("block1_conv1").get_weights()[0].copy()
    with pytest.raises(cli.UsageError) as err:
        V.load_imagenet_weights(model, imagenet_like_file)
    message = str(err.value)
    assert "block3_conv3: file has [(3, 3, 256, 256), (256,)], model needs [(1, 1, 256, 256), (256,)]" in message
    assert "block4_conv3" in message and "block5_conv3" in message
    np.testing.assert_array_equal(model.get_layer("block1_conv1").get_weights()[0], before)


def test_missing_layers_are_listed(tmp_path):
    """A missing convolution is an error; the dense layers are not needed."""
    small = V.build_model("A")
    path = str(tmp_path / "partial.h5")
    write_classic_h5(path, small, skip=("block5_conv2", "fc1", "fc2", "predictions"))
    with pytest.raises(cli.UsageError, match=r"block5_conv2: not in the file$"):
        V.load_imagenet_weights(V.build_model("A"), path)


def test_not_a_weights_file(tmp_path):
    path = tmp_path / "x.h5"
    path.write_bytes(b"nope")
    with pytest.raises(cli.UsageError, match="x.h5"):
        V.load_imagenet_weights(V.build_model("A"), str(path))


def test_memory_estimate_by_hand_for_config_a():
    rows, params, activations, total = devices.memory_estimate(V.build_model("A"), batch_size=128)
    by_hand = (32 * 32 * 3                      # input
               + 32 * 32 * 64 + 16 * 16 * 64       # block 1: conv, pool
               + 16 * 16 * 128 + 8 * 8 * 128       # block 2
               + 2 * 8 * 8 * 256 + 4 * 4 * 256     # block 3: 2 convs, pool
               + 2 * 4 * 4 * 512 + 2 * 2 * 512     # block 4
               + 2 * 2 * 2 * 512 + 512             # block 5
               + 4096 + 4096 + 10)                 # fc1, fc2, predictions
    assert activations == by_hand == 194_058
    assert params == 28_187_826
    assert total == 4 * (3 * 28_187_826 + 2 * 128 * 194_058)
    assert [r[0] for r in rows][:3] == ["input", "block1_conv1", "block1_pool"]


def test_estimate_memory_flag_prints_and_trains_nothing(tmp_path, capsys):
    assert V.main(["--config", "A", "--estimate-memory", "--output-dir", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "total: 512.1 MiB" in out and "block5_pool" in out
    assert not (tmp_path / "o").exists()


def test_one_epoch_end_to_end(tmp_path, monkeypatch, imagenet_like_file):
    use_synthetic(monkeypatch, 128, 64)
    out = tmp_path / "out"
    V.main(["--config", "E", "--epochs", "1", "--batch-size", "32", "--weights", imagenet_like_file,
            "--verbose", "0", "--output-dir", str(out)])
    summary = json.loads((out / "cifar10_VGG19_summary.json").read_text())
    assert summary["parameters"] == 39_002_738 and summary["epochs_run"] == 1
    assert "ImageNet weights from" in summary["validation"]
