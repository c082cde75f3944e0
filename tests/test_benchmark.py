"""benchmarks/throughput.py: windows alternate with the peer, figures are
medians with their spread, ratios are taken window by window; the README's
Speed table is the committed run's."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import throughput  # noqa: E402


class FakeWorker:
    """Answers windows from a script of rates, logging the order asked."""
    calls = []
    rates = {}

    def __init__(self, backend, env=None):
        self.backend, self.env = backend, env

    def window(self, task, seconds):
        FakeWorker.calls.append(task["kind"])
        return FakeWorker.rates[task["kind"]].pop(0)

    def close(self):
        pass


def test_windows_alternate_and_ratios_pair_window_by_window(monkeypatch):
    monkeypatch.setattr(throughput, "Worker", FakeWorker)
    FakeWorker.calls = []
    # A slow phase in window 2 hits both sides; a ratio of medians would be 100/10 = 10,
    # the window-by-window ratios are 10, 10, 10.
    FakeWorker.rates = {"augment": [{"rate": r, "seconds": 1.0} for r in (100, 20, 300)],
                        "generator": [{"rate": r, "seconds": 1.0} for r in (10, 2, 30)]}
    entries = [("augmentation", "light", "tensorflow", {"kind": "augment", "knobs": "light"},
                {"kind": "generator", "knobs": "light"})]
    (row,) = throughput.measure(entries, windows=3, seconds=1.0, log=lambda *a: None)
    assert FakeWorker.calls == ["augment", "generator", "generator", "augment", "augment", "generator"]
    assert row["ours"]["median"] == 100 and (row["ours"]["min"], row["ours"]["max"]) == (20, 300)
    assert row["peer"]["windows"] == [10, 2, 30]
    assert row["ratio"]["median"] == pytest.approx(10) and row["ratio"]["max"] == pytest.approx(10)


def test_a_failing_measurement_is_a_note_not_a_crash(monkeypatch):
    monkeypatch.setattr(throughput, "Worker", FakeWorker)
    FakeWorker.calls = []
    FakeWorker.rates = {"train": [{"error": "RuntimeError: no XLA here"}], "pytorch": []}
    entries = [("resnet20", "jit_compile=True (XLA; torch.compile)", "torch",
                {"kind": "train", "model": "ResNet-20 v1", "variant": "jit_compile=True (XLA; torch.compile)"},
                {"kind": "pytorch"})]
    (row,) = throughput.measure(entries, windows=2, seconds=1.0, log=lambda *a: None)
    assert "ours" not in row and "no XLA here" in row["errors"][0]
    report = {"machine": "m", "date": "d", "versions": {}, "windows": 2, "seconds": 1.0, "generator": "g",
              "results": [row]}
    assert "no XLA here" in throughput.markdown(report)


def test_docs_speed_table_is_the_committed_run():
    with open(os.path.join(ROOT, "benchmarks", "results", "throughput.md")) as f:
        table = f.read().rstrip("\n")
    with open(os.path.join(ROOT, "docs", "speed.md")) as f:
        page = f.read()
    assert f"{throughput.BEGIN}\n{table}\n{throughput.END}" in page, \
        "run python3 benchmarks/throughput.py --docs (or copy benchmarks/results/throughput.md)"
    with open(os.path.join(ROOT, "benchmarks", "results", "h200", "throughput.md")) as f:
        gpu_table = f.read().rstrip("\n")
    assert gpu_table in page, "docs/speed.md's GPU table is not benchmarks/results/h200/throughput.md"


def test_a_setting_with_its_own_environment_gets_its_own_worker(monkeypatch):
    """TF_NUM_INTEROP_THREADS must be set before TensorFlow starts: that
    setting is measured in a worker of its own, and only under TensorFlow."""
    monkeypatch.setattr(throughput, "Worker", FakeWorker)
    started = []
    monkeypatch.setattr(FakeWorker, "__init__", lambda self, backend, env=None: started.append((backend, env)))
    FakeWorker.rates = {"train": [{"rate": 1.0, "seconds": 1.0}] * 2, "pytorch": [{"rate": 1.0, "seconds": 1.0}] * 2}
    entries = [e for e in throughput.plan(["tensorflow", "torch"], [], ["default (float32, augmentation on)",
                                                                        "TensorFlow inter-op threads 1"])
               if e[0] == "resnet20"]
    assert [(e[1], e[2]) for e in entries] == [("default (float32, augmentation on)", "tensorflow"),
                                               ("default (float32, augmentation on)", "torch"),
                                               ("TensorFlow inter-op threads 1", "tensorflow")]
    throughput.measure(entries[::2], windows=1, seconds=1.0, log=lambda *a: None)
    assert started == [("tensorflow", {}), (None, {}), ("tensorflow", {"TF_NUM_INTEROP_THREADS": "1"})]


SAME_PREDICTIONS = """
import keras, numpy as np, throughput
build = throughput.MODELS["ResNet-20 v1"][0]
keras.utils.set_random_seed(0)
usual = build(None)
first = throughput.built_channels_first(build, None)
first.set_weights(usual.get_weights())  # the same shapes in either layout
x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("uint8")
np.testing.assert_allclose(first.predict(x, verbose=0), usual.predict(x, verbose=0), atol=1e-5)
print("same predictions")
"""


def test_the_channels_first_variant_is_the_same_network_in_the_other_layout():
    """The layout variant measures the same ResNet-20: with the default
    model's weights it predicts the same (under torch, the backend its row
    runs on: TensorFlow convolves channels-first on the CPU only where oneDNN
    takes NCHW, not on a CPU with AVX2 only, one of CI's kinds), and it
    leaves the global image format and the patched builders as they were."""
    import subprocess
    import keras
    from cifarkit import preprocessing
    assert throughput.VARIANTS["channels-first layers (torch)"]["backends"] == ("torch",)
    build = throughput.MODELS["ResNet-20 v1"][0]
    usual = build(None)
    first = throughput.built_channels_first(build, None)
    convs = [layer for layer in first.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.data_format == "channels_first" for layer in convs)
    assert all(layer.axis == 1 for layer in first.layers if isinstance(layer, keras.layers.BatchNormalization))
    assert first.inputs[0].shape[1:] == (32, 32, 3)  # still takes height x width x channels pixels
    assert [w.shape for w in first.weights] == [w.shape for w in usual.weights]
    assert keras.config.image_data_format() == "channels_last"
    assert keras.layers.BatchNormalization is keras.src.layers.BatchNormalization
    assert preprocessing.preprocess.__module__ == "cifarkit.preprocessing"
    paths = [ROOT, os.path.join(ROOT, "benchmarks")] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=os.pathsep.join(paths))
    done = subprocess.run([sys.executable, "-c", SAME_PREDICTIONS], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "same predictions" in done.stdout, done.stderr[-2000:]


def test_profile_sums_each_operator_into_its_kind():
    import importlib
    import profile_torch
    before = os.environ.get("KERAS_BACKEND")
    importlib.reload(profile_torch)  # importing it must not switch the backend of what runs after
    assert os.environ.get("KERAS_BACKEND") == before
    ops = {"aten::mkldnn_convolution": 3000.0, "aten::convolution_backward": 5000.0,
           "aten::native_batch_norm_backward": 1000.0, "aten::copy_": 2000.0, "aten::_foreach_add_": 400.0,
           "aten::add": 600.0, "aten::mul": 1000.0, "aten::view": 200.0, "Optimizer.step#SGD.step": 800.0}
    ms = profile_torch.by_kind(ops, batches=2)  # microseconds -> milliseconds per batch
    assert ms["convolution, forward and backward"] == pytest.approx(4.0)
    assert ms["native batch norm"] == pytest.approx(0.5)
    assert ms["copies (layout changes, casts)"] == pytest.approx(1.0)
    assert ms["optimizer update (foreach kernels)"] == pytest.approx(0.2)
    assert ms["element-wise arithmetic and reductions"] == pytest.approx(0.8)
    assert ms[profile_torch.OTHER] == pytest.approx(0.5)
    assert ms["total"] == pytest.approx(sum(ops.values()) / 1000 / 2)


def test_bfloat16_settings_race_pytorch_under_autocast_and_augmentation_can_be_left_out():
    """Like for like: a mixed-bfloat16 setting's peer is PyTorch under
    autocast bfloat16, a float32 setting's is PyTorch in float32 (the bug:
    bfloat16 rows divided by PyTorch's float32 speed); --no-augmentation
    leaves the augmentation section out (for a GPU session's short lease)."""
    entries = throughput.plan(["jax"], [], ["default (float32, augmentation on)", "mixed precision (bfloat16)"],
                              augmentation=False, plain_keras=False)
    assert [(e[0], e[1], e[4]) for e in entries] == [
        ("resnet20", "default (float32, augmentation on)", {"kind": "pytorch", "autocast": False}),
        ("resnet20", "mixed precision (bfloat16)", {"kind": "pytorch", "autocast": True})]
    assert {e[0] for e in throughput.plan(["jax"], [], [], plain_keras=False)} == {"augmentation"}


def test_the_plain_keras_peer_is_our_network_and_runs_under_the_rows_backend(monkeypatch):
    """The plain-Keras row races the same ResNet-20 (same parameter count as
    build_model's without augmentation) written with keras.layers alone, in a
    worker of the row's own backend (the bug it would catch: the peer's
    worker started without a backend, so every row raced TensorFlow)."""
    import resnet_cifar
    run = throughput.plain_keras_runner()
    assert run.model.count_params() == resnet_cifar.build_model(1, 20, None, None).count_params()
    before = [w.copy() for w in run.model.get_weights()]
    assert run(2)[0] == throughput.BATCH  # the batch after the first is timed
    assert any((a != b).any() for a, b in zip(run.model.get_weights(), before))
    entries = [e for e in throughput.plan(["jax", "torch"], [], [], augmentation=False)]
    assert [(e[0], e[2], e[4]) for e in entries] == [("plain", "jax", {"kind": "keras"}),
                                                     ("plain", "torch", {"kind": "keras"})]
    monkeypatch.setattr(throughput, "Worker", FakeWorker)
    started = []
    monkeypatch.setattr(FakeWorker, "__init__", lambda self, backend, env=None: started.append(backend))
    FakeWorker.rates = {"train": [{"rate": 2.0, "seconds": 1.0}] * 2, "keras": [{"rate": 1.0, "seconds": 1.0}] * 2}
    rows = throughput.measure(entries, windows=1, seconds=1.0, log=lambda *a: None)
    assert started == ["jax", "torch"]  # ours and its peer share the backend's worker
    assert [r["ratio"]["median"] for r in rows] == [2.0, 2.0]


@pytest.mark.parametrize("autocast", [False, True])
def test_the_pytorch_peer_trains_in_either_precision(autocast):
    """The peer's step runs in both precisions and updates the weights (a
    peer whose step computed nothing would look fast)."""
    pytest.importorskip("torch")
    run = throughput.pytorch_runner(autocast)
    before = [p.detach().clone() for p in run.model.parameters()]
    assert run(2)[0] == 2 * throughput.BATCH
    changed = [not bool((p.detach() == b).all()) for p, b in zip(run.model.parameters(), before)]
    assert all(changed)


def test_a_window_is_calibrated_on_a_run_of_its_length_and_its_first_run_is_untimed():
    """A runner timing 0.01 s a batch after the first (fit_runner's clock):
    timing the 2-batch run alone reads one batch and would do for a window's
    estimate, but a run of about the window's length decides it (about 200
    batches for 2 s); that run happens once before any timed window (it
    makes the data a first window paid for)."""
    calls = []

    def run(batches):
        calls.append(batches)
        return 128 * (batches - 1), 0.01 * (batches - 1)

    batches = throughput.calibrate(run, 2.0)
    assert 190 <= batches <= 215, batches
    assert calls[-1] == batches and calls[0] == 2


def test_a_fit_window_times_its_batches_not_fits_set_up_and_teardown(monkeypatch):
    """fit_runner counts the batches after fit's first execution, timed from
    its end to the last one's: a fit whose set-up and teardown take 0.4 s
    each (TensorFlow's tf.data teardown waits up to 2.5 s) reads as fast as
    its batches (the bug it would catch: windows timed around model.fit,
    which read TensorFlow 1.5x too slow in 3-4 s windows). With
    steps_per_execution the batches are a whole number of executions."""
    import time

    import keras
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.compile("sgd", "categorical_crossentropy")
    fit = model.fit

    def slow_fit(*args, **kwargs):
        time.sleep(0.4)
        history = fit(*args, **kwargs)
        time.sleep(0.4)
        return history
    monkeypatch.setattr(model, "fit", slow_fit)
    run = throughput.fit_runner(model, 8, (4, 4, 1))
    images, seconds = run(5)
    assert images == 4 * 8 and seconds < 0.3, seconds
    model.compile("sgd", "categorical_crossentropy", steps_per_execution=2)
    model.fit = slow_fit
    images, seconds = throughput.fit_runner(model, 8, (4, 4, 1), steps_per_execution=2)(5)
    assert images == 2 * 2 * 8 and seconds < 0.3  # 3 executions of 2 batches, the last two timed


def test_real_runs_cross_check_the_settings_a_script_can_run_on_their_own_backend(monkeypatch):
    """Each measured default or bfloat16 ResNet-20 row gets a real run of the
    same setting under the same backend, set beside the row's median (the
    bug it would catch: a real run under another backend or setting, which
    would make the cross-check agree or disagree by accident); a failed real
    run is a note."""
    asked = []

    def fake_real_run(backend, variant, data_dir=None):
        asked.append((backend, variant))
        if backend == "jax":
            return {"error": "jax real run: no data"}
        return {"rate": 90.0, "command": f"KERAS_BACKEND={backend} python3 resnet_cifar.py"}
    monkeypatch.setattr(throughput, "real_run", fake_real_run)
    ours = {"median": 100.0, "min": 90.0, "max": 110.0, "windows": [100.0]}
    results = [{"section": "resnet20", "label": label, "backend": backend, "errors": [], "ours": ours}
               for label in ("default (float32, augmentation on)", "batch 256", "mixed precision (bfloat16)")
               for backend in ("torch", "jax")]
    rows = throughput.cross_check(results, log=lambda *a: None)
    assert asked == [("torch", "default (float32, augmentation on)"), ("jax", "default (float32, augmentation on)"),
                     ("torch", "mixed precision (bfloat16)"), ("jax", "mixed precision (bfloat16)")]
    assert [r.get("real") for r in rows] == [90.0, None, 90.0, None] and "no data" in rows[1]["errors"][0]
    report = {"machine": "m", "date": "d", "versions": {}, "windows": 1, "seconds": 1.0, "generator": "g",
              "results": rows}
    assert "| mixed precision (bfloat16) | torch | 100 | 90 | 0.90 |" in throughput.markdown(report)


def test_each_settings_values_reach_the_fit_it_times(monkeypatch):
    """A setting's steps_per_execution and batch-norm choice reach fit_runner
    (the bug it would catch: both were dropped, so the steps_per_execution
    row ran one step per execution and the "Keras's batch norm" row trained
    the fused one, the default row's code under another name)."""
    import keras

    def tiny(augment):
        return keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    monkeypatch.setitem(throughput.MODELS, "tiny", (tiny, None, (4, 4, 1)))
    seen = {}
    monkeypatch.setattr(throughput, "fit_runner", lambda model, batch, shape, *args: seen.setdefault("args", args))
    expected = {"steps_per_execution=8": (8, True), "Keras's batch norm (torch)": (1, False),
                "default (float32, augmentation on)": (1, True)}
    for variant, args in expected.items():
        seen.clear()
        throughput.training_runner("tiny", variant)
        assert seen["args"] == args, variant
