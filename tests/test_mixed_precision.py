"""--mixed-precision: every model keeps a float32 output, trains, and predicts
what its float32 twin predicts, to a stated tolerance. Both mixed policies run
on the CPU: mixed_float16 (what --mixed-precision picks on a GPU, with loss
scaling) and mixed_bfloat16 (CPUs and TPUs)."""

import functools
import json

import numpy as np
import pytest

import keras

import allconv_cifar
import predict
import resnet18_fashion_mnist
import resnet_cifar
import simple_cnn
from cifarkit import cli
from cifarkit import devices
import vgg19_cifar
from helpers import synthetic_cifar, use_synthetic

NATIVE_BFLOAT16 = devices.native_bfloat16  # the real one (conftest pins the tests to float32)

# bfloat16 keeps 8 significant bits (float16 11): a probability may move by a
# percent or two through a deep network, but the predicted class stays the same.
PROBABILITY_TOLERANCE = 0.02
AGREEMENT = 0.95

COMPUTE_DTYPE = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}

BUILDERS = {
    "simple_cnn deep": lambda: simple_cnn.build_model("deep"),
    "ResNet-8 v1": lambda: resnet_cifar.build_model(1, 8),
    "ResNet-11 v2": lambda: resnet_cifar.build_model(2, 11),
    "All-CNN-C": lambda: allconv_cifar.build_model(),
}


@pytest.fixture(params=list(COMPUTE_DTYPE))
def policy(request):
    """Each mixed policy's name, set by the test when it needs it; the global
    policy is float32 again afterwards."""
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


def check_dtypes(model, policy):
    """Convolutions compute in the policy's dtype; the weights, the input's
    normalisation and the output layer stay float32."""
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.compute_dtype == COMPUTE_DTYPE[policy] for layer in convs)
    norms = [layer for layer in model.layers
             if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization))]
    assert norms and all(layer.compute_dtype == "float32" for layer in norms)
    assert model.layers[-1].compute_dtype == "float32"
    assert all(w.dtype == "float32" for w in model.weights)


@pytest.mark.parametrize("visible, expected", [
    ([], "mixed_bfloat16"), (["gpu:0"], "mixed_float16"), (["tpu:0"], "mixed_bfloat16")])
def test_policy_follows_the_device(monkeypatch, visible, expected):
    """float16 on a GPU (compile adds loss scaling), bfloat16 on CPUs and TPUs,
    which have no float16 units."""
    monkeypatch.setattr(devices, "accelerators", lambda: visible)
    monkeypatch.setattr(devices, "_torch_cuda", lambda: bool(visible) and visible[0].startswith("gpu"))
    assert devices.mixed_precision_policy() == expected


@functools.cache
def trained_float32(name):
    """(weights, test images, probabilities) of the float32 model after two epochs."""
    (x, y), (x_test, _) = synthetic_cifar(256, 64)
    keras.utils.set_random_seed(0)
    reference = BUILDERS[name]()
    reference.compile("adam", "sparse_categorical_crossentropy")
    reference.fit(x, y, epochs=2, batch_size=32, verbose=0)  # trained weights, not random ones
    return reference.get_weights(), x_test, reference.predict(x_test, verbose=0)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_mixed_precision_predicts_like_float32(name, policy):
    weights, x_test, p32 = trained_float32(name)
    keras.mixed_precision.set_global_policy(policy)
    mixed = BUILDERS[name]()
    mixed.set_weights(weights)
    check_dtypes(mixed, policy)
    p16 = mixed.predict(x_test, verbose=0)
    assert p16.dtype == np.float32
    np.testing.assert_allclose(p16.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(p16 - p32).max() < PROBABILITY_TOLERANCE
    assert (p16.argmax(axis=1) == p32.argmax(axis=1)).mean() >= AGREEMENT


def test_one_step_fit_is_finite_and_float16_scales_the_loss(policy):
    """compile wraps the optimizer in a LossScaleOptimizer under float16 (its
    gradients would underflow without), not under bfloat16 (float32's range)."""
    keras.mixed_precision.set_global_policy(policy)
    (x, y), _ = synthetic_cifar(32, 1)
    model = resnet_cifar.build_model(1, 8)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy")
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    else:
        assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    loss = model.fit(x, y, batch_size=32, epochs=1, verbose=0).history["loss"]
    assert len(loss) == 1 and np.isfinite(loss[0])
    check_dtypes(model, policy)


@pytest.mark.parametrize("build", [lambda: vgg19_cifar.build_model("A"), lambda: resnet18_fashion_mnist.build_model()],
                         ids=["VGG-11", "ResNet-18"])
def test_the_big_models_keep_a_float32_output(build, policy):
    keras.mixed_precision.set_global_policy(policy)
    check_dtypes(build(), policy)


def test_a_script_trains_with_mixed_precision_and_its_checkpoint_predicts(tmp_path, monkeypatch, policy):
    """--mixed-precision sets the policy mixed_precision_policy() chooses (here
    each in turn, as on a GPU and on a CPU), and the run learns."""
    monkeypatch.setattr(devices, "mixed_precision_policy", lambda: policy)
    _, (x_test, y_test) = use_synthetic(monkeypatch, n_train=400, n_test=100)
    out = tmp_path / "out"
    assert simple_cnn.main(["--model", "deep", "--mixed-precision", "--epochs", "3", "--batch-size", "32",
                            "--learning-rate", "0.001", "--output-dir", str(out), "--verbose", "0"]) == 0
    assert keras.mixed_precision.global_policy().name == policy
    summary = json.loads((out / "cifar10_deep_summary.json").read_text())
    assert summary["hyperparameters"]["mixed_precision"] is True
    assert summary["test_accuracy"] > 0.5  # learnt (chance is 0.1)
    keras.mixed_precision.set_global_policy("float32")  # a user's fresh process
    model, _ = predict.load_checkpoint(str(out / "cifar10_deep_final.h5"))
    probabilities = model.predict(x_test, verbose=0)
    assert probabilities.dtype == np.float32
    assert (probabilities.argmax(axis=1) == y_test.ravel()).mean() == pytest.approx(summary["test_accuracy"], abs=0.011)


@pytest.mark.parametrize("flags, visible, expected", [
    (["avx512_bf16"], [], True), (["amx_bf16", "avx512_bf16"], [], True), ([], [], False),
    (["avx512_bf16"], ["gpu:0"], False), (["avx512_bf16"], ["tpu:0"], False)])
def test_bfloat16_is_the_default_on_a_cpu_that_runs_it_natively(monkeypatch, flags, visible, expected):
    """bfloat16 by default only where the CPU has bfloat16 instructions and
    trains alone; GPUs and CPUs without them default to float32."""
    monkeypatch.setattr(devices.hardware, "cpu_flags", lambda: flags)
    monkeypatch.setattr(devices, "accelerators", lambda: visible)
    monkeypatch.setattr(devices, "_torch_cuda", lambda: bool(visible) and visible[0].startswith("gpu"))
    assert NATIVE_BFLOAT16() is expected


@pytest.mark.parametrize("native, flag, policy", [
    (True, [], "mixed_bfloat16"), (True, ["--no-mixed-precision"], "float32"),
    (False, [], "float32"), (False, ["--mixed-precision"], "mixed_bfloat16")])
def test_a_script_says_and_records_the_precision_it_chose(tmp_path, monkeypatch, capsys, native, flag, policy):
    """Without a flag a run trains in bfloat16 on a native CPU and says so at
    start-up; the summary records what was used, so --resume and the results
    table repeat it; either flag overrides the default."""
    monkeypatch.setattr(devices, "native_bfloat16", lambda: native)
    monkeypatch.setattr(devices.hardware, "cpu_flags", lambda: ["avx512_bf16"] if native else [])
    monkeypatch.setattr(devices, "_gpu", lambda: False)  # bfloat16, not float16, on a GPU host too
    monkeypatch.setattr(devices, "accelerators", lambda: [])
    use_synthetic(monkeypatch, n_train=64, n_test=32)
    out = tmp_path / "out"
    assert simple_cnn.main(["--model", "simple", "--epochs", "1", "--batch-size", "32", "--output-dir", str(out),
                            "--verbose", "0"] + flag) == 0
    captured = capsys.readouterr()
    said = "Mixed precision (bfloat16) by default: this CPU runs it natively (avx512_bf16)" in captured.out
    assert said is (native and not flag)
    warned = "warning: --mixed-precision on a CPU without bfloat16 instructions" in captured.err
    assert warned is (not native and flag == ["--mixed-precision"])  # asked for where it is ~8x slower
    assert keras.mixed_precision.global_policy().name == policy
    summary = json.loads((out / "cifar10_simple_summary.json").read_text())
    assert summary["hyperparameters"]["mixed_precision"] is (policy != "float32")
    keras.mixed_precision.set_global_policy("float32")


def test_resuming_a_float32_run_where_bfloat16_is_the_default_names_the_flag(tmp_path, monkeypatch):
    """A run made in float32 (on another CPU, or before bfloat16 became the
    default) is not resumed in bfloat16 behind the user's back: the error
    names the flag that resumes it as it was."""
    use_synthetic(monkeypatch, n_train=64, n_test=32)
    args = ["--model", "simple", "--batch-size", "32", "--output-dir", str(tmp_path / "out"), "--verbose", "0"]
    assert simple_cnn.main(args + ["--epochs", "1", "--no-mixed-precision"]) == 0
    monkeypatch.setattr(devices, "native_bfloat16", lambda: True)
    with pytest.raises(cli.UsageError, match=r"made with --no-mixed-precision \(now --mixed-precision\)"):
        simple_cnn.main(args + ["--epochs", "2", "--resume"])
    keras.mixed_precision.set_global_policy("float32")
    assert simple_cnn.main(args + ["--epochs", "2", "--resume", "--no-mixed-precision"]) == 0


def test_several_workers_train_in_float32_unless_the_flag_is_named(monkeypatch):
    """Workers of one job (TF_CONFIG) may have different CPUs: the default
    does not let each pick its own precision."""
    monkeypatch.setattr(devices, "native_bfloat16", lambda: True)
    args = simple_cnn.parse_args(["--model", "simple"])
    monkeypatch.setenv("TF_CONFIG", "{}")  # set, so setup asks multiworker for the strategy
    monkeypatch.setattr("cifarkit.multiworker.strategy_from_environment", lambda: FakeStrategy())
    devices.setup(args)
    assert args.mixed_precision is False and keras.mixed_precision.global_policy().name == "float32"


class FakeStrategy:
    num_replicas_in_sync = 1

    def scope(self):
        import contextlib
        return contextlib.nullcontext()
