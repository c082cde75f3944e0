"""cifarkit.batchnorm: under torch, a batch norm's fused training step
(batchnorm.fused_call, torch's fused kernel) computes what Keras's BatchNormalization computes:
output, gradients with respect to the input, gamma and beta, and the moving
statistics, to 1e-5 in float32 and to bfloat16's precision under mixed
precision; a short fit's weights agree; checkpoints hold Keras's own layer.
Under another backend the module runs itself again under torch."""

import importlib.util
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import keras

from cifarkit import batchnorm
from cifarkit import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH = keras.backend.backend() == "torch"
under_torch = pytest.mark.skipif(not TORCH, reason="runs under KERAS_BACKEND=torch (test_under_torch)")


@pytest.mark.skipif(TORCH or importlib.util.find_spec("torch") is None, reason="already under torch / no torch")
def test_under_torch():
    """This whole module under KERAS_BACKEND=torch."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", __file__],
                          cwd=ROOT, env=dict(os.environ, KERAS_BACKEND="torch"), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "runs under KERAS_BACKEND=torch" not in done.stdout, done.stdout[-1000:]


def test_elsewhere_fuse_changes_nothing():
    """Under TensorFlow or JAX the model keeps Keras's own layers (fusing
    is for torch alone)."""
    if TORCH:
        pytest.skip("under torch fuse turns the layers")
    model = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
    assert batchnorm.fuse(model) == [] and type(model.layers[0]) is keras.layers.BatchNormalization


def pair(shape, axis, momentum=0.9, seed=0):
    """A layer given the fused training step as `batchnorm.fuse` gives it, and
    Keras's own, with the same random gamma, beta and moving statistics,
    built for `shape`."""
    rng = np.random.default_rng(seed)
    ours, theirs = (keras.layers.BatchNormalization(axis=axis, momentum=momentum) for _ in range(2))
    ours.call = types.MethodType(batchnorm.fused_call, ours)
    for layer in (ours, theirs):
        layer.build(shape)
    channels = shape[axis]
    weights = [rng.normal(1, 0.3, channels), rng.normal(0, 0.3, channels), rng.normal(0, 1, channels),
               rng.uniform(0.5, 2, channels)]
    for layer in (ours, theirs):
        layer.set_weights([w.astype("float32") for w in weights])
    return ours, theirs


def forward_backward(layer, x, upstream):
    import torch
    x = torch.as_tensor(x).detach().clone().requires_grad_(True)
    y = layer(x, training=True)
    (y.float() * torch.tensor(upstream)).sum().backward()
    grads = [x.grad, layer.gamma.value.grad, layer.beta.value.grad]
    out = [y.detach().float().numpy()] + [g.detach().float().numpy().copy() for g in grads]
    for v in (layer.gamma.value, layer.beta.value):
        v.grad = None
    return out + [keras.ops.convert_to_numpy(layer.moving_mean), keras.ops.convert_to_numpy(layer.moving_variance)]


@pytest.fixture
def fused_calls(monkeypatch):
    """How many times torch's fused kernel ran (a fused layer that quietly
    fell back to Keras's code would pass every comparison)."""
    import torch.nn.functional as F
    calls, original = [], F.batch_norm
    monkeypatch.setattr(F, "batch_norm", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


@under_torch
@pytest.mark.parametrize("shape, axis", [((8, 6, 5, 4), -1), ((8, 4, 6, 5), 1), ((16, 7), -1)],
                         ids=["channels-last", "channels-first", "dense"])
def test_fused_training_step_equals_keras(shape, axis, fused_calls):
    """Output, gradients (input, gamma, beta) and the moving statistics after
    two steps equal Keras's BatchNormalization to 1e-5 (the bugs it would
    catch: detached batch statistics, keras#18793's wrong gradients; torch's
    unbiased running variance or its momentum convention in the moving
    averages)."""
    rng = np.random.default_rng(1)
    ours, theirs = pair(shape, axis)
    for step in range(2):
        x = rng.normal(2, 3, shape).astype("float32")
        upstream = rng.normal(0, 1, shape).astype("float32")
        for a, b, what in zip(forward_backward(ours, x, upstream), forward_backward(theirs, x, upstream),
                              ("output", "d input", "d gamma", "d beta", "moving mean", "moving variance")):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f"step {step}: {what}")
    assert len(fused_calls) == 2


@under_torch
def test_fused_under_mixed_precision_equals_keras_to_bfloat16s_precision(fused_calls):
    """bfloat16 inputs: computed in float32 as Keras's layer does, the output
    bfloat16, equal to Keras's to bfloat16's precision (8 bits of mantissa);
    the moving statistics, computed in float32 on both sides, to 1e-5 (the
    bug it would catch: statistics summed in bfloat16)."""
    import torch
    shape = (8, 6, 5, 4)
    rng = np.random.default_rng(2)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        ours, theirs = pair(shape, -1)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    x = torch.tensor(rng.normal(2, 3, shape).astype("float32")).bfloat16()
    upstream = rng.normal(0, 1, shape).astype("float32")
    a, b = forward_backward(ours, x, upstream), forward_backward(theirs, x, upstream)
    assert ours(x, training=True).dtype == torch.bfloat16
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=2 ** -7, atol=2 ** -7 * np.abs(v).max())
    for u, v in zip(a[4:], b[4:]):  # the moving statistics: float32 sums of the same bfloat16 values
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-5)
    assert len(fused_calls) == 2  # forward_backward(ours) and the dtype check


@under_torch
def test_inference_and_one_value_per_channel_are_keras_own_code(fused_calls):
    """Inference uses the moving statistics (Keras's code: no kernel call),
    and a batch with one value per channel, where torch's kernel refuses,
    gives what Keras's layer gives."""
    import torch
    ours, theirs = pair((1, 3), -1)
    x = torch.tensor([[1.0, 2.0, 3.0]])
    for training in (False, True):
        np.testing.assert_allclose(ours(x, training=training).detach().numpy(),
                                   theirs(x, training=training).detach().numpy(), rtol=1e-6)
    assert fused_calls == []


def small_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(5)(x)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inputs, keras.layers.Activation("softmax")(x))
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "categorical_crossentropy")
    return model


@under_torch
def test_a_short_fit_on_the_fused_kernel_ends_with_kerass_weights_and_saves_kerass_layer(fused_calls, tmp_path):
    """Three SGD steps with FuseBatchNorm end with the weights and moving
    statistics of the same fit on Keras's layer (1e-5), and the fused step
    is gone after fit. What is saved while the layers train fused is
    Keras's own layer: a checkpoint opens with plain load_model, and the
    backup's weights (save_weights, what --resume reads) load into a model
    just built (the bug it would catch: a swapped layer class, whose
    weights file names a class the fresh model does not have, so every
    --resume under torch failed)."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (24, 8, 8, 3)).astype("float32") / 255
    y = keras.utils.to_categorical(rng.integers(0, 5, 24), 5)
    checkpoint, weights = tmp_path / "mid_fit.h5", tmp_path / "mid_fit.weights.h5"

    class SaveMidFit(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                assert "call" in vars(self.model.layers[2])  # training fused now
                checkpoints.save_h5(self.model, str(checkpoint), [str(i) for i in range(5)])
                self.model.save_weights(str(weights))
                self.saved = self.model.get_weights()

    fused, plain, saver = small_model(), small_model(), SaveMidFit()
    fused.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[batchnorm.FuseBatchNorm(), saver])
    plain.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert len(fused_calls) == 2 * 3  # two batch norms, three steps
    for a, b in zip(fused.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert not any("call" in vars(layer) for layer in fused.layers)
    reopened = keras.models.load_model(checkpoint, compile=False)
    assert [type(layer) for layer in reopened.layers if "batch" in layer.name] == [keras.layers.BatchNormalization] * 2
    fresh = small_model()
    fresh.load_weights(str(weights))
    for a, b in zip(fresh.get_weights(), saver.saved):
        np.testing.assert_array_equal(a, b)


@under_torch
def test_fuse_reaches_nested_models_and_unfuse_undoes_it():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
    outer = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(), inner])
    assert len(batchnorm.fuse(outer)) == 2 and "call" in vars(inner.layers[0])
    assert len(batchnorm.unfuse(outer)) == 2 and not any("call" in vars(b) for b in batchnorm.batch_norms(outer))


@under_torch
def test_a_resnet_run_under_torch_resumes_and_its_checkpoint_is_kerass(tmp_path, monkeypatch, fused_calls):
    """The whole script under torch: an epoch of ResNet-8 on the fused
    kernel, then --resume for a second (the backup's weights read back into
    a model just built), and the final checkpoint opens with plain
    load_model holding Keras's BatchNormalization."""
    import json
    import resnet_cifar
    from helpers import use_synthetic
    use_synthetic(monkeypatch, 64, 32)
    argv = ["--depth", "8", "--recipe", "fast", "--batch-size", "16", "--verbose", "0", "--output-dir",
            str(tmp_path / "out")]
    resnet_cifar.main(argv + ["--epochs", "1"])
    resnet_cifar.main(argv + ["--epochs", "2", "--resume"])
    (path,) = (tmp_path / "out").glob("*_summary.json")
    summary = json.loads(path.read_text())
    assert summary["epochs_run"] == 2 and summary["epochs_this_session"] == 1
    assert fused_calls  # trained fused
    model = keras.models.load_model(summary["files"]["final"], compile=False)
    assert {type(layer) for layer in model.layers if "batch_norm" in layer.name} == {keras.layers.BatchNormalization}
