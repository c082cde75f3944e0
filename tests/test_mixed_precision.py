"""--mixed-precision: every model keeps a float32 output, trains, and predicts
what its float32 twin predicts, to a stated tolerance."""

import json

import numpy as np
import pytest

import keras

import allconv_cifar
import predict
import resnet18_fashion_mnist
import resnet_cifar
import simple_cnn
import training
import vgg19_cifar
from helpers import synthetic_cifar, use_synthetic

# bfloat16 keeps 8 significant bits: a probability may move by a percent or
# two through a deep network, but the predicted class stays the same.
PROBABILITY_TOLERANCE = 0.02
AGREEMENT = 0.95

BUILDERS = {
    "simple_cnn deep": lambda: simple_cnn.build_model("deep"),
    "ResNet-8 v1": lambda: resnet_cifar.build_model(1, 8),
    "ResNet-11 v2": lambda: resnet_cifar.build_model(2, 11),
    "All-CNN-C": lambda: allconv_cifar.build_model(),
}


def test_policy_follows_the_device():
    # No GPU in CI: bfloat16, which CPUs run; float16 is for GPUs.
    assert training.mixed_precision_policy() in ("mixed_bfloat16", "mixed_float16")
    if not training.accelerators():
        assert training.mixed_precision_policy() == "mixed_bfloat16"


@pytest.mark.parametrize("name", list(BUILDERS))
def test_mixed_precision_predicts_like_float32(name):
    (x, y), (x_test, _) = synthetic_cifar(256, 64)
    keras.utils.set_random_seed(0)
    reference = BUILDERS[name]()
    reference.compile("adam", "sparse_categorical_crossentropy")
    reference.fit(x, y, epochs=2, batch_size=32, verbose=0)  # trained weights, not random ones
    p32 = reference.predict(x_test, verbose=0)

    keras.mixed_precision.set_global_policy(training.mixed_precision_policy())
    mixed = BUILDERS[name]()
    mixed.set_weights(reference.get_weights())
    convs = [layer for layer in mixed.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.compute_dtype == "bfloat16" for layer in convs)
    assert all(w.dtype == "float32" for w in mixed.weights)  # the weights stay float32
    assert mixed.layers[-1].compute_dtype == "float32"       # and so does the output layer
    p16 = mixed.predict(x_test, verbose=0)
    assert p16.dtype == np.float32
    np.testing.assert_allclose(p16.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(p16 - p32).max() < PROBABILITY_TOLERANCE
    assert (p16.argmax(axis=1) == p32.argmax(axis=1)).mean() >= AGREEMENT


@pytest.mark.parametrize("build", [lambda: vgg19_cifar.build_model("A"), lambda: resnet18_fashion_mnist.build_model()],
                         ids=["VGG-11", "ResNet-18"])
def test_the_big_models_keep_a_float32_output(build):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build()
    assert model.layers[-1].compute_dtype == "float32"
    assert [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][0].compute_dtype == "bfloat16"


def test_a_script_trains_with_mixed_precision_and_its_checkpoint_predicts(tmp_path, monkeypatch):
    _, (x_test, y_test) = use_synthetic(monkeypatch, n_train=400, n_test=100)
    out = tmp_path / "out"
    assert simple_cnn.main(["--model", "deep", "--mixed-precision", "--epochs", "3", "--batch-size", "32",
                            "--learning-rate", "0.001", "--output-dir", str(out), "--verbose", "0"]) == 0
    summary = json.loads((out / "cifar10_deep_summary.json").read_text())
    assert summary["hyperparameters"]["mixed_precision"] is True
    assert summary["test_accuracy"] > 0.5  # learnt (chance is 0.1)
    keras.mixed_precision.set_global_policy("float32")  # a user's fresh process
    model, _ = predict.load_checkpoint(str(out / "cifar10_deep_final.h5"))
    probabilities = model.predict(x_test, verbose=0)
    assert probabilities.dtype == np.float32
    assert (probabilities.argmax(axis=1) == y_test.ravel()).mean() == pytest.approx(summary["test_accuracy"], abs=0.011)
